"""Accounts on a tracking server that runs MLflow's basic-auth app, managed as its admin.

Everything goes through MLflow's auth client (`mlflow.server.get_app_client`) and its
REST API; the admin's credentials travel in `MLFLOW_TRACKING_USERNAME`/`PASSWORD`,
which both read. Writing is a role: `writers` may add and update runs in every
experiment, and whoever creates an experiment owns it (MANAGE, MLflow's own rule), so
only its owner can delete it or change who may use it. A read-only account is one
without the role: it reads what the server's default permission (READ) lets it.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import requests
from mlflow.exceptions import MlflowException
from mlflow.server import get_app_client

# MLflow's server package imports a Starlette module that warns of its own deprecation.
warnings.filterwarnings("ignore", message="starlette.middleware.wsgi is deprecated")

WRITERS = "writers"
WORKSPACE = "default"
# Adding and updating runs in any experiment; deleting or re-permissioning one stays its owner's.
WRITER_GRANTS = (("experiment", "*", "EDIT"), ("run", "*", "MANAGE"))


class AccountError(RuntimeError):
    """The server refused an account change; the message says why, in one line."""


@dataclass(frozen=True)
class Account:
    name: str
    is_admin: bool
    writer: bool


@contextlib.contextmanager
def signed_in(username: str, password: str, cert: str | None = None) -> Iterator[None]:
    """Sets MLflow's own credential variables for the calls inside, then restores them."""
    wanted = {
        "MLFLOW_TRACKING_USERNAME": username,
        "MLFLOW_TRACKING_PASSWORD": password,
        "MLFLOW_TRACKING_SERVER_CERT_PATH": cert,
    }
    before = {key: os.environ.get(key) for key in wanted}
    try:
        for key, value in wanted.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _client(uri: str):
    return get_app_client("basic-auth", tracking_uri=uri)


def _writers_role(uri: str) -> int:
    """The `writers` role's id, creating it with its grants the first time."""
    client = _client(uri)
    for role in client.list_roles(WORKSPACE):
        if role.name == WRITERS:
            return role.id
    role = client.create_role(WORKSPACE, WRITERS, "adds and updates runs in every experiment")
    for resource_type, pattern, permission in WRITER_GRANTS:
        client.add_role_permission(role.id, resource_type, pattern, permission)
    return role.id


def prepare(uri: str) -> None:
    """Makes sure the `writers` role exists (run as the admin after each start)."""
    _call(lambda: _writers_role(uri), "setting up the writers role")


def add(uri: str, name: str, password: str, read_only: bool) -> None:
    def create() -> None:
        role = _writers_role(uri)
        _client(uri).create_user(name, password)
        if not read_only:
            _client(uri).assign_role(name, role)

    _call(create, f"adding user {name}")


def set_password(uri: str, name: str, password: str, current: str | None = None) -> None:
    """A new password; MLflow asks for the `current` one when an account changes its own."""
    _call(
        lambda: _client(uri).update_user_password(name, password, current_password=current),
        f"changing {name}'s password",
    )


def accounts(uri: str) -> list[Account]:
    """Every account, whether it is an admin, and whether it may write."""

    def read() -> list[Account]:
        answer = requests.get(
            f"{uri}/api/2.0/mlflow/users/list",
            auth=(os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]),
            verify=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or True,
            timeout=30,
        )
        answer.raise_for_status()
        return [
            Account(
                user["username"],
                bool(user["is_admin"]),
                any(role.get("name") == WRITERS for role in user.get("roles", [])),
            )
            for user in answer.json()["users"]
        ]

    return _call(read, "listing users")


def _call(action, what: str):
    try:
        return action()
    except (MlflowException, requests.RequestException) as error:
        lines = str(getattr(error, "message", error)).strip().splitlines()
        # The server's answer, without the database error MLflow appends to it.
        said = lines[0].split(" Error: (")[0] if lines else type(error).__name__
        raise AccountError(f"{what}: {said}") from error
