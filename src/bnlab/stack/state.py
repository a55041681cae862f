"""The stack's folder: where it listens, what it started, and its 0600 secret files."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import secrets
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

USER = "bnlab"
# MLflow's store, Optuna's storage, and the accounts of MLflow's basic-auth app.
DATABASES = ("mlflow", "optuna", "mlflow_auth")
STATE_FILE = "stack.json"
PGPASS = "pgpass"
# What cluster nodes copy: the optuna database's line only, for the --db-host address.
NODES_PGPASS = "nodes.pgpass"
ADMIN = "admin"
ADMIN_PASSWORD = "admin.password"
# MLflow's basic-auth app needs one key for its CSRF tokens, shared by its workers.
FLASK_SECRET = "flask.secret"
AUTH_CONFIG = "auth.ini"
START_SECONDS = 120.0
LOOPBACK = "127.0.0.1"


class StackError(RuntimeError):
    """The stack cannot be started or stopped; the message says why, in one line."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def port_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether nothing listens on `port` of `host` now (a bind there succeeds)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        try:
            probe.bind((host if host != "localhost" else LOOPBACK, port))
        except OSError:
            return False
    return True


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (localhost, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::", "")


def write_secret(path: Path, text: str) -> None:
    """Writes `text` to a new file that only its owner can read (never world-readable)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    path.chmod(0o600)


def new_password() -> str:
    # Above MLflow's 12-character minimum, and safe in a pgpass line and a shell word.
    return secrets.token_urlsafe(24)


@dataclass
class Stack:
    """Where one stack lives and listens, and how it was asked to run."""

    folder: str
    host: str
    port: int
    pg_port: int
    workers: int
    server_pid: int | None = None
    # Fields below came with accounts and TLS; a folder from before them loads with
    # their defaults, and its next `up` adds accounts without touching its runs.
    auth: bool = True
    # How long a server worker trusts a checked password (MLflow's auth_cache_ttl_seconds).
    # 0 checks its hash on every request, which made tracking cost 4x per job, and 8 jobs
    # at once on 2 cores overloaded the server. `user passwd` restarts the workers, so a
    # password changed there stops working at once; one changed in MLflow's UI or deleted
    # may still work on the other workers for up to this long.
    auth_cache_seconds: int = 60
    # The name clients use for the server: the host it binds to, unless that is a wildcard.
    name: str | None = None
    tls: bool = False
    tls_port: int | None = None
    cert: str | None = None
    key: str | None = None
    proxy_pid: int | None = None
    db_host: str | None = None
    db_allow: str | None = None
    # How the running server was started (no secrets): a change restarts it.
    server_launch: str | None = None

    @property
    def root(self) -> Path:
        return Path(self.folder)

    @property
    def pgdata(self) -> Path:
        return self.root / "postgres"

    @property
    def pgpass(self) -> Path:
        return self.root / PGPASS

    @property
    def admin_password_file(self) -> Path:
        return self.root / ADMIN_PASSWORD

    @property
    def public_name(self) -> str:
        if self.name:
            return self.name
        return socket.getfqdn() if is_wildcard(self.host) else self.host

    @property
    def server_host(self) -> str:
        """Behind the TLS proxy the server listens on loopback only."""
        return LOOPBACK if self.tls else self.host

    @property
    def tracking_uri(self) -> str:
        if self.tls:
            return f"https://{_url_host(self.public_name)}:{self.tls_port}"
        return f"http://{_url_host(self.public_name)}:{self.port}"

    @property
    def internal_uri(self) -> str:
        """The server itself, from this machine (the health check, the proxy's upstream)."""
        host = LOOPBACK if is_wildcard(self.server_host) else self.server_host
        return f"http://{_url_host(host)}:{self.port}"

    @property
    def certificate(self) -> Path | None:
        return Path(self.cert) if self.tls and self.cert else None

    def database_uri(self, database: str, host: str = LOOPBACK) -> str:
        """A SQLAlchemy URI without the password (libpq reads it from PGPASSFILE)."""
        return f"postgresql://{USER}@{_url_host(host)}:{self.pg_port}/{database}"

    def save(self) -> None:
        path = self.root / STATE_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> Stack | None:
        path = folder / STATE_FILE
        if not path.is_file():
            return None
        saved = json.loads(path.read_text())
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in saved.items() if key in known})


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
