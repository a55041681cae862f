"""Retries for transient store errors, and the lock that serialises a new SQLite store.

Kept apart from the modules that talk to MLflow: it decides on exception types
(SQLAlchemy's, requests') found anywhere in an error's chain, never on text.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import requests.exceptions
import sqlalchemy.exc

try:
    import fcntl
except ImportError:  # Windows: no cross-process lock; retries still cover most races.
    fcntl = None

T = TypeVar("T")

# Errors that clear up when retried: SQLite write contention (OperationalError),
# two processes creating the same row at once (IntegrityError), a server that
# did not answer in time.
TRANSIENT_TYPES = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.IntegrityError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
)
# MLflow's error code for a database error it classifies as temporary.
TRANSIENT_CODES = ("TEMPORARILY_UNAVAILABLE",)

# Jitter has its own generator: `keras.utils.set_random_seed` reseeds the global
# one, and parallel jobs with the same seed would otherwise retry in lockstep.
_jitter = random.Random()


def is_transient(error: BaseException) -> bool:
    """Whether `error`, or any error it was raised from, is one worth retrying."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, TRANSIENT_TYPES):
            return True
        if getattr(current, "error_code", None) in TRANSIENT_CODES:
            return True
        current = current.__cause__ or current.__context__
    return False


def retry(action: Callable[[], T], attempts: int = 8) -> T:
    """Runs `action`, retrying transient store errors with jittered exponential backoff."""
    for attempt in range(attempts):
        try:
            return action()
        except Exception as error:
            if attempt == attempts - 1 or not is_transient(error):
                raise
            time.sleep(0.2 * 2**attempt * (0.5 + _jitter.random()))
    raise AssertionError("unreachable")


@contextlib.contextmanager
def sqlite_schema_lock(uri: str) -> Iterator[None]:
    """Serialises opening a SQLite store across processes.

    The first client to open a new database file creates and migrates its
    schema; two processes doing that at once corrupt the migration. A lock file
    beside the database makes the others wait until the schema is complete. The
    folder must exist: config validation checks it before any store is opened.
    """
    if not uri.startswith("sqlite:///") or fcntl is None:
        yield
        return
    database = Path(uri.removeprefix("sqlite:///")).resolve()
    with open(database.with_name(database.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
