"""Retries for transient store errors, and the file locks that serialise work across processes.

Kept apart from the modules that talk to MLflow: it decides on exception types
(SQLAlchemy's, requests') found anywhere in an error's chain, never on text.
"""

from __future__ import annotations

import contextlib
import random
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import requests.exceptions
import sqlalchemy.exc
from mlflow.exceptions import RestException

from bnlab import interrupts
from bnlab.config.store_uri import sqlite_path

try:
    import fcntl
except ImportError:  # Windows: no cross-process lock; retries still cover most races.
    fcntl = None

T = TypeVar("T")

# Errors that clear up when retried: SQLite write contention (OperationalError),
# two processes creating the same row at once (IntegrityError), a server that
# did not answer in time, or answered 5xx more times than the HTTP client retries
# (RetryError: "too many 503 error responses", while its database restarts).
TRANSIENT_TYPES = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.IntegrityError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.RetryError,
)
# A certificate the client does not trust stays untrusted: retrying it only delays the error.
NEVER_TRANSIENT = (requests.exceptions.SSLError, ssl.SSLCertVerificationError)
# MLflow's error code for a database error it classifies as temporary.
TRANSIENT_CODES = ("TEMPORARILY_UNAVAILABLE",)
# A tracking server answers 500 (INTERNAL_ERROR) and 503 while its database restarts:
# the store failed on its side, not because of what was written.
STORE_SIDE_CODES = ("INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "RESOURCE_EXHAUSTED")
# The error type that carries a tracking server's answer and its code: a server's answer
# (an HTTP error) is told apart from a store that is down by its type.
SERVER_ERRORS = (RestException,)


# Jitter has its own generator: `keras.utils.set_random_seed` reseeds the global
# one, and parallel jobs with the same seed would otherwise retry in lockstep.
_jitter = random.Random()


def _chain(error: BaseException) -> Iterator[BaseException]:
    """`error`, then each error it was raised from (its cause, else its context), once each."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def caused_by(error: BaseException, types: tuple[type[BaseException], ...]) -> bool:
    """Whether `error`, or any error it was raised from, is one of `types`."""
    return any(isinstance(current, types) for current in _chain(error))


def is_transient(error: BaseException) -> bool:
    """Whether `error`, or any error it was raised from, is one worth retrying."""
    for current in _chain(error):
        if isinstance(current, NEVER_TRANSIENT):
            return False
        if isinstance(current, TRANSIENT_TYPES):
            return True
        code = getattr(current, "error_code", None)
        if code in TRANSIENT_CODES:
            return True
        if isinstance(current, SERVER_ERRORS) and code in STORE_SIDE_CODES:
            return True
    return False


# How long one store call may keep retrying before its error is raised, unless its
# caller passes its own (a `Store` passes `tracking.deadline_seconds`).
DEFAULT_DEADLINE_SECONDS = 60.0


class StoreUnavailable(RuntimeError):
    """A store call kept failing with transient errors until its deadline passed."""


def retry(
    action: Callable[[], T], attempts: int = 50, deadline: float = DEFAULT_DEADLINE_SECONDS
) -> T:
    """Runs `action`, retrying transient store errors with jittered exponential backoff.

    Retrying stops at `attempts` tries or after `deadline` seconds, whichever comes
    first; the last error is then raised as the cause of StoreUnavailable. After a
    Ctrl-C a failing call is not retried (the command must end within seconds), while
    the writes that close runs still go through when the store answers.
    """
    limit = time.monotonic() + deadline
    for attempt in range(attempts):
        try:
            return action()
        except Exception as error:
            if not is_transient(error):
                raise
            pause = min(0.2 * 2**attempt, 5.0) * (0.5 + _jitter.random())
            out_of_time = time.monotonic() + pause > limit
            if attempt == attempts - 1 or out_of_time or not _wait(pause):
                raise StoreUnavailable(
                    f"{_cause(error)} (still failing after {attempt + 1} tries)"
                ) from error
    raise AssertionError("unreachable")


def _cause(error: BaseException) -> str:
    """The innermost error's type and first line: what actually went wrong."""
    seen: set[int] = set()
    current: BaseException = error
    while id(current) not in seen and (current.__cause__ or current.__context__) is not None:
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    first_line = str(current).splitlines()[0] if str(current) else ""
    return f"{type(current).__name__}: {first_line[:200]}".rstrip(": ")


def _wait(seconds: float) -> bool:
    """Sleeps in short slices; False as soon as a Ctrl-C was asked for (see `interrupts`)."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if interrupts.requested():
            return False
        time.sleep(min(left, 0.2))
    return not interrupts.requested()


@contextlib.contextmanager
def sqlite_schema_lock(uri: str) -> Iterator[None]:
    """Serialises opening a SQLite store across processes.

    The first client to open a new database file creates and migrates its
    schema; two processes doing that at once corrupt the migration. A lock file
    beside the database makes the others wait until the schema is complete. The
    folder must exist: config validation checks it before any store is opened.
    """
    database = sqlite_path(uri)
    if database is None:
        yield
        return
    database = database.resolve()
    with file_lock(database.with_name(database.name + ".lock")):
        yield


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Holds an exclusive lock on the file `path` (created if missing) across processes."""
    if fcntl is None:
        yield
        return
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
