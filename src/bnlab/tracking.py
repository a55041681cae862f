"""Writing to the MLflow store: job runs, sweep parent runs, heartbeats and reports.

This module and `tracking_read` are the only ones that import mlflow; this one
writes, `tracking_read` reads runs back for the report.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException, RestException

from bnlab import interrupts, metrics, spool, system_metrics, tracking_read
from bnlab.config import ConfigError, TrackingConfig
from bnlab.heartbeat import Heartbeat
from bnlab.redaction import redact_file, redact_text
from bnlab.retries import (
    STORE_SIDE_CODES,
    StoreUnavailable,
    file_lock,
    retry,
    set_deadline,
    sqlite_schema_lock,
    treat_as_server_errors,
)
from bnlab.store_uri import sqlite_path
from bnlab.tracking_read import search_all

log = logging.getLogger(__name__)
treat_as_server_errors(RestException)
# MLflow's system-metrics monitor logs its start and stop at INFO for every job.

# Longest time a logged metric waits in memory before it is written to the store
# (a SIGKILL loses at most this much of a job's curve).
FLUSH_SECONDS = 5.0
# MLflow caps a param value at 6,000 characters; longer values are cut with a marker.
MAX_PARAM_LENGTH = 6000
# How often a job waiting for a live run with its identity looks again.
WAIT_POLL_SECONDS = 2.0

_STATUS_OF_OUTCOME = {
    metrics.FINISHED: "FINISHED",
    metrics.DIVERGED: "FINISHED",
    metrics.PRUNED: "FINISHED",
    metrics.FAILED: "FAILED",
    metrics.KILLED: "KILLED",
}
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
EXPERIMENT_NOTE = """**What Batch Normalization does to training**, measured: the small Keras CNN
of *"one simple trick to train a Keras model faster with Batch Normalization"* on MNIST,
trained with and without BN across learning rates, activations and seeds (Adam, batch 32).

- Each sweep is a parent run named `sweep <id> (<n> jobs)`; its jobs are nested under it,
  named `BN relu lr=0.01 s0` (variant, activation, learning rate, seed).
- In the runs table, **Group by → bn** puts the two variants side by side; the chart view
  plots `val/accuracy` against the training step.
- The report (figures, per-seed statistics, claims) is in a sweep parent's artifacts under
  `report/index.html` once `pipelines/study.py` or `pipelines/report.py --parent-run ID` ran.
"""


def _artifact_location(uri: str, experiment: str) -> str | None:
    """Keeps a SQLite store's artifacts next to its database file."""
    database = sqlite_path(uri)
    if database is None:
        return None
    return (database.resolve().parent / "mlartifacts" / experiment).as_uri()


@dataclass
class CompletedRun:
    """A run whose whole schedule was trained, found by identity."""

    run_id: str
    outcome: str
    metrics: dict[str, float]


@dataclass
class LiveRun:
    """A RUNNING run whose heartbeat is recent."""

    run_id: str
    start_time: int


def _last_sign_of_life(run: Any) -> float:
    """Unix time of a run's last heartbeat (its start when it has none yet)."""
    stamp = run.data.tags.get(metrics.HEARTBEAT_TAG)
    try:
        return float(stamp)
    except (TypeError, ValueError):
        return run.info.start_time / 1000


class Store:
    """One MLflow tracking store and experiment."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        stale_after_seconds: float = 60.0,
        ui_url: str | None = None,
        connect_seconds: float = 30.0,
    ) -> None:
        self.uri = uri
        self.ui_url = ui_url
        self.experiment = experiment
        self.stale_after_seconds = stale_after_seconds
        with sqlite_schema_lock(uri):
            self.client = retry(lambda: MlflowClient(tracking_uri=uri))
            adopted = active_run_id_from_env()
            if adopted:
                # Under `mlflow run`, everything goes to the experiment of its run, so
                # the sweep's jobs nest under it in the UI.
                run = retry(lambda: self.client.get_run(adopted))
                self.experiment_id = run.info.experiment_id
                self.experiment = self.client.get_experiment(self.experiment_id).name
            else:
                self.experiment_id = self._first_contact(connect_seconds)

    def _first_contact(self, seconds: float) -> str:
        """Finds or creates the experiment; a store that does not answer is a bad URI."""
        try:
            return retry(self._get_or_create_experiment, deadline=seconds)
        except StoreUnavailable as error:
            raise ConfigError(
                f"tracking.uri: no tracking store answers at {redact_text(self.uri)} "
                f"within {seconds:g} s ({error})"
            ) from error

    def _get_or_create_experiment(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None and found.lifecycle_stage != "deleted":
            if NOTE_TAG not in found.tags:
                self.client.set_experiment_tag(found.experiment_id, NOTE_TAG, EXPERIMENT_NOTE)
            return found.experiment_id
        if found is not None:  # deleted: MLflow would refuse every write to it
            raise ConfigError(
                f"tracking.experiment: '{self.experiment}' was deleted; restore it with "
                f"`mlflow experiments restore --experiment-id {found.experiment_id}` "
                "(with MLFLOW_TRACKING_URI set to this store) or pick another name "
                "with tracking.experiment=NAME"
            )
        try:
            return self.client.create_experiment(
                self.experiment,
                artifact_location=_artifact_location(self.uri, self.experiment),
                tags={NOTE_TAG: EXPERIMENT_NOTE},
            )
        except MlflowException:
            # Another process created it between our lookup and our insert.
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return found.experiment_id

    def _search(self, filter_string: str, order_by: list[str] | None = None) -> list[Any]:
        return search_all(self.client, [self.experiment_id], filter_string, order_by)

    def is_live(self, run: Any) -> bool:
        """RUNNING with a heartbeat younger than the staleness limit."""
        return (
            run.info.status == "RUNNING"
            and time.time() - _last_sign_of_life(run) <= self.stale_after_seconds
        )

    def find_complete_run(self, identity: str) -> CompletedRun | None:
        """The newest run with this identity that trained its whole schedule, if any."""
        runs = self._search(
            f"tags.{metrics.IDENTITY_TAG} = '{identity}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
        )
        runs = [
            run
            for run in runs
            if run.data.tags.get(metrics.OUTCOME_TAG) in metrics.COMPLETE_OUTCOMES
        ]
        if not runs:
            return None
        run = runs[0]
        return CompletedRun(
            run.info.run_id, run.data.tags[metrics.OUTCOME_TAG], dict(run.data.metrics)
        )

    def live_runs(self, identity: str) -> list[LiveRun]:
        """Runs with this identity that are training now, oldest first.

        A RUNNING run with this identity whose heartbeat stopped is a ghost of a dead
        process: it is closed here (see `bury`), so the job that found it leaves none.
        """
        runs = self._search(
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
            run = retry(lambda: self.client.get_run(run_id))
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
            parent = retry(lambda: self.client.get_run(parent_run_id))
            if parent.info.status != "RUNNING" or self.live_children(parent_run_id):
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
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(_last_sign_of_life(run)))
        retry(
            lambda: self.client.log_batch(
                run_id,
                tags=[
                    RunTag(metrics.OUTCOME_TAG, metrics.KILLED),
                    RunTag(metrics.ERROR_TAG, f"no heartbeat since {since}: its process died"),
                ],
            )
        )
        if run.data.tags.get(metrics.ROLE_TAG) in ("sweep", "search"):
            self.write_counts(run_id)
        retry(lambda: self.client.set_terminated(run_id, status="KILLED"))
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
            for run in self._search("attributes.status = 'RUNNING'")
            if metrics.ROLE_TAG in run.data.tags and not self.is_live(run)
        ]
        for run in stale:
            self._close_dead(run)
        return [run.info.run_id for run in stale]

    def start_run(
        self, name: str, tags: Mapping[str, str], parent_run_id: str | None = None
    ) -> RunLogger:
        """Creates a run (nested under `parent_run_id` when given) and returns its logger."""
        all_tags = {key: redact_text(str(value)) for key, value in tags.items()}
        all_tags[metrics.HEARTBEAT_TAG] = f"{time.time():.3f}"
        if parent_run_id:
            all_tags[metrics.PARENT_TAG] = parent_run_id
        run = retry(
            lambda: self.client.create_run(
                self.experiment_id, tags=all_tags, run_name=redact_text(name)
            )
        )
        logger = RunLogger(self.client, run.info.run_id, start_time=run.info.start_time)
        logger.journal.tags.update(all_tags)
        logger.journal.name = redact_text(name)
        self._describe_journal(logger)
        return logger

    def _describe_journal(self, logger: RunLogger) -> None:
        logger.journal.experiment = self.experiment
        logger.journal.store = redact_text(self.uri)

    def adopt_run(self, run_id: str, tags: Mapping[str, str], name: str | None = None) -> RunLogger:
        """Logs into a run someone else created, e.g. the run of `mlflow run`.

        Params that run already holds (MLflow logs an entry point's parameters)
        are kept as they are: MLflow refuses to change a logged param.
        """
        existing = retry(lambda: self.client.get_run(run_id))
        logger = RunLogger(self.client, run_id, owned=False, start_time=existing.info.start_time)
        logger.preset_params = set(existing.data.params)
        logger.journal.name = redact_text(name or existing.info.run_name)
        self._describe_journal(logger)
        logger.set_tags({**tags, metrics.HEARTBEAT_TAG: f"{time.time():.3f}"})
        if name:
            retry(lambda: self.client.update_run(run_id, name=redact_text(name)))
        return logger

    def find_run(self, tags: Mapping[str, str]) -> str | None:
        """The newest run carrying all of `tags`, if any."""
        condition = " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
        runs = retry(
            lambda: self.client.search_runs(
                [self.experiment_id],
                filter_string=condition,
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
        )
        return runs[0].info.run_id if runs else None

    def sweep_parent(self, sweep_id: str) -> tuple[str | None, set[str]]:
        """The parent run of the launch `sweep_id` and the keys its jobs vary, in one search."""
        parent = tracking_read.sweep_parent(self.client, self.experiment_id, sweep_id)
        if parent is None:
            return None, set()
        return parent.info.run_id, tracking_read.varying_keys(parent)

    def reopen_run(self, run_id: str) -> RunLogger:
        """Marks a run RUNNING again (a resumed search) and returns its logger."""
        retry(lambda: self.client.update_run(run_id, status="RUNNING"))
        run = retry(lambda: self.client.get_run(run_id))
        logger = RunLogger(self.client, run_id, start_time=run.info.start_time)
        logger.set_tags({metrics.HEARTBEAT_TAG: f"{time.time():.3f}"})
        logger.preset_params = set(run.data.params)
        return logger

    def mark_skipped(self, parent_run_id: str, identity: str, reused_run_id: str) -> None:
        """Records on a sweep's parent that one of its jobs reused a complete run."""
        retry(
            lambda: self.client.set_tag(
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
                "live": self.is_live(run),
            }
            for run in self._search(f"tags.`{metrics.PARENT_TAG}` = '{parent_run_id}'")
        ]
        parent = retry(lambda: self.client.get_run(parent_run_id))
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
        retry(lambda: self.client.log_batch(parent_run_id, tags=tags))
        text = redact_text(json.dumps(jobs, indent=2))
        retry(lambda: self.client.log_text(parent_run_id, text, "jobs.json"))
        return counts, jobs

    def with_results(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`jobs` (from `sweep_jobs`) with the name and objective of the runs skips reused.

        Children carry theirs already; the reused runs are read in one search per 100.
        """
        reused = [job["run_id"] for job in jobs if job["outcome"] == metrics.SKIPPED]
        found = {}
        for start in range(0, len(reused), 100):
            chunk = ", ".join(f"'{run_id}'" for run_id in reused[start : start + 100])
            for run in self._search(f"attributes.run_id IN ({chunk})"):
                found[run.info.run_id] = {
                    "name": run.info.run_name,
                    "objective": run.data.metrics.get(metrics.OBJECTIVE),
                }
        return [job | found.get(job["run_id"], {}) for job in jobs]

    def describe(self, run_id: str, markdown: str) -> None:
        """Sets a run's description, which the UI shows on its page."""
        retry(lambda: self.client.set_tag(run_id, NOTE_TAG, redact_text(markdown)))

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
                if journal.store != redact_text(self.uri) or journal.experiment != self.experiment:
                    continue
                self._record_spooled(saved)
                spool.forget(saved)
                recorded += 1
        if recorded:
            log.info("Recorded %d run(s) that jobs had kept offline in %s", recorded, root)
        return recorded

    def _record_spooled(self, saved: spool.Saved) -> None:
        journal = saved.journal
        earlier = self._search(f"tags.`{metrics.SPOOL_TAG}` = '{journal.run_id}'")
        if any(run.info.status == journal.status for run in earlier):
            return  # recorded by a sync that stopped before it forgot the folder
        for run in earlier:
            retry(lambda run=run: self.client.delete_run(run.info.run_id))
        tags = {**journal.tags, metrics.SPOOL_TAG: journal.run_id}
        tags.pop(metrics.HEARTBEAT_TAG, None)
        run = retry(
            lambda: self.client.create_run(
                self.experiment_id, start_time=journal.start_time, tags=tags, run_name=journal.name
            )
        )
        run_id = run.info.run_id
        # The run's own logger writes it, in the batches a job's writes use.
        logger = RunLogger(self.client, run_id)
        logger.log_params(journal.params)
        logger.log_history(journal.metrics)
        for dataset in journal.datasets:
            logger.log_dataset(**dataset)
        retry(lambda: self.client.log_artifacts(run_id, str(saved.folder / spool.ARTIFACTS)))
        retry(
            lambda: self.client.set_terminated(
                run_id, status=journal.status, end_time=journal.end_time or None
            )
        )
        try:
            partial = retry(lambda: self.client.get_run(journal.run_id))
        except MlflowException:
            return  # the job never reached the store
        if partial.info.lifecycle_stage == "active":
            retry(lambda: self.client.delete_run(journal.run_id))

    def live_children(self, parent_run_id: str) -> list[str]:
        """The jobs of a sweep that are training now (RUNNING, with a recent heartbeat)."""
        return [
            run.info.run_id
            for run in self._search(
                f"tags.`{metrics.PARENT_TAG}` = '{parent_run_id}' and attributes.status = 'RUNNING'"
            )
            if self.is_live(run)
        ]

    def close_stale_children(self, parent_run_id: str) -> None:
        """Children still RUNNING when their sweep ends lost their process: KILLED."""
        for child in self._search(f"tags.`{metrics.PARENT_TAG}` = '{parent_run_id}'"):
            if child.info.status == "RUNNING":
                run_id = child.info.run_id
                reason = (
                    "still RUNNING when its sweep ended: its process was killed, or it kept "
                    "its results offline (unsent/ where it ran)"
                )
                tags = [RunTag(metrics.OUTCOME_TAG, metrics.KILLED)]
                if metrics.ERROR_TAG not in child.data.tags:
                    tags.append(RunTag(metrics.ERROR_TAG, reason))
                retry(lambda run_id=run_id, tags=tags: self.client.log_batch(run_id, tags=tags))
                retry(lambda run_id=run_id: self.client.set_terminated(run_id, status="KILLED"))


class RunLogger:
    """Writes one run's params, metrics, tags and artifacts, and keeps its heartbeat."""

    def __init__(
        self, client: MlflowClient, run_id: str, owned: bool = True, start_time: int = 0
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.start_time = start_time
        # A run we did not create (mlflow run's) is closed by its creator.
        self.owned = owned
        self.preset_params: set[str] = set()
        self._buffer: list[Metric] = []
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()
        self._heartbeat: Heartbeat | None = None
        self._system_metrics: Any = None
        # Everything logged, kept so a job can save it when the store stops taking writes.
        self.journal = spool.Journal(run_id=run_id, start_time=start_time)
        self.spool_root: Path | None = None
        self.offline = False
        # The heartbeat's flush and the job's own writes can both meet the outage.
        self._offline_lock = threading.Lock()

    def keep_offline(self, root: Path) -> None:
        """When the store stops taking writes, go on offline and save the run under `root`."""
        self.spool_root = Path(root)

    def _send(self, action: Callable[[], Any]) -> None:
        """Writes to the store, or, once it refused (for a job with a spool), nowhere."""
        if self.offline:
            return
        try:
            retry(action)
        except (StoreUnavailable, MlflowException) as error:
            if self.spool_root is None or not _store_side(error):
                raise
            self._go_offline(error)

    def _go_offline(self, error: BaseException) -> None:
        """Stops writing to the store; says so once, whichever thread met the outage first."""
        with self._offline_lock:
            if self.offline:
                return
            self.offline = True
        log.warning(
            "The tracking store stopped taking writes (%s); run %s goes on offline and is "
            "kept in %s when it ends",
            str(error).splitlines()[0][:300],
            self.run_id,
            self.spool_root,
        )
        self._stop_background()

    def start_system_metrics(self, seconds: float) -> None:
        """Records CPU, memory, disk, network (and GPU where present) as `system/*` metrics.

        Sampled every `seconds` from a background thread and written through this run's
        own writer (so an outage keeps them in its journal); stops when the run ends.
        """
        beat = system_metrics.sampling(self.log_metrics)
        self._system_metrics = Heartbeat(seconds, beat, f"system metrics of {self.run_id}")

    def _stop_background(self) -> None:
        if self._system_metrics is not None:
            sampler, self._system_metrics = self._system_metrics, None
            sampler.stop()
        self.stop_heartbeat()

    def start_heartbeat(self, seconds: float) -> None:
        """Stamps the run every `seconds` from a background thread, flushing metrics too.

        A run whose stamps stop (its process was killed) is closed as KILLED by
        the next launch (`Store.reap_stale`).
        """
        if self._heartbeat is not None:
            return

        def beat() -> None:
            self.flush()
            if self.offline:
                return
            retry(
                lambda: self.client.set_tag(
                    self.run_id, metrics.HEARTBEAT_TAG, f"{time.time():.3f}"
                ),
                attempts=3,
            )

        self._heartbeat = Heartbeat(seconds, beat, f"heartbeat of run {self.run_id}")

    def stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [
            Param(key, redact_text(_param_value(value)))
            for key, value in sorted(params.items())
            if key not in self.preset_params
        ]
        self.journal.params.update((item.key, item.value) for item in items)
        for start in range(0, len(items), 100):
            self._send(
                lambda chunk=items[start : start + 100]: self.client.log_batch(
                    self.run_id, params=chunk
                )
            )

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if tags:
            clean = {key: redact_text(str(value)) for key, value in tags.items()}
            self.journal.tags.update(clean)
            self._send(
                lambda: self.client.log_batch(
                    self.run_id, tags=[RunTag(key, value) for key, value in clean.items()]
                )
            )

    def log_metrics(self, values: Mapping[str, float], step: int) -> None:
        """Queues one evaluation's metrics; they are written at most FLUSH_SECONDS later.

        Buffered and written synchronously in batches: one store write per
        evaluation, or MLflow's asynchronous queue (which costs most of a second
        to shut down when the run ends), cost several percent of a 15-second job
        (measured with pipelines/benchmark.py). `end` writes what is left, on
        every exit path Python sees.
        """
        stamp = int(time.time() * 1000)
        points = [Metric(key, _rounded(value), stamp, step) for key, value in values.items()]
        with self._lock:
            self._buffer += points
            self.journal.metrics += [(m.key, m.value, m.timestamp, m.step) for m in points]
            due = time.monotonic() - self._last_flush >= FLUSH_SECONDS
        if due:
            self.flush()

    def log_history(self, points: list[tuple[str, float, int, int]]) -> None:
        """Writes metric points as they were logged: (key, value, timestamp in ms, step)."""
        with self._lock:
            self._buffer += [Metric(key, value, stamp, step) for key, value, stamp, step in points]
        self.flush()

    def flush(self) -> None:
        """Writes the queued metrics, at most 1,000 values per call."""
        with self._lock:
            batch, self._buffer = self._buffer, []
            try:
                while batch:
                    chunk = batch[:1000]
                    self._send(
                        lambda chunk=chunk: self.client.log_batch(self.run_id, metrics=chunk)
                    )
                    batch = batch[1000:]
            except BaseException:
                # Keep what was not written, so a later flush can try again.
                self._buffer = batch + self._buffer
                raise
            self._last_flush = time.monotonic()

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        image = BytesIO()
        figure.savefig(image, format="png")
        self.journal.blobs[artifact_file] = image.getvalue()
        self._send(lambda: self.client.log_figure(self.run_id, figure, artifact_file))

    def log_text(self, text: str, artifact_file: str) -> None:
        clean = redact_text(text)
        self.journal.texts[artifact_file] = clean
        self._send(lambda: self.client.log_text(self.run_id, clean, artifact_file))

    def log_file(self, path: Path, artifact_path: str | None = None) -> None:
        if Path(path).is_file():
            redact_file(Path(path))
            self.journal.files[f"{artifact_path}/{path.name}" if artifact_path else path.name] = (
                str(path)
            )
            self._send(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))

    def log_model(self, model: Any, example: Any, requirements: list[str]) -> None:
        """Logs a Keras model as an MLflow model, with its signature and an input example.

        The signature is inferred from the example and the model's output on it;
        `requirements` are given, so MLflow does not load the model again to guess them.
        """
        import mlflow.keras
        from mlflow.models import infer_signature

        signature = infer_signature(example, model.predict(example, verbose=0))
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model"
            path.mkdir()  # mlflow.keras writes the example before it creates the folder
            mlflow.keras.save_model(
                model,
                str(path),
                signature=signature,
                input_example=example,
                pip_requirements=requirements,
            )
            self._send(lambda: self.client.log_artifacts(self.run_id, str(path), "model"))
            if self.offline:
                shutil.copytree(
                    path, spool.staging(self.spool_root, self.run_id) / spool.ARTIFACTS / "model"
                )

    def log_dataset(self, name: str, digest: str, source: str, profile: str) -> None:
        """Records the training data as an MLflow dataset input (the UI's Dataset column)."""
        self.journal.datasets.append(
            {"name": name, "digest": digest, "source": source, "profile": profile}
        )
        dataset = Dataset(name, digest, "local", json.dumps({"uri": source}), profile=profile)
        inputs = [DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])]
        # Jobs that start together log the same dataset at once; on PostgreSQL the
        # loser's insert of the shared dataset row is refused (a unique-key error the
        # server returns as BAD_REQUEST). Once the winner's row exists, MLflow reuses it.

        def log_inputs() -> None:
            for attempt in range(4):
                try:
                    self.client.log_inputs(self.run_id, datasets=inputs)
                    return
                except MlflowException as error:
                    if attempt == 3 or error.error_code != "BAD_REQUEST":
                        raise
                    time.sleep(0.2 + 0.3 * attempt)

        self._send(log_inputs)

    def log_error(self, error: BaseException) -> None:
        message = f"{type(error).__name__}: {error}".splitlines()[0][:500]
        self.set_tags({metrics.ERROR_TAG: message})
        self.log_text(
            "".join(traceback.format_exception(type(error), error, error.__traceback__)),
            "error.txt",
        )

    def discard(self) -> None:
        """Closes, then deletes, a run that never started its work (a claim that lost to a
        rival), so no deleted run stays RUNNING."""
        self._stop_background()
        retry(lambda: self.client.set_terminated(self.run_id, status="KILLED"))
        retry(lambda: self.client.delete_run(self.run_id))

    def end_status(self, status: str) -> None:
        """Writes queued metrics and closes the run with an MLflow status (a parent run)."""
        self._stop_background()
        self.flush()
        retry(lambda: self.client.set_terminated(self.run_id, status=status))

    def end(self, outcome: str) -> None:
        """Writes queued metrics, tags the outcome and sets the matching run status.

        A run that went offline is saved in its spool folder instead, in one line.
        """
        self._stop_background()
        self.flush()
        self.set_tags({metrics.OUTCOME_TAG: outcome})
        status = _STATUS_OF_OUTCOME.get(outcome, "FAILED")
        self.journal.status = status
        self.journal.end_time = int(time.time() * 1000)
        if self.owned:
            self._send(lambda: self.client.set_terminated(self.run_id, status=status))
        if self.offline:
            try:
                folder = self.journal.save(self.spool_root)
            except OSError as error:
                raise ResultsLost(
                    f"run {self.run_id} ({outcome}): its results were lost: the store did not "
                    f"take them and the spool folder {self.spool_root} could not keep them "
                    f"({error.strerror or error})"
                ) from error
            log.warning(
                "Kept the results of run %s (%s) in %s: the store did not take them. The next "
                "launch from this folder records them, or: python pipelines/sync.py %s",
                self.run_id,
                outcome,
                folder,
                self.spool_root,
            )


class ResultsLost(RuntimeError):
    """Neither the store nor the spool took a finished job's results; one line says which."""


# Significant digits kept of a metric: float32 results carry about seven, and an
# accuracy over a few hundred images needs three; 0.9779999852180481 is stored as 0.978.
METRIC_DIGITS = 6


def _store_side(error: BaseException) -> bool:
    """Whether a write failed because of the store, not because of what was written."""
    return isinstance(error, StoreUnavailable) or getattr(error, "error_code", None) in (
        STORE_SIDE_CODES
    )


def _rounded(value: float) -> float:
    value = float(value)
    return float(f"{value:.{METRIC_DIGITS}g}") if math.isfinite(value) else value


def _param_value(value: Any) -> str:
    text = "null" if value is None else str(value)
    if isinstance(value, bool):
        text = str(value).lower()
    if len(text) > MAX_PARAM_LENGTH:
        text = text[: MAX_PARAM_LENGTH - 20] + "...[truncated]"
    return text


def open_store(config: TrackingConfig) -> Store:
    """Connects to the store named by `config`, creating the experiment when needed."""
    set_deadline(config.deadline_seconds)
    return Store(
        config.uri,
        config.experiment,
        config.stale_after_seconds,
        config.ui_url,
        config.connect_seconds,
    )


def active_run_id_from_env() -> str | None:
    """The run that `mlflow run` opened for this process, if any."""
    return os.environ.get("MLFLOW_RUN_ID") or None


def versions() -> dict[str, str]:
    """Library versions worth recording with every run."""
    return {"mlflow_version": mlflow.__version__}


def log_report(uri: str, experiment: str, folder: Path, parent_run_id: str | None) -> str:
    """Logs a report folder to the sweep's parent, `mlflow run`'s run, or a new report run.

    Returns:
        The id of the run that holds the report.
    """
    client = MlflowClient(tracking_uri=uri)
    parent_run_id = parent_run_id or active_run_id_from_env()
    if parent_run_id is None:
        found = retry(lambda: client.get_experiment_by_name(experiment))
        run = retry(
            lambda: client.create_run(
                found.experiment_id,
                tags={metrics.ROLE_TAG: "report"},
                run_name=f"report {folder.name}",
            )
        )
        run_id = run.info.run_id
    else:
        run_id = parent_run_id
        tags = retry(lambda: client.get_run(run_id)).data.tags
        if run_id == active_run_id_from_env() and metrics.ROLE_TAG not in tags:
            # `mlflow run . -e report`: the project's own run becomes the report run.
            retry(lambda: client.set_tag(run_id, metrics.ROLE_TAG, "report"))
            retry(lambda: client.update_run(run_id, name=f"report {folder.name}"))
    retry(lambda: client.log_artifacts(run_id, str(folder), "report"))
    if parent_run_id is None:
        retry(lambda: client.set_terminated(run_id, status="FINISHED"))
    return run_id
