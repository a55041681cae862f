"""A background thread that proves a process is alive by doing one thing at a fixed pace.

Used for the heartbeats of MLflow runs (`tracking.RunLogger`) and of Optuna trials
(the search sweeper): both stop when their owner closes them, and both log one
warning per outage instead of one per missed beat.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Heartbeat:
    """Calls `beat` every `seconds` from a daemon thread until `stop`."""

    def __init__(
        self, seconds: float, beat: Callable[[], None], name: str, level: int = logging.WARNING
    ) -> None:
        # The level of the one line an outage gets: a beat whose failure the owner reports
        # itself, or that nothing depends on, logs at DEBUG.
        self._level = level
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(seconds, beat, name), name=name, daemon=True
        )
        self._thread.start()

    def _run(self, seconds: float, beat: Callable[[], None], name: str) -> None:
        failing = False
        while not self._stop.wait(seconds):
            try:
                beat()
                failing = False
            except Exception as error:
                if not failing:
                    log.log(self._level, "%s failed: %s", name, error)
                    failing = True

    def stop(self) -> None:
        """Stops the beats and waits for the current one to end."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
