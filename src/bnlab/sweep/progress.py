"""A sweep's progress line, `k/N done, ETA`, counted from the tracking store.

The launching process learns what its jobs did only from the store, wherever
the jobs run (here, in joblib workers, on Ray or Slurm nodes), so the count
is read there and printed whenever it changes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from bnlab import metrics
from bnlab.heartbeat import Heartbeat

log = logging.getLogger(__name__)


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def stale(jobs: list[dict[str, Any]], quiet_seconds: float, now: float | None = None) -> int:
    """How many jobs still RUNNING have not stamped their heartbeat for `quiet_seconds`
    (a stopped or hung process), well before the store closes them as dead."""
    now = time.time() if now is None else now
    return sum(
        job.get("status") == "RUNNING"
        and job.get("beat") is not None
        and now - job["beat"] > quiet_seconds
        for job in jobs
    )


def line(
    jobs: list[dict[str, Any]], total: int, elapsed: float, quiet_seconds: float | None = None
) -> str:
    """`k/N done (...), elapsed, ETA` from a sweep's jobs as `Store.sweep_jobs` reads them.

    The ETA divides the jobs left by the rate of jobs trained so far; skipped
    jobs took no time, so they count as done but not towards the rate. With
    `quiet_seconds`, running jobs without a heartbeat for that long are named stale.
    """
    done = [job for job in jobs if job["outcome"] not in ("running", "unknown")]
    skipped = sum(job["outcome"] == metrics.SKIPPED for job in done)
    trained = len(done) - skipped
    # The outcome words of the sweep's summary and the runs' `outcome` tags, one per kind.
    ended_badly = [
        f", {count} {outcome}"
        for outcome in (metrics.FAILED, metrics.KILLED)
        if (count := sum(job["outcome"] == outcome for job in done))
    ]
    detail = f"{trained} trained, {skipped} skipped" + "".join(ended_badly)
    quiet = stale(jobs, quiet_seconds) if quiet_seconds is not None else 0
    if quiet:
        detail += f", {quiet} stale (no heartbeat for over {quiet_seconds:g} s)"
    left = max(total - len(done), 0)
    if left == 0:
        eta = "ETA 0:00"
    elif trained:
        eta = f"ETA {_clock(left * elapsed / trained)}"
    else:
        eta = "ETA after the first job"
    return f"{len(done)}/{total} done ({detail}), {_clock(elapsed)} elapsed, {eta}"


class Progress:
    """Logs the progress line from a background thread whenever the count changes."""

    def __init__(
        self,
        read_jobs: Callable[[], list[dict[str, Any]]],
        total: int,
        label: str,
        seconds: float,
        watch: Callable[[list[dict[str, Any]]], None] | None = None,
        quiet_seconds: float | None = None,
    ) -> None:
        # A running job silent this long is shown as stale (see `stale`).
        self._quiet_seconds = quiet_seconds
        self._last_stale = 0
        self._read_jobs = read_jobs
        # Also handed every poll's jobs (the sweep's watchdog): one read serves both.
        self._watch = watch
        self._total = total
        self._label = label
        self._started = time.monotonic()
        self._last_done = -1
        # A poll the store does not answer skips a line; the sweep says so when it closes.
        self._beat = Heartbeat(seconds, self.report, f"{label} progress", logging.DEBUG)

    @property
    def total(self) -> int:
        return self._total

    def report(self) -> None:
        """Reads the jobs from the store and logs the line if more are done than last time."""
        jobs = self._read_jobs()
        self._log(jobs)
        if self._watch is not None:
            self._watch(jobs)

    def _log(self, jobs: list[dict[str, Any]]) -> None:
        done = sum(job["outcome"] not in ("running", "unknown") for job in jobs)
        quiet = stale(jobs, self._quiet_seconds) if self._quiet_seconds is not None else 0
        if done != self._last_done or quiet != self._last_stale:
            self._last_done, self._last_stale = done, quiet
            elapsed = time.monotonic() - self._started
            log.info("%s: %s", self._label, line(jobs, self._total, elapsed, self._quiet_seconds))

    def stop(self) -> None:
        """Stops the polls."""
        self._beat.stop()

    def finish(self, jobs: list[dict[str, Any]]) -> None:
        """Stops the thread and logs the final count from `jobs` (the sweep's, read at close)."""
        self._beat.stop()
        self._log(jobs)
