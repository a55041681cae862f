"""A launch recorded as a parent run: opened, watched while its jobs run, closed with counts.

A grid sweep and an Optuna search record their parent runs through the same
`SweepRecorder`; their jobs find it in the store by the sweep id.
"""

from __future__ import annotations

import _thread
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bnlab import interrupts, metrics, tracking
from bnlab.config import ConfigError
from bnlab.config.keys import spell_override
from bnlab.sweep.progress import Progress
from bnlab.tracking import links, provenance

log = logging.getLogger("bnlab.sweep.callback")


def _alive_here(job: dict[str, Any]) -> bool:
    """Whether a job's process still runs on this machine: its heartbeat can stop while it
    lives (a full disk or a store that refuses writes: it goes on offline), so a stopped
    heartbeat alone does not make it dead."""
    pid = str(job.get("pid") or "")
    if job.get("host") != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has died; only its parent has not reaped it yet
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class SweepRecorder:
    """A launch's parent run: opened with a heartbeat, counted and closed from the store."""

    def __init__(
        self,
        store: tracking.Store,
        run: tracking.RunLogger,
        sweep_id: str,
        progress: Progress | None = None,
    ) -> None:
        self.store = store
        self.run = run
        self.sweep_id = sweep_id
        self.progress = progress
        # Set by the watchdog when the launcher waits for a job that the store shows dead.
        self.launcher_stuck = False
        # Set at close: jobs of this launch that left no record (they could not reach
        # the store before opening their runs; each said so in its own line).
        self.unrecorded = 0
        # Set once the parent run has its final status: a close interrupted after that
        # point leaves nothing to close again.
        self.ended = False
        self._stuck_since: float | None = None

    def watch(self, jobs: list[dict[str, Any]]) -> None:
        """Ends a launch whose launcher waits forever for a job whose process died.

        Without Slurm accounting, submitit cannot see that a cancelled job ended and
        waits for its result for ever. The store knows: every job of the launch is
        recorded, none is live, and one is still RUNNING with a stopped heartbeat. When
        that lasts `stale_after_seconds`, the main thread is interrupted and the sweep
        closes from the store (`launcher_failed`). It reads the jobs the progress line's
        poll read (`Progress`), so each poll is one search of the store.
        """
        dead = [
            job
            for job in jobs
            if job.get("status") == "RUNNING" and not job.get("live") and not _alive_here(job)
        ]
        live = [job for job in jobs if job.get("live")]
        ended = len(jobs) >= self.progress.total and not live
        if not (ended and dead):
            self._stuck_since = None
            return
        if self._stuck_since is None:
            self._stuck_since = time.monotonic()
        elif time.monotonic() - self._stuck_since > self.store.stale_after_seconds:
            log.warning(
                "Every job has ended in the store, but the launcher still waits for %d whose "
                "process died; closing the sweep from the store",
                len(dead),
            )
            self.launcher_stuck = True
            self.progress.stop()
            _thread.interrupt_main()

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @classmethod
    def open(
        cls,
        config: DictConfig,
        role: str,
        name: str,
        params: dict[str, Any],
        tags: dict[str, str] | None = None,
        reuse: dict[str, str] | None = None,
        total: int | None = None,
    ) -> SweepRecorder:
        """Opens the parent run of this launch (or reopens the newest run matching `reuse`).

        Runs left RUNNING by dead processes are closed first, so their cells are
        trained again and their parents carry counts. With `total` (the jobs this
        launch will run), a `k/N done, ETA` line is logged as jobs end.
        """
        store = tracking.open_store(OmegaConf.to_object(config.tracking))
        store.live.reap_stale()
        # Results jobs kept offline are recorded first, so their cells are not trained again.
        store.spool.record_pending(Path(config.hydra.runtime.cwd) / config.tracking.spool_dir)
        # Drawn here, in the launching process, before any job starts; Hydra hands
        # every job this cached value.
        sweep_id = config.tracking.sweep_id
        if store.sweeps.find_run({metrics.SWEEP_ID_TAG: sweep_id}):
            raise ConfigError(
                f"tracking.sweep_id: '{sweep_id}' already names another launch "
                "(leave it unset: each launch draws its own)"
            )
        all_tags = {
            metrics.ROLE_TAG: role,
            metrics.SWEEP_ID_TAG: sweep_id,
            metrics.OVERRIDES_TAG: json.dumps(
                [spell_override(o) for o in config.hydra.overrides.task]
            ),
            **provenance.git_tags(),
            **(tags or {}),
        }
        adopted = tracking.active_run_id_from_env()
        existing = store.sweeps.find_run(reuse) if reuse and not adopted else None
        if adopted:
            run = store.adopt_run(adopted, all_tags, name=name)
        elif existing:
            run = store.reopen_run(existing)
            run.set_tags(all_tags)
        else:
            run = store.start_run(name, all_tags)
        run.log_params(params)
        # Quiet: a store that stops answering is said once, when the sweep closes.
        run.start_heartbeat(config.tracking.heartbeat_seconds, quiet=True)
        log.info(
            "Sweep %s: parent run %s in experiment '%s'", sweep_id, run.run_id, store.experiment
        )
        recorder = cls(store, run, sweep_id)
        if total:
            recorder.progress = Progress(
                lambda: store.sweeps.sweep_jobs(run.run_id),
                total,
                f"Sweep {sweep_id}",
                # One search of the store per poll, for the line and the watchdog both,
                # every half heartbeat: a job whose stamps stop (more than 1.2 heartbeats
                # without one) is shown stale within two heartbeat intervals.
                max(config.tracking.heartbeat_seconds / 2, 1.0),
                watch=recorder.watch,
                quiet_seconds=1.2 * config.tracking.heartbeat_seconds,
            )
        return recorder

    def wait_for_jobs(self, poll_seconds: float = 2.0) -> None:
        """Returns once no job of this sweep is training and no new one has appeared.

        After a launcher gave up on one job (its process was killed on the cluster), the
        others still run there; the store shows when they are done. A job that never
        reached the store stops the wait after `stale_after_seconds` of quiet.
        """
        total = self.progress.total if self.progress is not None else 0
        quiet_limit = self.store.stale_after_seconds
        seen, changed = -1, time.monotonic()
        while True:
            interrupts.check()
            jobs = self.store.sweeps.sweep_jobs(self.run_id)
            count = len(jobs)
            if count != seen:
                seen, changed = count, time.monotonic()
            if not any(job.get("live") for job in jobs) and (
                count >= total or time.monotonic() - changed > quiet_limit
            ):
                return
            time.sleep(poll_seconds)

    def close(self, interrupted: bool) -> list[dict[str, Any]]:
        """Counts the jobs' outcomes from the store, records them and closes the parent.

        The parent ends KILLED when the launch was interrupted, FAILED when a job
        failed, was killed or left no record, FINISHED otherwise.

        Returns:
            The jobs that failed or were killed.
        """
        self.run.stop_heartbeat()
        if self.progress is not None:
            self.progress.stop()
        self.store.live.close_stale_children(self.run_id)
        counts, jobs = self.store.sweeps.write_counts(self.run_id)
        if self.progress is not None:
            self.progress.finish(jobs)
        failed = [job for job in jobs if job["outcome"] in (metrics.FAILED, metrics.KILLED)]
        if self.progress is not None:
            self.unrecorded = max(self.progress.total - len(jobs), 0)
        bad = failed or self.unrecorded
        status = "KILLED" if interrupted else ("FAILED" if bad else "FINISHED")
        self.store.sweeps.describe(
            self.run_id,
            sweep_note(
                self.sweep_id, self.run_id, status, counts, self.store.sweeps.with_results(jobs)
            ),
        )
        if self.run.owned:
            self.run.end_status(status)
        self.ended = True
        log.info("Sweep %s: %s", status.lower(), ", ".join(f"{k} {v}" for k, v in counts.items()))
        for line in links.browse_lines(self.store.uri, self.store.experiment_id, self.store.ui_url):
            log.info(line)
        return failed


def sweep_note(
    sweep_id: str,
    run_id: str,
    status: str,
    counts: dict[str, int],
    jobs: list[dict[str, Any]],
) -> str:
    """The parent's description (Markdown): outcome counts, the best job, the report."""
    shown = ", ".join(f"{value} {key}" for key, value in counts.items() if value)
    lines = [f"**Sweep `{sweep_id}`**: {status.lower()}; jobs: {shown or 'none'}.", ""]
    scored = [r for r in jobs if r.get("objective") is not None]
    if scored:
        best = max(scored, key=lambda r: r["objective"])
        lines.append(
            f"Best job: **{best['name']}**, best validation accuracy {best['objective']:.3f} "
            f"(run `{best['run_id']}`)."
        )
        lines.append("")
    lines.append(
        "Report: `report/index.html` in this run's artifacts, written by `pipelines/study.py` "
        f"or `python pipelines/report.py --parent-run {run_id}`."
    )
    return "\n".join(lines)


def swept_keys(jobs: list[list[str]]) -> list[str]:
    """The override keys whose value differs between jobs, in command-line order."""
    values: dict[str, set[str]] = {}
    for overrides in jobs:
        for override in overrides:
            key, _, value = override.partition("=")
            values.setdefault(key.lstrip("+~"), set()).add(value)
    return [key for key, seen in values.items() if len(seen) > 1]


def sweep_name(sweep_id: str, jobs: int) -> str:
    """A parent's short name: `sweep 3f2a9c (12 jobs)`; the full command is in its params."""
    return f"sweep {sweep_id[:6]} ({jobs} jobs)"
