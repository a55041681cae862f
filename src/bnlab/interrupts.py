"""Ctrl-C and SIGTERM that no library callback can swallow.

Python delivers a signal as an exception wherever the main thread happens to be.
When that is inside a weakref or garbage-collector callback (SQLAlchemy has
several), Python prints "Exception ignored in ..." and carries on. So the
handler also raises a flag, and the long-running loops (training, waiting,
launching the next job) check it and raise again.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

_requested = threading.Event()


def _handle(signum: int, frame: Any) -> None:
    _requested.set()
    raise KeyboardInterrupt(signal.Signals(signum).name)


def install() -> None:
    """Handles SIGINT and SIGTERM in this process (a shell may start it with SIGINT ignored)."""
    _requested.clear()
    signal.signal(signal.SIGINT, _handle)
    signal.signal(signal.SIGTERM, _handle)


def requested() -> bool:
    """Whether this process was asked to stop."""
    return _requested.is_set()


def check() -> None:
    """Raises KeyboardInterrupt if a stop was asked for, even if the first one was swallowed."""
    if _requested.is_set():
        raise KeyboardInterrupt("stop requested")


def clear() -> None:
    """Forgets a stop this process asked of itself (see `sweep.SweepRecorder`'s watchdog)."""
    _requested.clear()
