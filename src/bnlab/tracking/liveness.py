"""Liveness: heartbeats read back from the store, runs that lost their process closed as
KILLED (at launch, and by a job that finds or waits for a dead rival), with their
sweep parents once those are dead too.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from mlflow.entities import RunTag

from bnlab import interrupts, metrics
from bnlab.tracking.scope import Scope
from bnlab.tracking.sweeps import SweepBook, is_live, last_sign_of_life

log = logging.getLogger(__name__)

# How often a job waiting for a live run with its identity looks again.
WAIT_POLL_SECONDS = 2.0


@dataclass
class LiveRun:
    """A RUNNING run whose heartbeat is recent."""

    run_id: str
    start_time: int


class Liveness:
    """Heartbeats read back: which runs are alive, waiting on a rival, closing the dead.

    A part of `Store`: it closes a dead sweep parent with its counts from `sweeps`.
    """

    def __init__(self, scope: Scope, stale_after_seconds: float, sweeps: SweepBook) -> None:
        self.scope = scope
        self.stale_after_seconds = stale_after_seconds
        self.sweeps = sweeps

    def is_live(self, run: Any) -> bool:
        """RUNNING with a heartbeat younger than the staleness limit."""
        return is_live(run, self.stale_after_seconds)

    def live_runs(self, identity: str) -> list[LiveRun]:
        """Runs with this identity that are training now, oldest first.

        A RUNNING run with this identity whose heartbeat stopped is a ghost of a dead
        process: it is closed here (see `bury`), so the job that found it leaves none.
        """
        runs = self.scope.search(
            f"tags.{metrics.IDENTITY_TAG} = '{identity}' and attributes.status = 'RUNNING'"
        )
        for run in runs:
            if metrics.ROLE_TAG in run.data.tags and not self.is_live(run):
                self.bury(run)
        live = [LiveRun(run.info.run_id, run.info.start_time) for run in runs if self.is_live(run)]
        return sorted(live, key=lambda run: (run.start_time, run.run_id))

    def wait_while_live(self, run_id: str) -> None:
        """Returns once `run_id` has ended, or once its heartbeat has stopped.

        A run whose heartbeat stopped lost its process (a `kill -9`, a lost node): it is
        closed as KILLED here, with its sweep parent once that parent is dead too, so a
        relaunch right after a crash leaves no run RUNNING behind it.
        """
        while True:
            interrupts.check()
            run = self.scope.retry(lambda: self.scope.client.get_run(run_id))
            if run.info.status != "RUNNING":
                return
            if not self.is_live(run):
                self.bury(run)
                return
            time.sleep(WAIT_POLL_SECONDS)

    def bury(self, run: Any) -> None:
        """Closes a run whose heartbeat stopped as KILLED, then its sweep parent once that
        parent is dead too and none of its children is live."""
        self._close_dead(run)
        parent = run.data.tags.get(metrics.PARENT_TAG)
        if parent:
            self._close_dead_parent(parent)

    def _close_dead_parent(self, parent_run_id: str) -> None:
        """Closes a sweep parent whose own heartbeat stopped and whose children are all
        dead. Its process died with its job's, so its stamp goes stale within a heartbeat
        of the job's: wait up to the staleness limit for that, and leave a parent that
        still beats or has a live child (a sweep that lost one worker goes on)."""
        deadline = time.monotonic() + self.stale_after_seconds
        while True:
            interrupts.check()
            parent = self.scope.retry(lambda: self.scope.client.get_run(parent_run_id))
            if parent.info.status != "RUNNING":
                # Closed already (a launch reaped it while this job's stamp was fresher):
                # its counts are read again, so they include the job just closed.
                if parent.data.tags.get(metrics.ROLE_TAG) in ("sweep", "search"):
                    self.sweeps.write_counts(parent_run_id)
                return
            if self.live_children(parent_run_id):
                return
            if not self.is_live(parent):
                self._close_dead(parent)
                return
            if time.monotonic() > deadline:
                return
            time.sleep(min(WAIT_POLL_SECONDS, self.stale_after_seconds / 4))

    def _close_dead(self, run: Any) -> None:
        """Closes a RUNNING run whose heartbeat stopped as KILLED, saying since when; a
        sweep or search parent also gets its job counts."""
        run_id = run.info.run_id
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last_sign_of_life(run)))
        self.scope.retry(
            lambda: self.scope.client.log_batch(
                run_id,
                tags=[
                    RunTag(metrics.OUTCOME_TAG, metrics.KILLED),
                    RunTag(metrics.ERROR_TAG, f"no heartbeat since {since}: its process died"),
                ],
            )
        )
        if run.data.tags.get(metrics.ROLE_TAG) in ("sweep", "search"):
            self.sweeps.write_counts(run_id)
        self.scope.retry(lambda: self.scope.client.set_terminated(run_id, status="KILLED"))
        log.info("Closed run %s as KILLED: no heartbeat since %s", run_id, since)

    def reap_stale(self) -> list[str]:
        """Closes as KILLED every RUNNING run of ours whose heartbeat has stopped.

        Its process died without closing it (SIGKILL, a lost node). A stale sweep
        parent also gets its job counts. Runs this project did not create (no
        role tag, e.g. `mlflow run`'s before it hands over) are left alone.

        Returns:
            The ids of the runs closed.
        """
        stale = [
            run
            for run in self.scope.search("attributes.status = 'RUNNING'")
            if metrics.ROLE_TAG in run.data.tags and not self.is_live(run)
        ]
        # Jobs before their parents, so a parent's counts include its dead jobs.
        stale.sort(key=lambda run: run.data.tags.get(metrics.ROLE_TAG) in ("sweep", "search"))
        for run in stale:
            self._close_dead(run)
        return [run.info.run_id for run in stale]

    def live_children(self, parent_run_id: str) -> list[str]:
        """The jobs of a sweep that are training now (RUNNING, with a recent heartbeat)."""
        return [
            run.info.run_id
            for run in self.scope.search(
                f"tags.`{metrics.PARENT_TAG}` = '{parent_run_id}' and attributes.status = 'RUNNING'"
            )
            if self.is_live(run)
        ]

    def close_stale_children(self, parent_run_id: str) -> None:
        """Children still RUNNING when their sweep ends lost their process: KILLED."""
        for child in self.scope.search(f"tags.`{metrics.PARENT_TAG}` = '{parent_run_id}'"):
            if child.info.status == "RUNNING":
                run_id = child.info.run_id
                reason = (
                    "still RUNNING when its sweep ended: its process was killed, or it kept "
                    "its results offline (unsent/ where it ran)"
                )
                tags = [RunTag(metrics.OUTCOME_TAG, metrics.KILLED)]
                if metrics.ERROR_TAG not in child.data.tags:
                    tags.append(RunTag(metrics.ERROR_TAG, reason))
                self.scope.retry(
                    lambda run_id=run_id, tags=tags: self.scope.client.log_batch(run_id, tags=tags)
                )
                self.scope.retry(
                    lambda run_id=run_id: self.scope.client.set_terminated(run_id, status="KILLED")
                )
