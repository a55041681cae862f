"""TLS in front of the stack's server: Debian's nginx as a reverse proxy.

The server then listens on loopback only; nginx terminates TLS on the stack's host
and forwards to it. The certificate is the user's (`--cert`, `--key`) or a
self-signed one generated for the stack's host name, which clients trust through
`MLFLOW_TRACKING_SERVER_CERT_PATH` (printed by `tracking_stack.py env`).
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from bnlab.stack.server import alive, stop_process
from bnlab.stack.state import LOOPBACK, START_SECONDS, Stack, StackError, is_wildcard

TLS_FOLDER = "tls"


def _nginx() -> str:
    found = shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(path).exists()),
        None,
    )
    if not found:
        raise StackError("--tls needs nginx: install it (Debian: apt-get install nginx)")
    return found


def check(cert: str | None, key: str | None) -> None:
    """Before anything starts: nginx is there, and a named certificate comes with its key."""
    _nginx()
    if bool(cert) != bool(key):
        raise StackError("--cert and --key go together: a certificate and its private key")
    for flag, path in (("--cert", cert), ("--key", key)):
        if path and not Path(path).is_file():
            raise StackError(f"{flag} {path}: no such file")


def self_signed(stack: Stack) -> tuple[str, str]:
    """A certificate for the stack's public name, localhost and 127.0.0.1 (made once)."""
    folder = stack.root / TLS_FOLDER
    folder.mkdir(exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    if cert.is_file() and key.is_file():
        return str(cert), str(key)
    name = stack.public_name
    names = dict.fromkeys([_san(name), "DNS:localhost", f"IP:{LOOPBACK}"])
    done = subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "825",
            "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
            "-addext", "subjectAltName=" + ",".join(names),
        ],
        capture_output=True,
        text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise StackError(f"openssl could not make a certificate: {done.stderr.strip()[-200:]}")
    key.chmod(0o600)
    return str(cert), str(key)


def _san(name: str) -> str:
    import ipaddress

    try:
        ipaddress.ip_address(name)
    except ValueError:
        return f"DNS:{name}"
    return f"IP:{name}"


def _config(stack: Stack, folder: Path) -> str:
    listen = "0.0.0.0" if is_wildcard(stack.host) else stack.host
    user = "user nobody nogroup;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"  {kind}_temp_path {folder / 'tmp' / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""# Written by pipelines/tracking_stack.py up --tls; replaced at each start.
{user}worker_processes 2;
pid {folder / "nginx.pid"};
error_log {folder / "nginx-error.log"} warn;
events {{ worker_connections 1024; }}
http {{
  access_log {folder / "nginx-access.log"};
{temp}
  # Artifacts of any size stream through to the server.
  client_max_body_size 0;
  server {{
    listen {listen}:{stack.tls_port} ssl;
    ssl_certificate {stack.cert};
    ssl_certificate_key {stack.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{
      proxy_pass http://{LOOPBACK}:{stack.port};
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-Proto https;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_request_buffering off;
      proxy_buffering off;
      proxy_read_timeout 600s;
    }}
  }}
}}
"""


def healthy(stack: Stack, timeout: float = 2.0) -> bool:
    # Whether nginx answers and reaches the server; trust is the clients' check, not this one.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    url = f"https://{LOOPBACK if is_wildcard(stack.host) else stack.host}:{stack.tls_port}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as answer:
            return answer.status == 200
    except OSError:
        return False


def running(stack: Stack) -> bool:
    return alive(stack.proxy_pid, b"nginx") and healthy(stack)


def start(stack: Stack) -> None:
    folder = stack.root / TLS_FOLDER
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (folder / "tmp" / kind).mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(folder / "tmp" / kind, "nobody")
    conf = folder / "nginx.conf"
    conf.write_text(_config(stack, folder))
    log_file = folder / "nginx-error.log"
    process = subprocess.Popen(
        [_nginx(), "-c", str(conf), "-p", str(folder), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=open(log_file, "a"),  # noqa: SIM115  (the child keeps it)
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    stack.proxy_pid = process.pid
    stack.save()
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_file.read_text().strip().splitlines()[-1:]
            raise StackError(f"nginx exited at start: {tail[0] if tail else '?'}")
        if healthy(stack):
            return
        time.sleep(0.3)
    raise StackError(f"nginx did not answer within {START_SECONDS:g} s (see {log_file})")


def stop(stack: Stack) -> None:
    stop_process(stack.proxy_pid, b"nginx")
    stack.proxy_pid = None
    stack.save()
