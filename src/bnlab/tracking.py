"""Everything that talks to MLflow: job runs, sweep parent runs and reading runs back.

No other module of the package imports mlflow.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from bnlab import metrics
from bnlab.config import TrackingConfig

try:
    import fcntl
except ImportError:  # Windows: no cross-process lock; retries still cover most races.
    fcntl = None

log = logging.getLogger(__name__)
T = TypeVar("T")

PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
# Tags written by this project.
OUTCOME_TAG = "outcome"
CONFIG_HASH_TAG = "config_hash"
SWEEP_ID_TAG = "sweep_id"
ROLE_TAG = "role"
OVERRIDES_TAG = "overrides"
ERROR_TAG = "error"
# Longest time a logged metric waits in memory before it is written to the store.
FLUSH_SECONDS = 5.0
# MLflow caps a param value at 6,000 characters; longer values are cut with a marker.
MAX_PARAM_LENGTH = 6000

_STATUS_OF_OUTCOME = {
    metrics.FINISHED: "FINISHED",
    metrics.DIVERGED: "FINISHED",
    metrics.PRUNED: "FINISHED",
    metrics.FAILED: "FAILED",
    metrics.KILLED: "KILLED",
}


def _is_transient(error: Exception) -> bool:
    """SQLite write contention and first-use schema races clear up when retried."""
    text = str(error).lower()
    return any(
        marker in text
        for marker in ("database is locked", "already exists", "unique constraint", "disk i/o")
    )


def _retry(action: Callable[[], T], attempts: int = 8) -> T:
    """Runs `action`, retrying transient store errors with jittered backoff."""
    for attempt in range(attempts):
        try:
            return action()
        except Exception as error:  # MlflowException wraps the SQLAlchemy error
            if attempt == attempts - 1 or not _is_transient(error):
                raise
            time.sleep(0.2 * 2**attempt * (0.5 + random.random()))
    raise AssertionError("unreachable")


def _artifact_location(uri: str, experiment: str) -> str | None:
    """Keeps a SQLite store's artifacts next to its database file."""
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri.removeprefix("sqlite:///")).resolve()
    return (database.parent / "mlartifacts" / experiment).as_uri()


@contextlib.contextmanager
def _schema_lock(uri: str) -> Iterator[None]:
    """Serialises opening a SQLite store across processes.

    The first client to open a new database file creates and migrates its
    schema; two processes doing that at once corrupt the migration. A lock file
    beside the database makes the others wait until the schema is complete.
    """
    if not uri.startswith("sqlite:///") or fcntl is None:
        yield
        return
    database = Path(uri.removeprefix("sqlite:///")).resolve()
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass
class CompletedRun:
    """A run whose result is complete, found by config hash."""

    run_id: str
    outcome: str
    metrics: dict[str, float]


class Store:
    """One MLflow tracking store and experiment."""

    def __init__(self, uri: str, experiment: str) -> None:
        self.uri = uri
        self.experiment = experiment
        with _schema_lock(uri):
            self.client = _retry(lambda: MlflowClient(tracking_uri=uri))
            adopted = active_run_id_from_env()
            if adopted:
                # Under `mlflow run`, everything goes to the experiment of its run, so
                # the sweep's jobs nest under it in the UI.
                run = _retry(lambda: self.client.get_run(adopted))
                self.experiment_id = run.info.experiment_id
                self.experiment = self.client.get_experiment(self.experiment_id).name
            else:
                self.experiment_id = _retry(self._get_or_create_experiment)

    def _get_or_create_experiment(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(
                self.experiment, artifact_location=_artifact_location(self.uri, self.experiment)
            )
        except MlflowException:
            # Another process created it between our lookup and our insert.
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return found.experiment_id

    def find_complete_run(self, config_hash: str) -> CompletedRun | None:
        """Returns the newest finished run with this config hash, if any."""
        runs = _retry(
            lambda: self.client.search_runs(
                [self.experiment_id],
                filter_string=(
                    f"tags.{CONFIG_HASH_TAG} = '{config_hash}' and attributes.status = 'FINISHED'"
                ),
                order_by=["attributes.start_time DESC"],
            )
        )
        runs = [run for run in runs if run.data.tags.get(OUTCOME_TAG) in metrics.COMPLETE_OUTCOMES]
        if not runs:
            return None
        run = runs[0]
        return CompletedRun(run.info.run_id, run.data.tags[OUTCOME_TAG], dict(run.data.metrics))

    def start_run(
        self, name: str, tags: Mapping[str, str], parent_run_id: str | None = None
    ) -> RunLogger:
        """Creates a run (nested under `parent_run_id` when given) and returns its logger."""
        all_tags = dict(tags)
        if parent_run_id:
            all_tags[PARENT_TAG] = parent_run_id
        run = _retry(
            lambda: self.client.create_run(self.experiment_id, tags=all_tags, run_name=name)
        )
        return RunLogger(self.client, run.info.run_id)

    def adopt_run(self, run_id: str, tags: Mapping[str, str], name: str | None = None) -> RunLogger:
        """Logs into a run someone else created, e.g. the run of `mlflow run`.

        Params that run already holds (MLflow logs an entry point's parameters)
        are kept as they are: MLflow refuses to change a logged param.
        """
        logger = RunLogger(self.client, run_id, owned=False)
        logger.preset_params = set(_retry(lambda: self.client.get_run(run_id)).data.params)
        logger.set_tags(tags)
        if name:
            _retry(lambda: self.client.update_run(run_id, name=name))
        return logger

    def find_run(self, tags: Mapping[str, str]) -> str | None:
        """The newest run carrying all of `tags`, if any."""
        condition = " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
        runs = _retry(
            lambda: self.client.search_runs(
                [self.experiment_id],
                filter_string=condition,
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
        )
        return runs[0].info.run_id if runs else None

    def reopen_run(self, run_id: str) -> RunLogger:
        """Marks a run RUNNING again (a resumed search) and returns its logger."""
        _retry(lambda: self.client.update_run(run_id, status="RUNNING"))
        logger = RunLogger(self.client, run_id)
        logger.preset_params = set(_retry(lambda: self.client.get_run(run_id)).data.params)
        return logger

    def children(self, parent_run_id: str) -> list[Any]:
        """All runs nested directly under `parent_run_id`."""
        return _search_all(
            self.client, [self.experiment_id], f"tags.`{PARENT_TAG}` = '{parent_run_id}'"
        )

    def end_sweep(
        self,
        parent_run_id: str,
        counts: Mapping[str, int],
        jobs: list[dict[str, Any]],
        status: str,
        terminate: bool,
    ) -> None:
        """Records a sweep's job counts and closes runs that were left open.

        Children still RUNNING (their process was killed before it could close
        them) are ended as KILLED, so nothing stays RUNNING after the sweep.
        """
        for child in self.children(parent_run_id):
            if child.info.status == "RUNNING":
                _retry(lambda run_id=child.info.run_id: self._close_killed(run_id))
        stamp = int(time.time() * 1000)
        _retry(
            lambda: self.client.log_batch(
                parent_run_id,
                metrics=[Metric(f"jobs/{key}", value, stamp, 0) for key, value in counts.items()],
                tags=[RunTag(f"jobs.{key}", str(value)) for key, value in counts.items()],
            )
        )
        _retry(lambda: self.client.log_text(parent_run_id, json.dumps(jobs, indent=2), "jobs.json"))
        if terminate:
            _retry(lambda: self.client.set_terminated(parent_run_id, status=status))

    def _close_killed(self, run_id: str) -> None:
        self.client.set_tag(run_id, OUTCOME_TAG, metrics.KILLED)
        self.client.set_terminated(run_id, status="KILLED")


class RunLogger:
    """Writes one run's params, metrics, tags and artifacts."""

    def __init__(self, client: MlflowClient, run_id: str, owned: bool = True) -> None:
        self.client = client
        self.run_id = run_id
        # A run we did not create (mlflow run's) is closed by its creator.
        self.owned = owned
        self.preset_params: set[str] = set()
        self._buffer: list[Metric] = []
        self._last_flush = time.monotonic()

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [
            Param(key, _param_value(value))
            for key, value in sorted(params.items())
            if key not in self.preset_params
        ]
        for start in range(0, len(items), 100):
            _retry(
                lambda chunk=items[start : start + 100]: self.client.log_batch(
                    self.run_id, params=chunk
                )
            )

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if tags:
            _retry(
                lambda: self.client.log_batch(
                    self.run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()]
                )
            )

    def log_metrics(self, values: Mapping[str, float], step: int) -> None:
        """Queues one evaluation's metrics; they are written at most FLUSH_SECONDS later.

        Buffered and written synchronously in batches: one store write per
        evaluation, or MLflow's asynchronous queue (which costs most of a second
        to shut down when the run ends), cost several percent of a 15-second job
        (measured with pipelines/benchmark.py). `end` writes what is left.
        """
        stamp = int(time.time() * 1000)
        self._buffer += [Metric(key, float(value), stamp, step) for key, value in values.items()]
        if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def log_history(self, points: list[dict[str, float]]) -> None:
        """Logs many evaluations at once (each dict has `step`)."""
        for point in points:
            self.log_metrics({k: v for k, v in point.items() if k != "step"}, int(point["step"]))
        self.flush()

    def flush(self) -> None:
        """Writes the queued metrics, at most 1,000 values per call."""
        batch, self._buffer = self._buffer, []
        for start in range(0, len(batch), 1000):
            chunk = batch[start : start + 1000]
            _retry(lambda chunk=chunk: self.client.log_batch(self.run_id, metrics=chunk))
        self._last_flush = time.monotonic()

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        _retry(lambda: self.client.log_figure(self.run_id, figure, artifact_file))

    def log_text(self, text: str, artifact_file: str) -> None:
        _retry(lambda: self.client.log_text(self.run_id, text, artifact_file))

    def log_file(self, path: Path, artifact_path: str | None = None) -> None:
        if Path(path).is_file():
            _retry(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))

    def log_model(self, model: Any) -> None:
        """Saves a Keras model in the native .keras format as an artifact."""
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.keras"
            model.save(path)
            self.log_file(path, "model")

    def log_error(self, error: BaseException) -> None:
        message = f"{type(error).__name__}: {error}".splitlines()[0][:500]
        self.set_tags({ERROR_TAG: message})
        self.log_text(
            "".join(traceback.format_exception(type(error), error, error.__traceback__)),
            "error.txt",
        )

    def end(self, outcome: str) -> None:
        """Writes queued metrics, tags the outcome and sets the matching run status."""
        self.flush()
        self.set_tags({OUTCOME_TAG: outcome})
        if self.owned:
            _retry(
                lambda: self.client.set_terminated(
                    self.run_id, status=_STATUS_OF_OUTCOME.get(outcome, "FAILED")
                )
            )


def _param_value(value: Any) -> str:
    text = "null" if value is None else str(value)
    if isinstance(value, bool):
        text = str(value).lower()
    if len(text) > MAX_PARAM_LENGTH:
        text = text[: MAX_PARAM_LENGTH - 20] + "...[truncated]"
    return text


def _search_all(client: MlflowClient, experiment_ids: list[str], filter_string: str) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = _retry(
            lambda token=token: client.search_runs(
                experiment_ids, filter_string=filter_string, max_results=1000, page_token=token
            )
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def open_store(config: TrackingConfig) -> Store:
    """Connects to the store named by `config`, creating the experiment when needed."""
    return Store(config.uri, config.experiment)


def active_run_id_from_env() -> str | None:
    """The run that `mlflow run` opened for this process, if any."""
    return os.environ.get("MLFLOW_RUN_ID") or None


def versions() -> dict[str, str]:
    """Library versions worth recording with every run."""
    return {"mlflow_version": mlflow.__version__}


class StoreQueryError(RuntimeError):
    """The requested experiment or run is not in the store; one line says which."""


def _experiment_id(client: MlflowClient, experiment: str) -> str:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        known = sorted(e.name for e in client.search_experiments())
        raise StoreQueryError(
            f"unknown experiment '{experiment}' (in this store: {', '.join(known) or 'none'})"
        )
    return found.experiment_id


def _sweep_member_ids(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[str]:
    """Runs of a sweep: its children plus the runs it skipped as already complete."""
    try:
        parent = client.get_run(parent_run_id)
    except MlflowException as error:
        raise StoreQueryError(f"unknown run '{parent_run_id}'") from error
    if parent.info.experiment_id != experiment_id:
        raise StoreQueryError(f"run '{parent_run_id}' is not in this experiment")
    children = _search_all(client, [experiment_id], f"tags.`{PARENT_TAG}` = '{parent_run_id}'")
    members = [run.info.run_id for run in children]
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = client.download_artifacts(parent_run_id, "jobs.json", folder)
            jobs = json.loads(Path(path).read_text())
        members += [job["run_id"] for job in jobs if job["outcome"] == metrics.SKIPPED]
    except (MlflowException, OSError):
        pass  # a sweep still running has no jobs.json yet
    return members


def load_runs(
    uri: str,
    experiment: str,
    parent_run_id: str | None = None,
    curve: str = metrics.VAL_ACCURACY,
    workers: int = 8,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reads the job runs of an experiment (or of one sweep) and one metric's histories.

    Returns:
        runs: one row per job run with run_id, name, status, outcome, start_time,
            every param by its dotted key and every final metric by its name.
        curves: one row per logged point of `curve`: run_id, step, value.

    Histories are fetched concurrently: one request per run, which dominates the
    time on a store of hundreds of runs.
    """
    client = MlflowClient(tracking_uri=uri)
    experiment_id = _experiment_id(client, experiment)
    runs = _search_all(client, [experiment_id], f"tags.{ROLE_TAG} = 'job'")
    if parent_run_id is not None:
        members = set(_sweep_member_ids(client, experiment_id, parent_run_id))
        runs = [run for run in runs if run.info.run_id in members]
    rows = []
    for run in runs:
        rows.append(
            {
                "run_id": run.info.run_id,
                "name": run.info.run_name,
                "status": run.info.status,
                "outcome": run.data.tags.get(OUTCOME_TAG, "unknown"),
                "start_time": run.info.start_time,
                "parent_run_id": run.data.tags.get(PARENT_TAG),
                "study": run.data.tags.get("study"),
                "trial": run.data.tags.get("trial"),
                **run.data.params,
                **run.data.metrics,
            }
        )

    def history(run_id: str) -> list[tuple[str, int, float]]:
        points = _retry(lambda: client.get_metric_history(run_id, curve))
        return [(run_id, point.step, point.value) for point in points]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        points = [
            point for batch in pool.map(history, [r["run_id"] for r in rows]) for point in batch
        ]
    curves = pd.DataFrame(points, columns=["run_id", "step", "value"])
    curves = curves.sort_values(["run_id", "step"]).drop_duplicates(["run_id", "step"], keep="last")
    return pd.DataFrame(rows), curves


def log_report(uri: str, experiment: str, folder: Path, parent_run_id: str | None) -> str:
    """Logs a report folder to the sweep's parent, `mlflow run`'s run, or a new report run.

    Returns:
        The id of the run that holds the report.
    """
    client = MlflowClient(tracking_uri=uri)
    parent_run_id = parent_run_id or active_run_id_from_env()
    if parent_run_id is None:
        experiment_id = _experiment_id(client, experiment)
        run = _retry(
            lambda: client.create_run(
                experiment_id, tags={ROLE_TAG: "report"}, run_name=f"report {folder.name}"
            )
        )
        run_id = run.info.run_id
    else:
        run_id = parent_run_id
        if run_id == active_run_id_from_env() and ROLE_TAG not in client.get_run(run_id).data.tags:
            # `mlflow run . -e report`: the project's own run becomes the report run.
            _retry(lambda: client.set_tag(run_id, ROLE_TAG, "report"))
            _retry(lambda: client.update_run(run_id, name=f"report {folder.name}"))
    _retry(lambda: client.log_artifacts(run_id, str(folder), "report"))
    if parent_run_id is None:
        _retry(lambda: client.set_terminated(run_id, status="FINISHED"))
    return run_id
