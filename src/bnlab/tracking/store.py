"""The store and experiment a command works in: opening it (one line when it does not
answer), creating the experiment, starting, adopting and reopening runs, and finding a
complete run to reuse. Liveness, sweep bookkeeping and spool replay are the parts it holds.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from bnlab import metrics
from bnlab.config import ConfigError, TrackingConfig
from bnlab.config.store_uri import sqlite_path
from bnlab.redaction import redact_text
from bnlab.tracking.liveness import Liveness
from bnlab.tracking.replay import SpoolReplay
from bnlab.tracking.retries import (
    DEFAULT_DEADLINE_SECONDS,
    NEVER_TRANSIENT,
    StoreUnavailable,
    caused_by,
    retry,
    sqlite_schema_lock,
)
from bnlab.tracking.scope import Scope
from bnlab.tracking.sweeps import NOTE_TAG, SweepBook
from bnlab.tracking.writer import RunLogger

log = logging.getLogger(__name__)


def _artifact_location(uri: str, experiment: str) -> str | None:
    """Keeps a SQLite store's artifacts next to its database file."""
    database = sqlite_path(uri)
    if database is None:
        return None
    return (database.resolve().parent / "mlartifacts" / experiment).as_uri()


def _refusal(error: MlflowException, uri: str, experiment: str) -> str | None:
    """One line for a server that turned the account away (401) or its writes down (403)."""
    if caused_by(error, NEVER_TRANSIENT):
        return (
            f"tracking.uri: the certificate of {redact_text(uri)} is not trusted: set "
            "MLFLOW_TRACKING_SERVER_CERT_PATH to it (pipelines/tracking_stack.py env prints it)"
        )
    status = error.get_http_status_code()
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if status == 401:
        who = f"the account {user!r}" if user else "no account"
        return (
            f"tracking.uri: {redact_text(uri)} refused {who} (401): set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
            "(pipelines/tracking_stack.py env prints them)"
        )
    if status == 403:
        return (
            f"tracking.experiment: the account {user!r} may not write to '{experiment}' "
            f"on {redact_text(uri)} (403): ask its owner or the stack's admin for access"
        )
    return None


@dataclass
class CompletedRun:
    """A run whose whole schedule was trained, found by identity."""

    run_id: str
    outcome: str
    metrics: dict[str, float]


class Store:
    """One MLflow tracking store and experiment: its runs, read and written.

    It holds its parts, which share its `scope` (client, experiment, retry deadline):
    `live` (heartbeats read back, dead runs closed), `sweeps` (a sweep's parent, jobs
    and counts) and `spool` (runs kept offline, recorded).
    """

    def __init__(
        self,
        uri: str,
        experiment: str,
        stale_after_seconds: float = 60.0,
        ui_url: str | None = None,
        connect_seconds: float = 30.0,
        deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
        note: str = "",
    ) -> None:
        self.uri = uri
        # The experiment's description (Markdown), set when the experiment has none.
        self.note = note
        self.ui_url = ui_url
        self.experiment = experiment
        self.stale_after_seconds = stale_after_seconds
        self.deadline_seconds = deadline_seconds
        with sqlite_schema_lock(uri):
            self.client = self._retry(lambda: MlflowClient(tracking_uri=uri))
            adopted = active_run_id_from_env()
            if adopted:
                # Under `mlflow run`, everything goes to the experiment of its run, so
                # the sweep's jobs nest under it in the UI.
                run = self._retry(lambda: self.client.get_run(adopted))
                self.experiment_id = run.info.experiment_id
                self.experiment = self.client.get_experiment(self.experiment_id).name
            else:
                self.experiment_id = self._first_contact(connect_seconds)
        self.scope = Scope(self.client, uri, self.experiment, self.experiment_id, deadline_seconds)
        self.sweeps = SweepBook(self.scope, stale_after_seconds)
        self.live = Liveness(self.scope, stale_after_seconds, self.sweeps)
        self.spool = SpoolReplay(self.scope)

    def _retry(self, action: Any) -> Any:
        return retry(action, deadline=self.deadline_seconds)

    def _logger(self, run_id: str, **options: Any) -> RunLogger:
        return RunLogger(self.client, run_id, deadline_seconds=self.deadline_seconds, **options)

    def _first_contact(self, seconds: float) -> str:
        """Finds or creates the experiment; a store that does not answer is a bad URI."""
        try:
            return retry(self._get_or_create_experiment, deadline=seconds)
        except StoreUnavailable as error:
            raise StoreUnreachable(
                f"tracking.uri: no tracking store answers at {redact_text(self.uri)} "
                f"within {seconds:g} s ({error})"
            ) from error
        except MlflowException as error:
            refused = _refusal(error, self.uri, self.experiment)
            if refused is None:
                raise
            raise ConfigError(refused) from error

    def _get_or_create_experiment(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None and found.lifecycle_stage != "deleted":
            if self.note and NOTE_TAG not in found.tags:
                self.client.set_experiment_tag(found.experiment_id, NOTE_TAG, self.note)
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
                tags={NOTE_TAG: self.note} if self.note else None,
            )
        except MlflowException:
            # Another process created it between our lookup and our insert.
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return found.experiment_id

    def _search(self, filter_string: str, order_by: list[str] | None = None) -> list[Any]:
        return self.scope.search(filter_string, order_by)

    def find_complete_run(
        self, identity: str, requires: tuple[str, ...] = ()
    ) -> CompletedRun | None:
        """The newest run with this identity that trained its whole schedule and holds the
        metrics in `requires` (what the job measures beside training), if any."""
        runs = self._search(
            f"tags.{metrics.IDENTITY_TAG} = '{identity}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
        )
        runs = [
            run
            for run in runs
            if run.data.tags.get(metrics.OUTCOME_TAG) in metrics.COMPLETE_OUTCOMES
            and all(key in run.data.metrics for key in requires)
        ]
        if not runs:
            return None
        run = runs[0]
        return CompletedRun(
            run.info.run_id, run.data.tags[metrics.OUTCOME_TAG], dict(run.data.metrics)
        )

    def find_timing(self, identity: str) -> str | None:
        """The newest finished side-by-side timing with this identity (its run id), if any."""
        runs = self._search(
            f"tags.{metrics.TIMING_TAG} = '{identity}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
        )
        return runs[0].info.run_id if runs else None

    def start_run(
        self, name: str, tags: Mapping[str, str], parent_run_id: str | None = None
    ) -> RunLogger:
        """Creates a run (nested under `parent_run_id` when given) and returns its logger."""
        all_tags = {key: redact_text(str(value)) for key, value in tags.items()}
        all_tags[metrics.HEARTBEAT_TAG] = f"{time.time():.3f}"
        if parent_run_id:
            all_tags[metrics.PARENT_TAG] = parent_run_id
        try:
            run = self._retry(
                lambda: self.client.create_run(
                    self.experiment_id, tags=all_tags, run_name=redact_text(name)
                )
            )
        except MlflowException as error:
            refused = _refusal(error, self.uri, self.experiment)
            if refused is None:
                raise
            raise ConfigError(refused) from error
        logger = self._logger(run.info.run_id, start_time=run.info.start_time)
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
        existing = self._retry(lambda: self.client.get_run(run_id))
        logger = self._logger(run_id, owned=False, start_time=existing.info.start_time)
        logger.preset_params = set(existing.data.params)
        logger.journal.name = redact_text(name or existing.info.run_name)
        self._describe_journal(logger)
        logger.set_tags({**tags, metrics.HEARTBEAT_TAG: f"{time.time():.3f}"})
        if name:
            self._retry(lambda: self.client.update_run(run_id, name=redact_text(name)))
        return logger

    def reopen_run(self, run_id: str) -> RunLogger:
        """Marks a run RUNNING again (a resumed search) and returns its logger."""
        self._retry(lambda: self.client.update_run(run_id, status="RUNNING"))
        run = self._retry(lambda: self.client.get_run(run_id))
        logger = self._logger(run_id, start_time=run.info.start_time)
        logger.set_tags({metrics.HEARTBEAT_TAG: f"{time.time():.3f}"})
        logger.preset_params = set(run.data.params)
        return logger


class StoreUnreachable(ConfigError):
    """No store answered at the URI on first contact.

    Bad input for a command on its own (a wrong URI: exit 2 before any work); for a job
    of a sweep whose launch reached the store, an outage that fails only that job.
    """


def open_store(config: TrackingConfig) -> Store:
    """Connects to the store named by `config`, creating the experiment when needed."""
    return Store(
        config.uri,
        config.experiment,
        config.stale_after_seconds,
        config.ui_url,
        config.connect_seconds,
        config.deadline_seconds,
        config.note,
    )


def active_run_id_from_env() -> str | None:
    """The run that `mlflow run` opened for this process, if any."""
    return os.environ.get("MLFLOW_RUN_ID") or None


def versions() -> dict[str, str]:
    """Library versions worth recording with every run."""
    return {"mlflow_version": mlflow.__version__}
