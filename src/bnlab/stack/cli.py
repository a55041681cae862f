"""`pipelines/tracking_stack.py`: up, down, status, env and user, each with `--dir DIR`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from bnlab import names, stack
from bnlab.stack import server
from bnlab.stack.state import ADMIN

# Account names stay short: they are typed, shown in lists and name a file.
MAX_ACCOUNT_NAME = 100


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="A shared tracking stack: PostgreSQL, an MLflow server with accounts, TLS."
    )
    actions = parser.add_subparsers(dest="action", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help)
        sub.add_argument("--dir", type=Path, default=Path("stack"), help="the stack's folder")
        return sub

    up = command("up", "start the stack, or what of it is not running")
    up.add_argument("--host", help="address the server binds to (first `up`: 127.0.0.1)")
    up.add_argument("--name", help="host name clients use (default: the --host address)")
    up.add_argument("--port", type=int, help="server port (first `up`; default a free one)")
    up.add_argument("--pg-port", type=int, help="PostgreSQL port (first `up`)")
    up.add_argument("--workers", type=int, help="server worker processes (default 4)")
    up.add_argument("--only", choices=stack.PARTS, help="start one part")
    up.add_argument(
        "--no-auth", dest="auth", action="store_false", default=None,
        help="no accounts (loopback only)",
    )  # fmt: skip
    up.add_argument("--auth", dest="auth", action="store_true", help="accounts (the default)")
    up.add_argument(
        "--auth-cache-seconds", type=int,
        help="how long a worker trusts a checked password (default 60; 0: every request)",
    )  # fmt: skip
    up.add_argument("--tls", action="store_true", default=None, help="TLS through nginx")
    up.add_argument("--tls-port", type=int, help="the TLS proxy's port (default a free one)")
    up.add_argument("--cert", help="TLS certificate (default: a self-signed one)")
    up.add_argument("--key", help="the certificate's private key")
    up.add_argument("--db-host", help="an address of this machine for cluster nodes' Optuna")
    up.add_argument("--db-allow", help="the CIDR admitted there, to the optuna database only")

    down = command("down", "stop what `up` started; the data stays")
    down.add_argument("--only", choices=stack.PARTS, help="stop one part")
    command("status", "which parts answer (exit 3 when one does not)")
    env = command("env", 'export lines for a shell: eval "$(... env)"')
    env.add_argument("--user", help="another account than the admin")
    env.add_argument("--password-file", type=Path, help="that account's password file")

    user = command("user", "manage accounts (as the admin)")
    what = user.add_subparsers(dest="user_action", required=True)
    add = what.add_parser("add", help="a new account, which may write unless --read-only")
    add.add_argument("name")
    add.add_argument("--read-only", action="store_true", help="may read, never write")
    add.add_argument("--password-file", type=Path, help="its password (default: generated)")
    passwd = what.add_parser("passwd", help="a new password")
    passwd.add_argument("name")
    passwd.add_argument("--password-file", type=Path, help="the password (default: generated)")
    what.add_parser("list", help="every account and what it may do")
    for sub in (add, passwd, what.choices["list"]):
        sub.add_argument("--dir", type=Path, default=argparse.SUPPRESS, help="the stack's folder")
    return parser


def _password(args: argparse.Namespace, found: stack.Stack) -> str:
    if args.password_file:
        return stack.read_password_file(args.password_file)
    path, password = stack.new_password_file(found.root / "users" / f"{args.name}.password")
    print(f"The password of {args.name} is in {path} (mode 0600).")
    return password


def _user(args: argparse.Namespace, found: stack.Stack) -> None:
    from bnlab.tracking import accounts

    if not found.auth:
        raise stack.StackError(f"--dir {args.dir}: this stack runs without accounts (--no-auth)")
    if args.user_action != "list" and args.name == ADMIN:
        raise stack.StackError(f"{ADMIN}: the admin's password is in {found.admin_password_file}")
    password = _password(args, found) if args.user_action != "list" else ""
    uri = found.internal_uri
    try:
        with accounts.signed_in(ADMIN, server.admin_password(found)):
            if args.user_action == "add":
                accounts.add(uri, args.name, password, args.read_only)
                print(f"Added {args.name} ({'read-only' if args.read_only else 'may write'}).")
            elif args.user_action == "passwd":
                accounts.set_password(uri, args.name, password)
                try:
                    server.forget_passwords(found)
                except stack.StackError as error:
                    raise stack.StackError(
                        f"changed the password of {args.name}, but {error}"
                    ) from error
                print(f"Changed the password of {args.name}.")
            else:
                for account in accounts.accounts(uri):
                    can = (
                        "admin" if account.is_admin else "writer" if account.writer else "read-only"
                    )
                    print(f"{account.name}\t{can}")
    except accounts.AccountError as error:
        raise stack.StackError(str(error)) from error


def check_account_name(name: str, flag: str) -> None:
    """Refuses a name that basic auth cannot carry (a `:`) or that is unfit for a file name
    (each account's generated password goes to `users/<name>.password`)."""
    refused = names.problem(name, MAX_ACCOUNT_NAME)
    if refused is None and ":" in name:
        refused = f"must not hold ':' (basic auth cannot carry it), got '{name}'"
    if refused:
        raise stack.StackError(f"{flag}: {refused}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if getattr(args, "user_action", None) in ("add", "passwd"):
            check_account_name(args.name, f"user {args.user_action} NAME")
        if getattr(args, "user", None) is not None:
            check_account_name(args.user, "--user")
        if args.action == "up":
            settings = {
                key: getattr(args, key)
                for key in ("host", "name", "port", "pg_port", "workers", "auth")
                + ("auth_cache_seconds", "tls")
                + ("tls_port", "cert", "key", "db_host", "db_allow")
            }
            for key in ("cert", "key"):
                if settings[key]:
                    settings[key] = str(Path(settings[key]).resolve())
            found = stack.up(args.dir, args.only, **settings)
            print("\n".join(stack.describe(found)))
            return 0
        if args.action == "down":
            stack.down(args.dir, args.only)
            print(f"Stopped the stack in {args.dir.resolve()}; its data stays there.")
            return 0
        found = stack.load(args.dir)
        if args.action == "env":
            if bool(args.user) != bool(args.password_file):
                raise stack.StackError("--user and --password-file go together")
            password = stack.read_password_file(args.password_file) if args.user else None
            variables = stack.environment(found, args.user, password)
            print("\n".join(f"export {k}={shlex.quote(v)}" for k, v in variables.items()))
            return 0
        if args.action == "user":
            _user(args, found)
            return 0
        running = stack.status(found)
        for part, answering in running.items():
            print(f"{part}: {'up' if answering else 'down'}")
        return 0 if all(running.values()) else 3
    except stack.StackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
