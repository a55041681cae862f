"""A shared tracking stack on one machine: PostgreSQL, an MLflow server with accounts, and TLS.

PostgreSQL holds MLflow's backend store (database `mlflow`), Optuna's storage
(`optuna`) and the accounts of MLflow's basic-auth app (`mlflow_auth`); `mlflow
server` serves the tracking API and proxies artifacts (`--artifacts-destination`),
on 127.0.0.1 by default. With `--tls`, nginx terminates TLS in front of it.
Everything lives in one folder: the database cluster, the artifacts, the logs, the
0600 secret files and `stack.json`, which records the ports, the settings and the
processes this stack started.

Secrets never appear in a URI or on a command line: the database password is in
`pgpass` (libpq reads it through `PGPASSFILE`), the admin's in `admin.password`;
`tracking_stack.py env` prints the variables that carry them.

Starting is idempotent (`up` twice reuses what runs), `down` stops only the
processes this folder's stack started, and the data survives `down`/`up`.
"""

from __future__ import annotations

from pathlib import Path

from bnlab.stack import postgres, proxy, server
from bnlab.stack.postgres import _pg_binary
from bnlab.stack.state import (
    ADMIN,
    STATE_FILE,
    Stack,
    StackError,
    free_port,
    is_loopback,
    is_wildcard,
    new_password,
    port_free,
    write_secret,
)

PARTS = ("postgres", "server", "proxy")

__all__ = [
    "PARTS",
    "Stack",
    "StackError",
    "_pg_binary",
    "describe",
    "down",
    "environment",
    "free_port",
    "load",
    "up",
]


def load(folder: Path) -> Stack:
    found = Stack.load(folder.resolve())
    if found is None:
        raise StackError(f"--dir {folder}: no stack here ({STATE_FILE} is missing)")
    return found


def check_settings(stack: Stack) -> None:
    """Refuses, before anything starts, a stack that would listen unsafely or cannot run."""
    if not stack.auth and not is_loopback(stack.host):
        raise StackError(
            f"--no-auth with --host {stack.host}: a stack without accounts may listen on "
            "loopback only; drop --no-auth or bind to 127.0.0.1"
        )
    if stack.auth_cache_seconds < 0:
        raise StackError(f"--auth-cache-seconds {stack.auth_cache_seconds}: must be 0 or more")
    if stack.tls:
        proxy.check(stack.cert, stack.key)
    postgres.check_network(stack.db_host, stack.db_allow)


def warnings(stack: Stack) -> list[str]:
    if not is_loopback(stack.host) and not stack.tls:
        return [
            f"warning: the server listens on {stack.host} without TLS: passwords travel in "
            "clear text; add --tls"
        ]
    return []


# The flag that sets each port, as errors name it.
PORT_FLAGS = {"port": "--port", "pg_port": "--pg-port", "tls_port": "--tls-port"}


def check_ports(stack: Stack | None, given: dict[str, object]) -> None:
    """Refuses a port out of range, or in use by something other than this stack, naming
    its flag, before anything starts or is saved."""
    for key, flag in PORT_FLAGS.items():
        port = given.get(key)
        if port is None:
            continue
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise StackError(f"{flag} {port}: a port is a number from 1 to 65535")
        if stack is not None and getattr(stack, key) == port:
            continue  # this stack's own port, in use by its own part
        host = str(given.get("host") or (stack.host if stack else "127.0.0.1"))
        if not port_free(port, host):
            raise StackError(f"{flag} {port}: something already listens on it; pick another")
    workers = given.get("workers")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise StackError(f"--workers {workers}: must be 1 or more")


def up(folder: Path, only: str | None = None, **settings: object) -> Stack:
    """Starts the stack in `folder`, or reuses the parts of it that already run.

    Ports are chosen on the first `up` (free ones unless given) and kept in
    `stack.json`, so URIs stay the same across `down`/`up`. Settings given here
    (None means "as before") are kept there too.
    """
    folder = folder.resolve()
    if folder.exists() and not folder.is_dir():
        raise StackError(f"--dir {folder}: not a folder")
    given = {key: value for key, value in settings.items() if value is not None}
    stack = Stack.load(folder)
    check_ports(stack, given)
    fresh = stack is None
    if fresh:
        stack = Stack(
            str(folder),
            host=str(given.pop("host", "127.0.0.1")),
            port=int(given.pop("port", 0)) or free_port(),
            pg_port=int(given.pop("pg_port", 0)) or free_port(),
            workers=int(given.pop("workers", 4)),
        )
    for key, value in given.items():
        setattr(stack, key, value)
    if stack.tls and not stack.tls_port:
        stack.tls_port = free_port()
    check_settings(stack)
    if fresh:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StackError(f"--dir {folder}: cannot create it ({error.strerror})") from error
        postgres.check_reachable(folder)
        folder.chmod(0o711)
        postgres.init(stack, new_password())
        (stack.root / "artifacts").mkdir()
    if stack.tls and not stack.cert:
        stack.cert, stack.key = proxy.self_signed(stack)
    stack.save()
    before = {"postgres": postgres.running(stack), "server": server.alive(stack.server_pid)}
    before["proxy"] = bool(stack.tls) and proxy.running(stack)
    try:
        _start(stack, only)
    except BaseException:
        # A failed `up` leaves running only what ran before it.
        for part, stop in (("proxy", proxy.stop), ("server", server.stop)):
            if not before[part]:
                stop(stack)
        if not before["postgres"]:
            postgres.stop(stack)
        raise
    return stack


def _start(stack: Stack, only: str | None) -> None:
    """Starts (or restarts, when its settings changed) each part `only` names, or all."""
    if only in (None, "postgres"):
        relisten = postgres.configure(stack)
        if postgres.running(stack) and relisten:
            postgres.stop(stack)
        if postgres.running(stack):
            postgres.reload(stack)
        else:
            postgres.start(stack)
        postgres.create_databases(stack)
    if only in (None, "server"):
        current = server.alive(stack.server_pid) and server.healthy(stack)
        if not current or stack.server_launch != server.launch_signature(stack):
            server.stop(stack)
            server.start(stack)
        if stack.auth:
            _prepare_accounts(stack)
    if only in (None, "proxy"):
        if stack.tls and not proxy.running(stack):
            proxy.stop(stack)
            proxy.start(stack)
        elif not stack.tls:
            proxy.stop(stack)


def _prepare_accounts(stack: Stack) -> None:
    from bnlab.tracking import accounts

    with accounts.signed_in(ADMIN, server.admin_password(stack)):
        accounts.prepare(stack.internal_uri)


def down(folder: Path, only: str | None = None) -> Stack:
    """Stops the proxy, the server and PostgreSQL that this folder's stack started."""
    stack = load(folder)
    if only in (None, "proxy"):
        proxy.stop(stack)
    if only in (None, "server"):
        server.stop(stack)
    if only in (None, "postgres"):
        postgres.stop(stack)
    return stack


def status(stack: Stack) -> dict[str, bool]:
    parts = {"postgres": postgres.running(stack), "server": server.healthy(stack)}
    if stack.tls:
        parts["proxy"] = proxy.running(stack)
    return parts


def environment(
    stack: Stack, user: str | None = None, password: str | None = None
) -> dict[str, str]:
    """The variables a shell needs: the server's URI, an account, the database's pgpass."""
    variables = {"MLFLOW_TRACKING_URI": stack.tracking_uri}
    if stack.auth:
        variables["MLFLOW_TRACKING_USERNAME"] = user or ADMIN
        variables["MLFLOW_TRACKING_PASSWORD"] = password or server.admin_password(stack)
    if stack.certificate:
        variables["MLFLOW_TRACKING_SERVER_CERT_PATH"] = str(stack.certificate)
    variables["PGPASSFILE"] = str(stack.pgpass)
    return variables


def describe(stack: Stack) -> list[str]:
    """What a user needs: the URIs, and how to set up a shell (no secret printed)."""
    lines = [
        f"MLflow server:  {stack.tracking_uri}  (artifacts in {stack.root / 'artifacts'})",
        f"MLflow store:   {stack.database_uri('mlflow')}",
        f"Optuna storage: {stack.database_uri('optuna')}",
    ]
    if stack.auth:
        lines.append(
            f"Accounts:       MLflow basic-auth; admin '{ADMIN}', password in "
            f"{stack.admin_password_file}"
        )
    if stack.db_host:
        lines.append(
            f"Cluster nodes:  {stack.database_uri('optuna', stack.db_host)} from "
            f"{stack.db_allow}; copy {stack.root / 'nodes.pgpass'} to each node as its PGPASSFILE"
        )
    lines += [
        "In each shell that launches jobs:",
        f'  eval "$(python pipelines/tracking_stack.py env --dir {stack.root})"',
        "Then: python src/train.py -m +experiment=blog tracking=server",
        "      python src/train.py -m hparams_search=lr_bn "
        f"hydra.sweeper.storage={stack.database_uri('optuna')}",
    ]
    return [*lines, *warnings(stack)]


def new_password_file(path: Path) -> tuple[Path, str]:
    """A generated password, written to a new 0600 file (never over an existing one)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    candidate, number = path, 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
    password = new_password()
    write_secret(candidate, password + "\n")
    return candidate, password


def read_password_file(path: Path) -> str:
    """A password from its file: the first line, at least MLflow's 12 characters."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise StackError(f"--password-file {path}: cannot be read ({error})") from error
    password = lines[0].strip() if lines else ""
    if len(password) < 12:
        raise StackError(f"--password-file {path}: the password needs 12 characters or more")
    return password


__all__ += ["is_wildcard", "new_password_file", "read_password_file", "status", "warnings"]
