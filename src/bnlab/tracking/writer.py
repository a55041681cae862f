"""The buffered writer of one run (`RunLogger`): params, tags, metrics, artifacts and
datasets, sent with retries, and kept in an offline journal (the spool) when the store
stops taking writes.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from io import BytesIO
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from bnlab import metrics
from bnlab.config.store_uri import sqlite_path
from bnlab.heartbeat import Heartbeat
from bnlab.redaction import redact_file, redact_text
from bnlab.tracking import spool, system_metrics
from bnlab.tracking.retries import DEFAULT_DEADLINE_SECONDS, StoreUnavailable, retry
from bnlab.tracking.values import _param_value, _rounded, _store_side

log = logging.getLogger(__name__)

# Longest time a logged metric waits in memory before it is written to the store
# (a SIGKILL loses at most this much of a job's curve).
FLUSH_SECONDS = 5.0

_STATUS_OF_OUTCOME = {
    metrics.FINISHED: "FINISHED",
    metrics.DIVERGED: "FINISHED",
    metrics.PRUNED: "FINISHED",
    metrics.FAILED: "FAILED",
    metrics.KILLED: "KILLED",
}


class RunLogger:
    """Writes one run's params, metrics, tags and artifacts, and keeps its heartbeat."""

    def __init__(
        self,
        client: MlflowClient,
        run_id: str,
        owned: bool = True,
        start_time: int = 0,
        deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
    ) -> None:
        self.client = client
        # How long each write may retry before the run goes offline (or fails).
        self.deadline_seconds = deadline_seconds
        self.run_id = run_id
        self.start_time = start_time
        # A run we did not create (mlflow run's) is closed by its creator.
        self.owned = owned
        self.preset_params: set[str] = set()
        self._buffer: list[Metric] = []
        self._last_flush = time.monotonic()
        # Whether any metrics were queued yet (the first evaluation is written at once).
        self._metrics_sent = False
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
            retry(action, deadline=self.deadline_seconds)
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
            self._why_offline(error),
            self.run_id,
            self.spool_root,
            exc_info=error,
        )
        self._stop_background()

    def _why_offline(self, error: BaseException) -> str:
        """What stopped the writes, in words: a SQLite store whose file was deleted says
        so, rather than SQLite's "attempt to write a readonly database"."""
        database = sqlite_path(self.journal.store) if self.journal.store else None
        if database is not None and not database.exists():
            return f"the store file {database} is gone: it was deleted or moved"
        return str(error).splitlines()[0][:300] if str(error) else type(error).__name__

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

    def start_heartbeat(self, seconds: float, quiet: bool = False) -> None:
        """Stamps the run every `seconds` from a background thread, flushing metrics too.

        A run whose stamps stop (its process was killed) is closed as KILLED by
        the next launch (`Store.reap_stale`). With `quiet`, an outage is logged at DEBUG:
        its owner says what it cost when it closes the run.
        """
        if self._heartbeat is not None:
            return

        def beat() -> None:
            # One request: the stamp rides on the queued metrics' batch (on a server with
            # accounts every request costs a password check).
            self.flush(tags={metrics.HEARTBEAT_TAG: f"{time.time():.3f}"})

        self._heartbeat = Heartbeat(
            seconds,
            beat,
            f"heartbeat of run {self.run_id}",
            logging.DEBUG if quiet else logging.WARNING,
        )

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

        The run's first evaluation is written at once, so the UI (and whoever watches the
        store) sees a run's curve start as soon as it has one.

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
            due = not self._metrics_sent or time.monotonic() - self._last_flush >= FLUSH_SECONDS
            self._metrics_sent = True
        if due:
            self.flush()

    def log_history(self, points: list[tuple[str, float, int, int]]) -> None:
        """Writes metric points as they were logged: (key, value, timestamp in ms, step)."""
        with self._lock:
            self._buffer += [Metric(key, value, stamp, step) for key, value, stamp, step in points]
        self.flush()

    def flush(self, tags: Mapping[str, str] | None = None) -> None:
        """Writes the queued metrics, at most 1,000 values per call, `tags` with the first."""
        with self._lock:
            batch, self._buffer = self._buffer, []
            stamps = [RunTag(key, value) for key, value in (tags or {}).items()]
            try:
                while batch or stamps:
                    chunk = batch[:1000]
                    self._send(
                        lambda chunk=chunk, stamps=stamps: self.client.log_batch(
                            self.run_id, metrics=chunk, tags=stamps
                        )
                    )
                    batch, stamps = batch[1000:], []
            except BaseException:
                # Keep what was not written, so a later flush can try again.
                self._buffer = batch + self._buffer
                raise
            self._last_flush = time.monotonic()

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        image = BytesIO()
        figure.savefig(image, format="png")
        data = self.journal.blobs[artifact_file] = image.getvalue()
        self._send(lambda: self._log_bytes(data, artifact_file))

    def _log_bytes(self, data: bytes, artifact_file: str) -> None:
        """Uploads bytes rendered once (`client.log_figure` would render the figure again)."""
        folder, _, name = artifact_file.rpartition("/")
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / name
            path.write_bytes(data)
            self.client.log_artifact(self.run_id, str(path), folder or None)

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
        retry(
            lambda: self.client.set_terminated(self.run_id, status="KILLED"),
            deadline=self.deadline_seconds,
        )
        retry(lambda: self.client.delete_run(self.run_id), deadline=self.deadline_seconds)

    def end_status(self, status: str) -> None:
        """Writes queued metrics and closes the run with an MLflow status (a parent run)."""
        self._stop_background()
        self.flush()
        retry(
            lambda: self.client.set_terminated(self.run_id, status=status),
            deadline=self.deadline_seconds,
        )

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
