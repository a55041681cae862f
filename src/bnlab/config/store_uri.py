"""Checks that a store URI can be opened, before anything is written to it."""

from __future__ import annotations

import sqlite3
import tempfile
import urllib.parse
from pathlib import Path

from bnlab.config.errors import ConfigError, fail

TRACKING_SCHEMES = ("sqlite:///", "http://", "https://", "postgresql", "mysql")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, or None for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///")).expanduser()


def check_tracking_uri(uri: str, key: str = "tracking.uri", mlflow_store: bool = True) -> None:
    """Refuses, in one line naming `key`, a URI that no store can be opened at.

    Used for `tracking.uri` and by the pipelines for `--tracking-uri` and an Optuna
    storage (`mlflow_store=False`: its SQLite file is Optuna's, not MLflow's).
    """
    try:
        _check_store_uri(uri, mlflow_store)
    except ConfigError as error:
        if key == "tracking.uri":
            raise
        raise ConfigError(str(error).replace("tracking.uri", key, 1)) from error


def _check_store_uri(uri: str, mlflow_store: bool) -> None:
    if not uri.startswith(TRACKING_SCHEMES):
        fail(
            "tracking.uri",
            f"unsupported URI '{uri}' (accepted: sqlite:///FILE, http(s)://HOST:PORT, "
            "postgresql://..., mysql://...)",
        )
    try:
        parts = urllib.parse.urlsplit(uri)
        parts.port  # noqa: B018  (parsing the port is the check: 'host:abc' raises)
    except ValueError as error:
        fail("tracking.uri", f"not a valid URI ({error})")
    if uri.startswith(("http://", "https://")) and not parts.hostname:
        fail("tracking.uri", "names no host (e.g. http://127.0.0.1:5000)")
    database = sqlite_path(uri)
    if database is not None:
        if database.is_dir():
            fail(
                "tracking.uri",
                f"{database} is a folder; name a database file in it "
                f"(e.g. sqlite:///{database}/mlflow.db)",
            )
        # SQLite creates the file, and MLflow its folders, wherever the URI points:
        # a mistyped path must fail here, not leave folders behind.
        if mlflow_store:
            _check_sqlite_store(database)
        folder = database.absolute().parent
        if not folder.is_dir():
            fail("tracking.uri", f"directory {folder} does not exist (create it first)")
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError:
            fail("tracking.uri", f"directory {folder} is not writable")


# The first bytes of every SQLite 3 database file.
SQLITE_HEADER = b"SQLite format 3\x00"


def _check_sqlite_store(path: Path) -> None:
    """An existing file must be an MLflow store, or an empty one: MLflow would otherwise
    write its tables into someone else's database, or fail on a file that isn't one.
    The file is only read, never written."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    key = "tracking.uri"
    try:
        with path.open("rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except OSError as error:
        fail(key, f"cannot read {path} ({error.strerror})")
    if header != SQLITE_HEADER:
        fail(key, f"{path} is not a SQLite database (point tracking.uri at an MLflow store)")
    try:
        connection = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        finally:
            connection.close()
    except sqlite3.OperationalError:
        # Locked, or a journal left by a process that died mid-write, which only a writer
        # may roll back: the file is a database, and MLflow's own connection recovers it.
        return
    except sqlite3.DatabaseError as error:
        fail(key, f"{path} cannot be read as a SQLite database ({error})")
    if tables and not {"experiments", "runs", "alembic_version"} <= tables:
        fail(key, f"{path} is a SQLite database, but not an MLflow store")
