"""Names that users or files supply and that end up in paths, checked before any use.

An experiment name becomes a report folder and an artifact folder, an account name a
password file, a spool entry's run id a folder: none may climb out of the folder it
belongs to, hold control characters or be empty.
"""

from __future__ import annotations

import re

# Experiment names become folder names and URL parts; keep them short and plain.
MAX_NAME = 200
# An MLflow run id: 32 lowercase hex digits (a UUID's hex).
RUN_ID = re.compile(r"[0-9a-f]{32}")


def problem(name: object, max_length: int = MAX_NAME) -> str | None:
    """What makes `name` unfit to be part of a path, or None when it is fine."""
    if not isinstance(name, str):
        return f"must be text, got {type(name).__name__}"
    if not name.strip():
        return "must not be empty"
    if len(name) > max_length:
        return f"must be at most {max_length} characters, got {len(name)}"
    if any(not character.isprintable() for character in name):
        return f"must not hold control characters, got {name!r}"
    if "/" in name or "\\" in name or ".." in name or name.strip() in {".", ".."}:
        return f"must not look like a path ('/', '\\' or '..'), got '{name}'"
    return None


def is_run_id(value: object) -> bool:
    """Whether `value` is an MLflow run id (32 lowercase hex digits)."""
    return isinstance(value, str) and RUN_ID.fullmatch(value) is not None
