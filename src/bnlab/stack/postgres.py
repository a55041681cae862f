"""The stack's PostgreSQL: one cluster in the stack folder, its databases and who may connect.

The password never appears in a URI or on a command line: it is in the folder's
`pgpass` file (mode 0600), which libpq reads when `PGPASSFILE` names it. PostgreSQL
listens on loopback; `--db-host` adds one address for cluster nodes, and `pg_hba.conf`
then admits only `--db-allow` there, with scram-sha-256, to the optuna database.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from pathlib import Path

from bnlab.stack.state import (
    DATABASES,
    LOOPBACK,
    NODES_PGPASS,
    START_SECONDS,
    USER,
    Stack,
    StackError,
    write_secret,
)

# PostgreSQL refuses to run as root; as root the stack runs it as this user.
SYSTEM_USER = "postgres"
# Settings the stack owns, rewritten at each `up`; postgresql.conf includes the file last.
SETTINGS_FILE = "stack.conf"
INCLUDE_LINE = f"include_if_exists = '{SETTINGS_FILE}'"
HBA_BEGIN = "# bnlab: cluster nodes (tracking_stack.py up --db-host/--db-allow)"
HBA_END = "# bnlab: end of cluster nodes"


def _pg_binary(name: str) -> str:
    """`initdb`/`pg_ctl` from PATH, or from Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    if candidates:
        return str(candidates[-1])
    raise StackError(
        f"{name} not found: install PostgreSQL (Debian: apt-get install postgresql) "
        "or put its bin folder on PATH"
    )


def _as_database_user(command: list[str]) -> list[str]:
    """Runs PostgreSQL's programs as `postgres` when we are root (it refuses root)."""
    if os.geteuid() != 0:
        return command
    try:
        import pwd

        pwd.getpwnam(SYSTEM_USER)
    except KeyError as error:
        raise StackError(
            f"PostgreSQL refuses to run as root and there is no '{SYSTEM_USER}' user: "
            "create one or run as a normal user"
        ) from error
    return ["runuser", "-u", SYSTEM_USER, "--", *command]


def _give_to_database_user(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, SYSTEM_USER, SYSTEM_USER)


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise StackError(f"{what} failed: {detail[-1] if detail else done.returncode}")


def check_reachable(folder: Path) -> None:
    """As root, the database user must be able to walk down to the folder."""
    if os.geteuid() != 0:
        return
    for parent in [folder, *folder.parents]:
        if parent.stat().st_mode & 0o001 == 0:
            raise StackError(
                f"--dir {folder}: '{parent}' is private to root, so PostgreSQL (run as "
                f"'{SYSTEM_USER}') cannot reach it; pick a folder outside it"
            )


def init(stack: Stack, password: str) -> None:
    """Creates the database cluster, its superuser `bnlab` and the folder's pgpass file."""
    write_secret(stack.pgpass, f"{LOOPBACK}:{stack.pg_port}:*:{USER}:{password}\n")
    stack.pgdata.mkdir(mode=0o700)
    _give_to_database_user(stack.pgdata)
    password_file = stack.root / "initdb.pw"
    write_secret(password_file, password + "\n")
    _give_to_database_user(password_file)
    try:
        _run(
            _as_database_user(
                [
                    _pg_binary("initdb"),
                    "-D",
                    str(stack.pgdata),
                    "-U",
                    USER,
                    "--pwfile",
                    str(password_file),
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                ]
            ),
            "initdb",
        )
    finally:
        password_file.unlink()


def password(stack: Stack) -> str:
    """The database password, from the folder's pgpass file."""
    first = stack.pgpass.read_text().splitlines()[0]
    return first.split(":", 4)[4]


def configure(stack: Stack) -> bool:
    """Writes the settings and access rules the stack owns; whether the cluster must restart.

    Loopback always, plus `db_host` when given; no Unix socket (its path would depend on
    the folder's length); enough connections for a sweep's jobs, the server's workers
    and Optuna. Returns True when the listening addresses changed.
    """
    conf = stack.pgdata / "postgresql.conf"
    text = conf.read_text()
    if INCLUDE_LINE not in text:
        conf.write_text(text.rstrip("\n") + f"\n{INCLUDE_LINE}\n")
    addresses = ",".join(dict.fromkeys([LOOPBACK, *([stack.db_host] if stack.db_host else [])]))
    settings = (
        "# Written by pipelines/tracking_stack.py at each `up`; edits here are replaced.\n"
        f"listen_addresses = '{addresses}'\nport = {stack.pg_port}\n"
        "unix_socket_directories = ''\nmax_connections = 200\n"
        "password_encryption = 'scram-sha-256'\n"
    )
    settings_file = stack.pgdata / SETTINGS_FILE
    previous = settings_file.read_text() if settings_file.exists() else None
    if previous != settings:
        settings_file.write_text(settings)
        _give_to_database_user(settings_file)
    _write_access_rules(stack)
    _write_nodes_pgpass(stack)
    was = _listen_line(previous) if previous else None
    return was is not None and was != _listen_line(settings)


def _listen_line(settings: str) -> str:
    return next(line for line in settings.splitlines() if line.startswith("listen_addresses"))


def _write_access_rules(stack: Stack) -> None:
    """Replaces the stack's block of pg_hba.conf: `db_allow` may reach the optuna database only."""
    hba = stack.pgdata / "pg_hba.conf"
    lines = hba.read_text().splitlines()
    if HBA_BEGIN in lines:
        begin = lines.index(HBA_BEGIN)
        end = lines.index(HBA_END, begin) if HBA_END in lines[begin:] else len(lines) - 1
        del lines[begin : end + 1]
    if stack.db_host and stack.db_allow:
        lines += [HBA_BEGIN, f"host optuna {USER} {stack.db_allow} scram-sha-256", HBA_END]
    hba.write_text("\n".join(lines) + "\n")


def _write_nodes_pgpass(stack: Stack) -> None:
    """The file cluster nodes copy (as their PGPASSFILE): the optuna database, nothing else."""
    nodes = stack.root / NODES_PGPASS
    if not stack.db_host:
        nodes.unlink(missing_ok=True)
        return
    line = f"{stack.db_host}:{stack.pg_port}:optuna:{USER}:{password(stack)}\n"
    write_secret(nodes, line)
    own = stack.pgpass.read_text()
    if line not in own:
        write_secret(stack.pgpass, own + line)


def check_network(db_host: str | None, db_allow: str | None) -> None:
    """`--db-host` and `--db-allow` come together, and the CIDR parses."""
    if bool(db_host) != bool(db_allow):
        raise StackError("--db-host and --db-allow go together: where to listen, and whom to admit")
    if db_allow:
        try:
            ipaddress.ip_network(db_allow, strict=False)
        except ValueError as error:
            raise StackError(f"--db-allow {db_allow}: not a CIDR ({error})") from error
    if db_host:
        try:
            ipaddress.ip_address(db_host)
        except ValueError as error:
            raise StackError(f"--db-host {db_host}: not an IP address of this machine") from error


def running(stack: Stack) -> bool:
    done = subprocess.run(
        _as_database_user([_pg_binary("pg_ctl"), "status", "-D", str(stack.pgdata)]),
        capture_output=True,
    )
    return done.returncode == 0


def start(stack: Stack) -> None:
    log_file = stack.root / "postgres.log"
    if not log_file.exists():
        log_file.touch()
        _give_to_database_user(log_file)
    _run(
        _as_database_user(
            [
                _pg_binary("pg_ctl"),
                "start",
                "-D",
                str(stack.pgdata),
                "-l",
                str(log_file),
                "-w",
                "-t",
                str(int(START_SECONDS)),
            ]
        ),
        f"starting PostgreSQL on port {stack.pg_port} (see {log_file})",
    )


def stop(stack: Stack) -> None:
    if running(stack):
        _run(
            _as_database_user(
                [_pg_binary("pg_ctl"), "stop", "-D", str(stack.pgdata), "-m", "fast", "-w"]
            ),
            "stopping PostgreSQL",
        )


def reload(stack: Stack) -> None:
    """Rereads pg_hba.conf without dropping a connection."""
    _run(
        _as_database_user([_pg_binary("pg_ctl"), "reload", "-D", str(stack.pgdata)]),
        "reloading PostgreSQL's access rules",
    )


def create_databases(stack: Stack) -> None:
    import psycopg

    with psycopg.connect(
        host=LOOPBACK,
        port=stack.pg_port,
        user=USER,
        dbname="postgres",
        passfile=str(stack.pgpass),
        autocommit=True,
    ) as connection:
        for database in DATABASES:
            exists = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
            ).fetchone()
            if not exists:
                connection.execute(f'CREATE DATABASE "{database}"')
