"""Links into the MLflow UI for a tracking store: the way in that commands print.

A SQLite store has no server of its own; its links point at `mlflow ui` on its
default address (127.0.0.1:5000), started by `ui_command`. A server's links
point at the server itself.
"""

from __future__ import annotations

import shlex
from urllib.parse import urlsplit, urlunsplit

# Where `mlflow ui` serves by default.
LOCAL_UI = "http://127.0.0.1:5000"


def ui_base(uri: str, ui: str | None = None) -> str:
    """The UI's address for a tracking URI (or `ui` when given), without credentials."""
    if ui:
        return ui.rstrip("/")
    if uri.startswith(("http://", "https://")):
        parts = urlsplit(uri)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return LOCAL_UI


def runs_table(uri: str, experiment_id: str, ui: str | None = None) -> str:
    """Opens the experiment's runs table directly (not MLflow's GenAI overview page)."""
    return f"{ui_base(uri, ui)}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def run_page(uri: str, experiment_id: str, run_id: str, ui: str | None = None) -> str:
    return f"{ui_base(uri, ui)}/#/experiments/{experiment_id}/runs/{run_id}"


def ui_command(uri: str, ui: str | None = None) -> str | None:
    """The command that serves a local store's UI: one worker, no job runner, no telemetry."""
    if uri.startswith(("http://", "https://")):
        return None
    address = urlsplit(ui_base(uri, ui))
    where = f" --host {address.hostname} --port {address.port}" if ui and address.port else ""
    return (
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MLFLOW_DISABLE_TELEMETRY=true "
        f"mlflow ui --backend-store-uri {shlex.quote(uri)} --workers 1{where}"
    )


def browse_lines(uri: str, experiment_id: str, ui: str | None = None) -> list[str]:
    """What a command prints at its end so a user can open the runs."""
    lines = []
    command = ui_command(uri, ui)
    if command:
        lines.append(f"Start the MLflow UI: {command}")
    lines.append(f"Runs table (Group by -> bn): {runs_table(uri, experiment_id, ui)}")
    return lines
