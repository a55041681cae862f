"""Ctrl-C and SIGTERM that no library callback can swallow.

Python delivers a signal as an exception wherever the main thread happens to be.
When that is inside a weakref or garbage-collector callback (SQLAlchemy has
several), Python prints "Exception ignored in ..." and carries on. So the
handler also raises a flag, and the long-running loops (training, waiting,
launching the next job) check it and raise again.
"""

from __future__ import annotations

import _thread
import signal
import threading
from typing import Any

_requested = threading.Event()
# Seconds the launching process of a sweep whose jobs run in local worker processes waits,
# after the first stop, before it stops too (None: it stops at once). See `grace`.
_grace: float | None = None


def _handle(signum: int, frame: Any) -> None:
    if _grace is not None and not _requested.is_set():
        # The first stop of a launcher with local workers: the workers, signalled with it
        # (Ctrl-C, or a kill of the process group), close their runs and write what they
        # buffered, and their stop reaches this process through the launcher. Only if they
        # do not stop in time does this process stop itself, and its launcher kills them.
        _requested.set()
        timer = threading.Timer(_grace, _thread.interrupt_main, args=(signal.SIGINT,))
        timer.daemon = True
        timer.start()
        return
    _requested.set()
    raise KeyboardInterrupt(signal.Signals(signum).name)


def grace(seconds: float | None) -> None:
    """Lets the first SIGINT or SIGTERM wait `seconds` before it stops this process.

    Used by a sweep launched on local worker processes (joblib), which its launcher kills
    outright once the launching process stops: the workers need that moment to close their
    runs. A second signal stops this process at once.
    """
    global _grace
    _grace = seconds


def install() -> None:
    """Handles SIGINT and SIGTERM in this process (a shell may start it with SIGINT ignored)."""
    _requested.clear()
    signal.signal(signal.SIGINT, _handle)
    signal.signal(signal.SIGTERM, _handle)


def ensure_installed() -> None:
    """Handles SIGINT and SIGTERM in a job's process too, keeping any stop already asked.

    A local launcher's worker process (joblib's) runs jobs without the command's handlers,
    and a SIGTERM there would end the job before it writes the metrics it buffered. Only a
    main thread can install handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not _handle:
            signal.signal(signum, _handle)


def requested() -> bool:
    """Whether this process was asked to stop."""
    return _requested.is_set()


def stopped_by(error: BaseException) -> bool:
    """Whether `error` ends this process's work as a stop, not a failure: it is not an
    Exception (KeyboardInterrupt), or a stop was asked before it, since a library may turn
    the KeyboardInterrupt it met into an error of its own."""
    return requested() or not isinstance(error, Exception)


def check() -> None:
    """Raises KeyboardInterrupt if a stop was asked for, even if the first one was swallowed."""
    if _requested.is_set():
        raise KeyboardInterrupt("stop requested")


def clear() -> None:
    """Forgets a stop this process asked of itself (see `sweep.SweepRecorder`'s watchdog)."""
    _requested.clear()
