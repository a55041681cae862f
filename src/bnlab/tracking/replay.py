"""Replaying the offline spool: runs that jobs kept in `unsent/` when the store stopped
taking writes are recorded as complete runs by the next launch (or `pipelines/sync.py`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from mlflow.exceptions import MlflowException

from bnlab import metrics
from bnlab.redaction import redact_text
from bnlab.tracking import provenance, spool
from bnlab.tracking.retries import file_lock
from bnlab.tracking.scope import Scope
from bnlab.tracking.writer import RunLogger

log = logging.getLogger(__name__)


class SpoolReplay:
    """Records the runs jobs kept offline, as complete runs.

    A part of `Store`.
    """

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def record_pending(self, root: Path) -> int:
        """Records the runs that jobs kept offline under `root` for this store; returns how many.

        Each becomes one complete run, with its whole history, params, tags and
        artifacts; the partial run its job had opened is deleted (all it held is in
        the new one). A lock on the folder keeps two launches from recording one twice.
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
                self._record_spooled(saved)
                spool.forget(saved)
                recorded += 1
        if recorded:
            log.info("Recorded %d run(s) that jobs had kept offline in %s", recorded, root)
        return recorded

    def _record_spooled(self, saved: spool.Saved) -> None:
        journal = saved.journal
        earlier = self.scope.search(f"tags.`{metrics.SPOOL_TAG}` = '{journal.run_id}'")
        if any(run.info.status == journal.status for run in earlier):
            return  # recorded by a sync that stopped before it forgot the folder
        for run in earlier:
            self.scope.retry(lambda run=run: self.scope.client.delete_run(run.info.run_id))
        tags = {**journal.tags, metrics.SPOOL_TAG: journal.run_id}
        tags.pop(metrics.HEARTBEAT_TAG, None)
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
        run_id = run.info.run_id
        # The run's own logger writes it, in the batches a job's writes use.
        logger = RunLogger(self.scope.client, run_id, deadline_seconds=self.scope.deadline_seconds)
        logger.log_params(journal.params)
        logger.log_history(journal.metrics)
        for dataset in journal.datasets:
            logger.log_dataset(**dataset)
        self.scope.retry(
            lambda: self.scope.client.log_artifacts(run_id, str(saved.folder / spool.ARTIFACTS))
        )
        self.scope.retry(
            lambda: self.scope.client.set_terminated(
                run_id, status=journal.status, end_time=journal.end_time or None
            )
        )
        try:
            partial = self.scope.retry(lambda: self.scope.client.get_run(journal.run_id))
        except MlflowException:
            return  # the job never reached the store
        if partial.info.lifecycle_stage == "active":
            self.scope.retry(lambda: self.scope.client.delete_run(journal.run_id))
