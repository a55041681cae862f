"""A shared tracking stack on one machine: PostgreSQL and an MLflow server.

PostgreSQL holds MLflow's backend store (database `mlflow`) and Optuna's storage
(database `optuna`); `mlflow server` serves the tracking API and proxies
artifacts (`--artifacts-destination`), on 127.0.0.1 by default. Everything lives
in one folder: the database cluster, the artifacts, the logs and `stack.json`,
which records the ports and the processes this stack started.

The database password never appears in a URI or on a command line: it is in the
folder's `pgpass` file (mode 0600), which PostgreSQL's client library reads
when `PGPASSFILE` names it. `up` prints the lines to export.

Starting is idempotent (`up` twice reuses what runs), `down` stops only the
processes this folder's stack started, and the data survives `down`/`up`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

USER = "bnlab"
DATABASES = ("mlflow", "optuna")
STATE_FILE = "stack.json"
# PostgreSQL refuses to run as root; as root the stack runs it as this user.
SYSTEM_USER = "postgres"
START_SECONDS = 120.0
PARTS = ("postgres", "server")


class StackError(RuntimeError):
    """The stack cannot be started or stopped; the message says why, in one line."""


@dataclass
class Stack:
    """Where one stack lives and listens."""

    folder: str
    host: str
    port: int
    pg_port: int
    workers: int
    server_pid: int | None = None

    @property
    def root(self) -> Path:
        return Path(self.folder)

    @property
    def pgdata(self) -> Path:
        return self.root / "postgres"

    @property
    def pgpass(self) -> Path:
        return self.root / "pgpass"

    @property
    def tracking_uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def database_uri(self, database: str) -> str:
        """A SQLAlchemy URI without the password (libpq reads it from PGPASSFILE)."""
        return f"postgresql://{USER}@127.0.0.1:{self.pg_port}/{database}"

    def environment(self) -> dict[str, str]:
        return {"MLFLOW_TRACKING_URI": self.tracking_uri, "PGPASSFILE": str(self.pgpass)}

    def save(self) -> None:
        path = self.root / STATE_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> Stack | None:
        path = folder / STATE_FILE
        if not path.is_file():
            return None
        return cls(**json.loads(path.read_text()))


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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


def _check_reachable(folder: Path) -> None:
    """As root, the database user must be able to walk down to the folder."""
    if os.geteuid() != 0:
        return
    for parent in [folder, *folder.parents]:
        if parent.stat().st_mode & 0o001 == 0:
            raise StackError(
                f"--dir {folder}: '{parent}' is private to root, so PostgreSQL (run as "
                f"'{SYSTEM_USER}') cannot reach it; pick a folder outside it"
            )


def _init_postgres(stack: Stack, password: str) -> None:
    stack.pgdata.mkdir(mode=0o700)
    _give_to_database_user(stack.pgdata)
    password_file = stack.root / "initdb.pw"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
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
    # Loopback only, no Unix socket (its path would depend on the folder's length),
    # and enough connections for a sweep's jobs, the server's workers and Optuna.
    with open(stack.pgdata / "postgresql.conf", "a") as conf:
        conf.write(
            f"\nlisten_addresses = '127.0.0.1'\nport = {stack.pg_port}\n"
            "unix_socket_directories = ''\nmax_connections = 200\n"
        )


def postgres_running(stack: Stack) -> bool:
    done = subprocess.run(
        _as_database_user([_pg_binary("pg_ctl"), "status", "-D", str(stack.pgdata)]),
        capture_output=True,
    )
    return done.returncode == 0


def _start_postgres(stack: Stack) -> None:
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


def _create_databases(stack: Stack) -> None:
    import psycopg

    with psycopg.connect(
        host="127.0.0.1",
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


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    return not cmdline.exists() or b"mlflow" in cmdline.read_bytes()


def server_healthy(stack: Stack, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{stack.tracking_uri}/health", timeout=timeout) as answer:
            return answer.status == 200
    except OSError:
        return False


def _start_server(stack: Stack) -> None:
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [
        str(mlflow) if mlflow.exists() else "mlflow",
        "server",
        "--backend-store-uri",
        stack.database_uri("mlflow"),
        "--artifacts-destination",
        str(stack.root / "artifacts"),
        "--host",
        stack.host,
        "--port",
        str(stack.port),
        "--workers",
        str(stack.workers),
    ]
    environment = {
        **os.environ,
        "PGPASSFILE": str(stack.pgpass),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    environment.pop("MLFLOW_TRACKING_URI", None)
    log_file = stack.root / "mlflow.log"
    with open(log_file, "a") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment,
            start_new_session=True,
        )
    stack.server_pid = process.pid
    stack.save()
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_file.read_text().strip().splitlines()[-1:]
            raise StackError(f"mlflow server exited at start: {tail[0] if tail else '?'}")
        if server_healthy(stack):
            return
        time.sleep(0.5)
    raise StackError(f"mlflow server did not answer within {START_SECONDS:g} s (see {log_file})")


def up(
    folder: Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    pg_port: int | None = None,
    workers: int = 4,
    only: str | None = None,
) -> Stack:
    """Starts the stack in `folder`, or reuses the parts of it that already run.

    Ports are chosen on the first `up` (free ones unless given) and kept in
    `stack.json`, so URIs stay the same across `down`/`up`.
    """
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    stack = Stack.load(folder)
    if stack is None:
        _check_reachable(folder)
        folder.chmod(0o711)
        stack = Stack(str(folder), host, port or free_port(), pg_port or free_port(), workers)
        password = secrets.token_urlsafe(24)
        stack.pgpass.write_text(f"127.0.0.1:{stack.pg_port}:*:{USER}:{password}\n")
        stack.pgpass.chmod(0o600)
        _init_postgres(stack, password)
        (stack.root / "artifacts").mkdir()
        stack.save()
    if only in (None, "postgres") and not postgres_running(stack):
        _start_postgres(stack)
    if only in (None, "postgres"):
        _create_databases(stack)
    if only in (None, "server") and not (_alive(stack.server_pid) and server_healthy(stack)):
        if _alive(stack.server_pid):
            _stop_server(stack)
        _start_server(stack)
    return stack


def _stop_server(stack: Stack) -> None:
    pid = stack.server_pid
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.2)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    stack.server_pid = None
    stack.save()


def _reap(pid: int) -> None:
    """Collects a server this process started itself (a test's), so it does not linger."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def down(folder: Path, only: str | None = None) -> Stack:
    """Stops the server and PostgreSQL that this folder's stack started; keeps the data."""
    stack = Stack.load(folder.resolve())
    if stack is None:
        raise StackError(f"--dir {folder}: no stack here ({STATE_FILE} is missing)")
    if only in (None, "server"):
        _stop_server(stack)
    if only in (None, "postgres") and postgres_running(stack):
        _run(
            _as_database_user(
                [_pg_binary("pg_ctl"), "stop", "-D", str(stack.pgdata), "-m", "fast", "-w"]
            ),
            "stopping PostgreSQL",
        )
    return stack


def describe(stack: Stack) -> list[str]:
    """What a user needs: the URIs and the lines to export."""
    return [
        f"MLflow server:  {stack.tracking_uri}  (artifacts in {stack.root / 'artifacts'})",
        f"MLflow store:   {stack.database_uri('mlflow')}",
        f"Optuna storage: {stack.database_uri('optuna')}",
        "In each shell that launches jobs:",
        *(f"  export {key}={value}" for key, value in stack.environment().items()),
        "Then: python src/train.py -m +experiment=blog tracking=server",
        "      python src/train.py -m hparams_search=lr_bn "
        f"hydra.sweeper.storage={stack.database_uri('optuna')}",
    ]
