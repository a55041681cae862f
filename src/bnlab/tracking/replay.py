"""Replaying the offline spool: runs that jobs kept in `unsent/` when the store stopped
taking writes are recorded as complete runs by the next launch (or `pipelines/sync.py`).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from bnlab import metrics
from bnlab.redaction import redact_text
from bnlab.tracking import provenance, spool
from bnlab.tracking.retries import StoreUnavailable, file_lock
from bnlab.tracking.scope import Scope
from bnlab.tracking.writer import RunLogger

log = logging.getLogger(__name__)


class SpoolReplay:
    """Records the runs jobs kept offline, as complete runs.

    A spool folder may be written by anyone who can write to it, so an entry is checked
    field by field before use (`spool.check`), and replay changes no run it did not
    create unless that run is in this experiment and carries the entry's identity.
    A part of `Store`.
    """

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def record_pending(self, root: Path) -> int:
        """Records the runs that jobs kept offline under `root` for this store; returns how many.

        Each becomes one complete run, with its whole history, params, tags and
        artifacts; the partial run its job had opened is deleted (all it held is in
        the new one). A lock on the folder keeps two launches from recording one twice.
        An entry the store refuses is moved to quarantine with one line; the others go on.
        """
        root = Path(root)
        if not root.is_dir():
            return 0
        recorded = 0
        with file_lock(root / ".lock"):
            for saved in spool.pending(root):
                journal = saved.journal
                if (
                    journal.store != redact_text(self.scope.uri)
                    or journal.experiment != self.scope.experiment
                ):
                    continue
                try:
                    self._record_spooled(saved)
                except StoreUnavailable:
                    raise
                except MlflowException as error:
                    spool.quarantine(saved.folder, error)
                    continue
                spool.forget(saved)
                recorded += 1
        if recorded:
            log.info("Recorded %d run(s) that jobs had kept offline in %s", recorded, root)
        return recorded

    def _record_spooled(self, saved: spool.Saved) -> None:
        journal = saved.journal
        identity = journal.tags.get(metrics.IDENTITY_TAG)
        # Runs an earlier sync of this entry created (it stopped before forgetting it).
        earlier = [
            run
            for run in self.scope.search(f"tags.`{metrics.SPOOL_TAG}` = '{journal.run_id}'")
            if run.data.tags.get(metrics.IDENTITY_TAG) == identity
        ]
        if any(run.info.status == journal.status for run in earlier):
            return  # recorded by a sync that stopped before it forgot the folder
        for run in earlier:
            self._remove(run)
        tags = {**journal.tags, metrics.SPOOL_TAG: journal.run_id}
        tags.pop(metrics.HEARTBEAT_TAG, None)
        parent = tags.get(metrics.PARENT_TAG)
        if parent is not None and self._own_run(parent) is None:
            # Its sweep's parent is not in this experiment (a store replaced mid-sweep):
            # the run is recorded on its own rather than pointing nowhere.
            tags.pop(metrics.PARENT_TAG)
        # A job names its user; an entry that does not is the syncing account's.
        tags.setdefault(provenance.USER_TAG, provenance.user())
        run = self.scope.retry(
            lambda: self.scope.client.create_run(
                self.scope.experiment_id,
                start_time=journal.start_time,
                tags=tags,
                run_name=journal.name,
            )
        )
        try:
            self._write(run.info.run_id, saved)
        except BaseException:
            # Half a run would be reused as if whole: the run this sync created goes.
            with contextlib.suppress(Exception):
                self._remove(self.scope.client.get_run(run.info.run_id))
            raise
        partial = self._own_run(journal.run_id)
        if partial is None:
            return  # the job never reached this store
        if identity is not None and partial.data.tags.get(metrics.IDENTITY_TAG) == identity:
            self._remove(partial)
        else:
            log.warning(
                "Spool entry %s: the run of that id carries another identity; left as it is",
                journal.run_id,
            )

    def _write(self, run_id: str, saved: spool.Saved) -> None:
        journal = saved.journal
        # The run's own logger writes it, in the batches a job's writes use.
        logger = RunLogger(self.scope.client, run_id, deadline_seconds=self.scope.deadline_seconds)
        logger.log_params(journal.params)
        logger.log_history(journal.metrics)
        for dataset in journal.datasets:
            logger.log_dataset(**dataset)
        artifacts = saved.folder / spool.ARTIFACTS
        if artifacts.is_dir():
            self.scope.retry(lambda: self.scope.client.log_artifacts(run_id, str(artifacts)))
        self.scope.retry(
            lambda: self.scope.client.set_terminated(
                run_id, status=journal.status, end_time=journal.end_time or None
            )
        )

    def _own_run(self, run_id: str) -> Any | None:
        """The active run `run_id` when it is in this experiment, else None."""
        try:
            run = self.scope.retry(lambda: self.scope.client.get_run(run_id))
        except MlflowException:
            return None  # no such run (a store unavailable raises StoreUnavailable)
        if run.info.experiment_id != self.scope.experiment_id:
            return None
        return run if run.info.lifecycle_stage == "active" else None

    def _remove(self, run: Any) -> None:
        """Deletes a run, ended first: a deleted run is never left RUNNING."""
        run_id = run.info.run_id
        if run.info.status == "RUNNING":
            self.scope.retry(lambda: self.scope.client.set_terminated(run_id, status="KILLED"))
        self.scope.retry(lambda: self.scope.client.delete_run(run_id))
