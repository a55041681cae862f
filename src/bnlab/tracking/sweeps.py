"""Sweep bookkeeping: finding a launch's parent run, reading its jobs in one search,
counting their outcomes and describing the sweep.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from mlflow.entities import RunTag

from bnlab import metrics
from bnlab.redaction import redact_text
from bnlab.tracking import queries
from bnlab.tracking.scope import Scope

log = logging.getLogger(__name__)

# The outcomes a sweep's parent counts, in the order they are shown.
COUNTED_OUTCOMES = (
    metrics.FINISHED,
    metrics.DIVERGED,
    metrics.PRUNED,
    metrics.FAILED,
    metrics.KILLED,
    metrics.SKIPPED,
)


# MLflow shows this tag as the description of an experiment or run (Markdown).
NOTE_TAG = "mlflow.note.content"


def last_sign_of_life(run: Any) -> float:
    """Unix time of a run's last heartbeat (its start when it has none yet)."""
    stamp = run.data.tags.get(metrics.HEARTBEAT_TAG)
    try:
        return float(stamp)
    except (TypeError, ValueError):
        return run.info.start_time / 1000


def is_live(run: Any, stale_after_seconds: float) -> bool:
    """RUNNING with a heartbeat younger than `stale_after_seconds`."""
    return (
        run.info.status == "RUNNING" and time.time() - last_sign_of_life(run) <= stale_after_seconds
    )


class SweepBook:
    """A sweep's bookkeeping in the store: its parent, its jobs, their counts.

    A part of `Store`; a job is live when its heartbeat is younger than `stale_after_seconds`.
    """

    def __init__(self, scope: Scope, stale_after_seconds: float) -> None:
        self.scope = scope
        self.stale_after_seconds = stale_after_seconds

    def find_run(self, tags: Mapping[str, str]) -> str | None:
        """The newest run carrying all of `tags`, if any."""
        condition = " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
        runs = self.scope.retry(
            lambda: self.scope.client.search_runs(
                [self.scope.experiment_id],
                filter_string=condition,
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
        )
        return runs[0].info.run_id if runs else None

    def sweep_parent(self, sweep_id: str) -> tuple[str | None, set[str]]:
        """The parent run of the launch `sweep_id` and the keys its jobs vary, in one search."""
        parent = queries.sweep_parent(self.scope.client, self.scope.experiment_id, sweep_id)
        if parent is None:
            return None, set()
        return parent.info.run_id, queries.recorded_varying_keys(parent)

    def mark_skipped(self, parent_run_id: str, identity: str, reused_run_id: str) -> None:
        """Records on a sweep's parent that one of its jobs reused a complete run."""
        self.scope.retry(
            lambda: self.scope.client.set_tag(
                parent_run_id, f"{metrics.SKIPPED_TAG_PREFIX}{identity}", reused_run_id
            )
        )

    def sweep_jobs(self, parent_run_id: str) -> list[dict[str, Any]]:
        """Every job of a sweep, read back from the store in one search of its children
        (with whether each is live) and one read of the parent (its skips)."""
        jobs = [
            {
                "run_id": run.info.run_id,
                "name": run.info.run_name,
                "outcome": run.data.tags.get(metrics.OUTCOME_TAG, "unknown"),
                "status": run.info.status,
                "identity": run.data.tags.get(metrics.IDENTITY_TAG),
                "error": run.data.tags.get(metrics.ERROR_TAG),
                "objective": run.data.metrics.get(metrics.OBJECTIVE),
                "live": is_live(run, self.stale_after_seconds),
                # Unix time of its last heartbeat (its start before the first).
                "beat": last_sign_of_life(run),
                "host": run.data.tags.get("host"),
                "pid": run.data.tags.get("pid"),
            }
            for run in self.scope.search(f"tags.`{metrics.PARENT_TAG}` = '{parent_run_id}'")
        ]
        parent = self.scope.retry(lambda: self.scope.client.get_run(parent_run_id))
        jobs += [
            {
                "run_id": value,
                "outcome": metrics.SKIPPED,
                "identity": key.removeprefix(metrics.SKIPPED_TAG_PREFIX),
            }
            for key, value in parent.data.tags.items()
            if key.startswith(metrics.SKIPPED_TAG_PREFIX)
        ]
        return jobs

    def write_counts(self, parent_run_id: str) -> tuple[dict[str, int], list[dict[str, Any]]]:
        """Counts a sweep's jobs by outcome from the store; writes them and jobs.json."""
        jobs = self.sweep_jobs(parent_run_id)
        found = Counter(job["outcome"] for job in jobs)
        counts = {"launched": len(jobs)} | {key: found.get(key, 0) for key in COUNTED_OUTCOMES}
        tags = [
            RunTag(f"{metrics.COUNT_TAG_PREFIX}{key}", str(value)) for key, value in counts.items()
        ]
        self.scope.retry(lambda: self.scope.client.log_batch(parent_run_id, tags=tags))
        text = redact_text(json.dumps(jobs, indent=2))
        self.scope.retry(lambda: self.scope.client.log_text(parent_run_id, text, "jobs.json"))
        return counts, jobs

    def with_results(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`jobs` (from `sweep_jobs`) with the name and objective of the runs skips reused.

        Children carry theirs already; the reused runs are read in one search per 100.
        """
        reused = [job["run_id"] for job in jobs if job["outcome"] == metrics.SKIPPED]
        found = {}
        for start in range(0, len(reused), 100):
            chunk = ", ".join(f"'{run_id}'" for run_id in reused[start : start + 100])
            for run in self.scope.search(f"attributes.run_id IN ({chunk})"):
                found[run.info.run_id] = {
                    "name": run.info.run_name,
                    "objective": run.data.metrics.get(metrics.OBJECTIVE),
                }
        return [job | found.get(job["run_id"], {}) for job in jobs]

    def describe(self, run_id: str, markdown: str) -> None:
        """Sets a run's description, which the UI shows on its page."""
        self.scope.retry(lambda: self.scope.client.set_tag(run_id, NOTE_TAG, redact_text(markdown)))
