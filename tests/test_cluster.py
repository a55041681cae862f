"""Cluster launchers (Hydra's Ray and Slurm plugins): presets compose, and a cluster that
cannot be reached fails in seconds with one line, before any run is recorded."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from bnlab.experiment import threads
from conftest import CONF_DIR, TINY, run_train_forked


def launcher(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", list(overrides), return_hydra_config=True).hydra.launcher


def test_presets_compose_and_set_each_jobs_cpus() -> None:
    ray = launcher("hydra/launcher=ray_cluster", "hydra.launcher.ray.remote.num_cpus=2")
    assert ray.ray.init.address == "auto" and ray.ray.remote.num_gpus == 0
    assert threads.per_job(ray, 0) == 2
    slurm = launcher("hydra/launcher=slurm", "hydra.launcher.partition=gpu")
    assert slurm.partition == "gpu" and slurm.timeout_min == 60
    assert threads.per_job(slurm, 0) == 2
    # Hydra's stock names still work.
    assert "submitit" in launcher("hydra/launcher=submitit_local")._target_
    assert "ray" in launcher("hydra/launcher=ray")._target_


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["hydra/launcher=ray_cluster"], {"RAY_ADDRESS": "127.0.0.1:9"}, "no Ray cluster answers"),
        (["hydra/launcher=slurm"], {"PATH": "NO_SLURM"}, "sbatch is not on PATH"),
    ],
)
def test_an_unreachable_cluster_fails_fast_before_anything_is_recorded(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    if env.get("PATH") == "NO_SLURM":
        # A PATH with git (for provenance) and nothing of Slurm.
        tools = tmp_path / "bin"
        tools.mkdir()
        (tools / "git").symlink_to(shutil.which("git"))
        env = {"PATH": str(tools)}
    started = time.monotonic()
    done = run_train_forked(["-m", *args, *TINY], cwd=tmp_path, env=env)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line
    assert time.monotonic() - started < 30
    assert not (tmp_path / "mlflow.db").exists()
