"""A job records params, curves, tags and artifacts; finished jobs are skipped on relaunch."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bnlab import metrics
from bnlab.config import validate
from bnlab.experiment import training
from bnlab.job import runner as job
from bnlab.job.identity import identity_hash
from conftest import experiment_runs
from fault_injection import InjectedFailure, failing_train_model


def artifact_paths(client, run_id: str) -> set[str]:
    return {artifact.path for artifact in client.list_artifacts(run_id)}


def test_job_records_everything_a_user_browses(tiny_cfg, client, tmp_path: Path) -> None:
    cfg = tiny_cfg("bn=true", "lr=0.01", "tracking.system_metrics_seconds=0.5")
    final = job.run(cfg)
    [run] = experiment_runs(client)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "BN relu lr=0.01 s0"
    params = run.data.params
    assert params["optimizer.learning_rate"] == "0.01" and params["lr"] == "0.01"
    assert params["model.bn"] == "true" and params["train.steps"] == "20"
    assert params["data.limit"] == "320"
    for name in metrics.CURVE_METRICS:
        history = client.get_metric_history(run.info.run_id, name)
        assert sorted(point.step for point in history) == [10, 20]
    val_history = client.get_metric_history(run.info.run_id, metrics.VAL_ACCURACY)
    assert max(point.value for point in val_history) == pytest.approx(final[metrics.OBJECTIVE])
    for name in (
        metrics.TEST_LOSS,
        metrics.TEST_ACCURACY,
        metrics.SAMPLES_PER_SECOND,
        metrics.WALL_TIME,
        metrics.OBJECTIVE,
    ):
        assert name in run.data.metrics
        # A summary value, logged at step 0 like a plain mlflow.log_metric: one per run.
        [point] = client.get_metric_history(run.info.run_id, name)
        assert point.step == 0
    # Rounded to what float32 carries: no 0.9779999852180481.
    for point in val_history:
        assert point.value == float(f"{point.value:.6g}")
    assert any(name.startswith("system/cpu") for name in run.data.metrics)
    [dataset] = run.inputs.dataset_inputs
    assert dataset.dataset.name == "mnist_small" and len(dataset.dataset.digest) == 12
    assert json.loads(dataset.dataset.profile)["train"] == 320
    assert dataset.tags[0].value == "training"
    experiment = client.get_experiment(run.info.experiment_id)
    assert "Batch Normalization" in experiment.tags["mlflow.note.content"]
    tags = run.data.tags
    assert tags["outcome"] == "finished"
    assert tags["identity"] == identity_hash(validate(cfg))
    assert tags["heartbeat"]
    assert tags["keras_backend"] in {"tensorflow", "jax"}
    assert tags["keras_version"]
    assert tags["mlflow.source.git.commit"] and "git_dirty" in tags
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.user"]
    assert tags["mlflow.source.name"]
    assert json.loads(tags["overrides"]) == []
    assert {"config.yaml", "learning_curve.png"} <= artifact_paths(client, run.info.run_id)
    config_text = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path)))
    assert "lr: 0.01" in config_text.read_text()


def test_finished_config_is_skipped_and_rerun_forces_training(tiny_cfg, client) -> None:
    first = job.run(tiny_cfg())
    again = job.run(tiny_cfg())
    assert len(experiment_runs(client)) == 1
    assert again[metrics.OBJECTIVE] == pytest.approx(first[metrics.OBJECTIVE])
    job.run(tiny_cfg("train.rerun=true"))
    assert len(experiment_runs(client)) == 2


def test_diverged_run_is_tagged_and_returns_chance(tiny_cfg, client) -> None:
    final = job.run(tiny_cfg("bn=false", "optimizer=sgd", "lr=1e12"))
    assert final[metrics.OBJECTIVE] == metrics.chance_accuracy(10)
    [run] = experiment_runs(client)
    assert run.data.tags["outcome"] == "diverged"
    # Chance follows from the class count the run recorded (10 digits here).
    assert run.data.tags[metrics.CLASSES_TAG] == "10"
    assert run.info.status == "FINISHED"


def test_failing_job_is_recorded_as_failed_with_its_error(tiny_cfg, client, monkeypatch) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(training, "train_model", failing_train_model)
        with pytest.raises(InjectedFailure):
            job.run(tiny_cfg())
    [run] = experiment_runs(client)
    assert run.info.status == "FAILED"
    assert run.data.tags["outcome"] == "failed"
    assert "InjectedFailure" in run.data.tags["error"]
    assert "error.txt" in artifact_paths(client, run.info.run_id)
    # A failed run is not a result: the next launch trains it again.
    job.run(tiny_cfg())
    statuses = sorted(run.info.status for run in experiment_runs(client))
    assert statuses == ["FAILED", "FINISHED"]


def test_log_model_saves_an_mlflow_model_with_signature_and_example(
    tiny_cfg, client, tmp_path: Path
) -> None:
    import mlflow.keras
    import yaml

    job.run(tiny_cfg("tracking.log_model=true"))
    [run] = experiment_runs(client)
    folder = client.download_artifacts(run.info.run_id, "model", str(tmp_path))
    description = yaml.safe_load((Path(folder) / "MLmodel").read_text())
    inputs = json.loads(description["signature"]["inputs"])
    assert inputs[0]["tensor-spec"]["shape"] == [-1, 28, 28, 1]
    assert description["saved_input_example_info"]["type"] == "ndarray"
    model = mlflow.keras.load_model(folder)
    assert model.count_params() == 94_024


def test_tracking_can_be_switched_off(tiny_cfg, tmp_path: Path) -> None:
    absent = tmp_path / "absent.db"
    final = job.run(tiny_cfg("tracking.enabled=false", f"tracking.uri=sqlite:///{absent}"))
    assert math.isfinite(final[metrics.OBJECTIVE])
    assert not absent.exists()
