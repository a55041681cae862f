"""A plain wheel, installed with no clone on the path, runs a user's own two-file folder."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parents[1]

MODEL = """
def build_tiny(input_shape, num_classes, width: int = 16, activation: str = "relu"):
    import keras
    from keras import layers

    return keras.Sequential([
        keras.Input(shape=tuple(input_shape)),
        layers.Flatten(),
        layers.Dense(width, activation=activation),
        layers.Dense(num_classes, activation="softmax"),
    ])
"""
TINY = ["data.limit=320", "train.steps=20", "train.eval_every=10", "hydra/launcher=basic"]


@pytest.mark.slow
def test_a_wheel_runs_a_user_folder_end_to_end(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
    )
    (wheel,) = wheels.glob("bnlab-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
    )
    # The dependencies come from the test's own environment, added after the new venv's
    # site-packages: its .pth files (the editable install of this clone) are not read there.
    new_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(new_site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "work"
    (work / "myexp" / "model").mkdir(parents=True)
    (work / "myexp" / "tiny.py").write_text(MODEL)
    (work / "myexp" / "model" / "tiny.yaml").write_text(
        "_target_: tiny.build_tiny\nwidth: 8\nactivation: ${activation}\n"
    )
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "PYTHON"))
    }
    env["BNLAB_CACHE_DIR"] = str(tmp_path / "cache")

    def bnlab(*arguments: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(python), "-m", "bnlab", *arguments],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    where = subprocess.run(
        [str(python), "-c", "import bnlab; print(bnlab.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(new_site) and str(ROOT) not in where
    sweep = bnlab("train", "--user-dir", "myexp", "-m", "model=tiny", "model.width=4,8", *TINY)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    again = bnlab("train", "--user-dir", "myexp", "-m", "model=tiny", "model.width=4,8", *TINY)
    assert again.returncode == 0 and "2 skipped" in again.stderr + again.stdout, again.stderr
    shown = bnlab("identity", "--user-dir", "myexp", "model=tiny")
    assert shown.returncode == 0 and '"tiny"' in shown.stdout, shown.stderr
    client = MlflowClient(f"sqlite:///{work}/mlflow.db")
    experiment = client.get_experiment_by_name("bn-trick")
    runs = client.search_runs([experiment.experiment_id], "tags.role = 'job'")
    assert sorted(run.data.params["model.width"] for run in runs) == ["4", "8"]
    assert all(run.data.params["model._target_"] == "tiny.build_tiny" for run in runs)
    report = bnlab("report", "--no-log")
    assert report.returncode in (0, 2), report.stderr
    # A broken plug-in file harms only the runs that select it.
    (work / "myexp" / "broken.py").write_text("def build(:\n")
    (work / "myexp" / "model" / "broken.yaml").write_text("_target_: broken.build\n")
    refused = bnlab("train", "--user-dir", "myexp", "model=broken", *TINY)
    assert refused.returncode == 2 and "model._target_" in refused.stderr
    assert "Traceback" not in refused.stderr
    fine = bnlab("train", "--user-dir", "myexp", "model=tiny", *TINY)
    assert fine.returncode == 0, fine.stderr[-2000:]
