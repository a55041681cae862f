"""The stack's MLflow server: started with MLflow's basic-auth app, its accounts in PostgreSQL.

The admin password is generated at the first `up`, kept in `admin.password` (0600), and
handed to the server through `MLFLOW_AUTH_ADMIN_PASSWORD`, which MLflow reads only to
create the admin account; it never appears on a command line. MLflow's security
middleware admits only the stack's own host names (`--allowed-hosts`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bnlab.stack.state import (
    ADMIN,
    AUTH_CONFIG,
    FLASK_SECRET,
    LOOPBACK,
    START_SECONDS,
    Stack,
    StackError,
    new_password,
    write_secret,
)

# Every account may read every experiment: a team compares its members' runs, and the
# report reads a whole study. Writing takes the `writers` role (tracking/accounts.py).
DEFAULT_PERMISSION = "READ"


def alive(pid: int | None, program: bytes = b"mlflow") -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return program in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # no /proc to tell which program it is
        return True


def healthy(stack: Stack, timeout: float = 2.0) -> bool:
    """Whether the server answers its (unauthenticated) health check."""
    try:
        with urllib.request.urlopen(f"{stack.internal_uri}/health", timeout=timeout) as answer:
            return answer.status == 200
    except OSError:
        return False


def ensure_secrets(stack: Stack) -> None:
    """The admin password and the CSRF key, created once; kept across `down`/`up`."""
    for name in (stack.admin_password_file.name, FLASK_SECRET):
        path = stack.root / name
        if not path.is_file():
            write_secret(path, new_password() + "\n")
    write_secret(
        stack.root / AUTH_CONFIG,
        "[mlflow]\n"
        f"default_permission = {DEFAULT_PERMISSION}\n"
        f"database_uri = {stack.database_uri('mlflow_auth')}\n"
        f"admin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        f"auth_cache_ttl_seconds = {stack.auth_cache_seconds}\n",
    )


def admin_password(stack: Stack) -> str:
    return stack.admin_password_file.read_text().strip()


def allowed_hosts(stack: Stack) -> str:
    """Host headers the server answers: its public name and loopback, with any port."""
    names = dict.fromkeys([stack.public_name, stack.host, "localhost", LOOPBACK])
    patterns = []
    for name in names:
        if not name or name in ("0.0.0.0", "::"):
            continue
        shown = f"[{name}]" if ":" in name else name
        patterns += [shown, f"{shown.replace('[', '[[]', 1)}:*"]
    return ",".join(patterns)


def _command(stack: Stack) -> list[str]:
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [
        str(mlflow) if mlflow.exists() else "mlflow",
        "server",
        "--backend-store-uri",
        stack.database_uri("mlflow"),
        "--artifacts-destination",
        str(stack.root / "artifacts"),
        "--host",
        stack.server_host,
        "--port",
        str(stack.port),
        "--workers",
        str(stack.workers),
        "--allowed-hosts",
        allowed_hosts(stack),
        # uvicorn's default of 5 s is shorter than MLflow's start on a small machine: a
        # new worker (at SIGHUP, see forget_passwords) would be refused as not ready.
        "--uvicorn-opts",
        f"--timeout-worker-healthcheck {START_SECONDS:.0f}",
    ]
    if stack.auth:
        command += ["--app-name", "basic-auth"]
    return command


def launch_signature(stack: Stack) -> str:
    """How the server is to run (no secret in it): a change since its start restarts it."""
    # The cache setting lives in auth.ini; naming it here restarts a server it changed.
    cache = f" (auth cache {stack.auth_cache_seconds} s)" if stack.auth else ""
    return " ".join(_command(stack)[1:]) + cache


def start(stack: Stack) -> None:
    environment = {
        **os.environ,
        "PGPASSFILE": str(stack.pgpass),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    for inherited in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
    ):
        environment.pop(inherited, None)
    if stack.auth:
        ensure_secrets(stack)
        environment["MLFLOW_AUTH_CONFIG_PATH"] = str(stack.root / AUTH_CONFIG)
        environment["MLFLOW_AUTH_ADMIN_PASSWORD"] = admin_password(stack)
        environment["MLFLOW_FLASK_SERVER_SECRET_KEY"] = (
            (stack.root / FLASK_SECRET).read_text().strip()
        )
    log_file = stack.root / "mlflow.log"
    with open(log_file, "a") as log:
        process = subprocess.Popen(
            _command(stack),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment,
            start_new_session=True,
        )
    stack.server_pid = process.pid
    stack.server_launch = launch_signature(stack)
    stack.save()
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_file.read_text().strip().splitlines()[-1:]
            raise StackError(f"mlflow server exited at start: {tail[0] if tail else '?'}")
        if healthy(stack):
            return
        time.sleep(0.5)
    raise StackError(f"mlflow server did not answer within {START_SECONDS:g} s (see {log_file})")


def stop_process(pid: int | None, program: bytes) -> None:
    """Stops a process group this stack started: SIGTERM, then SIGKILL after 30 s."""
    if not alive(pid, program):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while alive(pid, program) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.2)
    if alive(pid, program):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    _reap(pid)


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def forget_passwords(stack: Stack) -> None:
    """Empties every server worker's cache of checked passwords, after a password change.

    MLflow drops a changed password only from the cache of the worker that changed it;
    the others would trust the old one for up to `auth_cache_seconds`. uvicorn replaces
    its workers on SIGHUP, each new one serving before the old one stops, so nothing is
    refused meanwhile.
    """
    if not stack.auth_cache_seconds or stack.workers <= 1 or not alive(stack.server_pid):
        return  # no cache, MLflow's own invalidation covers the one worker, or nothing runs
    supervisor = next((pid for pid in _children(stack.server_pid) if alive(pid, b"uvicorn")), 0)
    old = (
        {pid for pid in _children(supervisor) if alive(pid, b"spawn_main")} if supervisor else set()
    )
    late = f"they may trust the old password for up to {stack.auth_cache_seconds} s more"
    if not old:
        raise StackError(f"found no worker of the server (process {stack.server_pid}); {late}")
    try:
        os.kill(supervisor, signal.SIGHUP)
    except PermissionError as error:
        raise StackError(f"could not restart the server's workers ({error}); {late}") from error
    deadline = time.monotonic() + START_SECONDS
    while any(alive(pid, b"spawn_main") for pid in old):
        if time.monotonic() > deadline:
            raise StackError(
                f"the server's workers did not restart within {START_SECONDS:g} s; {late}"
            )
        time.sleep(0.5)


def stop(stack: Stack) -> None:
    stop_process(stack.server_pid, b"mlflow")
    stack.server_pid = None
    stack.server_launch = None
    stack.save()


def _reap(pid: int) -> None:
    """Collects a process this one started itself (a test's), so it does not linger."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
