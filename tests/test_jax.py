"""The model builds and trains under KERAS_BACKEND=jax (the GPU machines' backend)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY, run_train, run_train_forked

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="jax is not installed"
)

SCRIPT = """
import json, keras
from bnlab.plugins.bn_switch import default_bn_impl
from bnlab.plugins.cnn import build_cnn
model = build_cnn(input_shape=(28, 28, 1), num_classes=10, bn=True, bn_impl="keras")
print(json.dumps({"backend": keras.backend.backend(), "bn_impl": default_bn_impl(),
                  "params": model.count_params()}))
"""


def test_model_builds_under_jax() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": "jax"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "backend": "jax",
        "bn_impl": "keras",
        "params": 94_024,
    }


@pytest.mark.usefixtures("store_uri")  # a copy of the empty template store
def test_training_job_runs_under_jax(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    done = run_train(
        [*TINY, "data.limit=640", "train.steps=40", "train.eval_every=20"],
        cwd=tmp_path,
        env={"KERAS_BACKEND": "jax"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("bn-trick").experiment_id])
    assert run.data.tags["keras_backend"] == "jax"
    assert run.data.tags["jax_version"]
    # XLA fuses Keras's own BN layer; TensorFlow's fused kernel is not there to use.
    assert run.data.params["model.bn_impl"] == "keras"
    assert run.data.metrics["val/best_accuracy"] > 0.3


def test_the_fused_kernel_is_refused_under_jax_before_any_work(tmp_path: Path) -> None:
    done = run_train_forked(["model.bn_impl=fused"], cwd=tmp_path, env={"KERAS_BACKEND": "jax"})
    assert done.returncode == 2, done.stderr[-3000:]
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert "model.bn_impl" in line and "model.bn_impl=keras" in line
    assert not (tmp_path / "mlflow.db").exists()
