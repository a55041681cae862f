"""Sweeps and searches on a real Ray cluster (a head and a second worker node, started
with `ray start`), through Hydra's Ray launcher, read back with MlflowClient."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from bnlab.stack import free_port
from conftest import TESTS_DIR, TINY, disrupt_mid_sweep, run_train, sweep_runs

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))


def _ray(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(TESTS_DIR), "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run([RAY, *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """Two Ray nodes of one CPU each, each working in its own folder (no driver files)."""
    if not Path(RAY).exists():
        reason = "Ray is not installed (pip install -e '.[cluster]')"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    head, worker = tmp_path_factory.mktemp("head"), tmp_path_factory.mktemp("worker")
    port = free_port()
    _ray(["stop", "--force"], head)
    _ray(
        ["start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false"],
        head,
    )
    _ray(["start", f"--address=127.0.0.1:{port}", "--num-cpus=1"], worker)
    yield {"address": f"127.0.0.1:{port}", "nodes": (head, worker)}
    _ray(["stop", "--force"], head)


def test_a_sweep_on_ray_is_recorded_through_the_store_alone(ray_cluster, tmp_path: Path) -> None:
    driver = tmp_path / "driver"
    driver.mkdir()
    store = f"sqlite:///{tmp_path}/mlflow.db"
    done = run_train(
        [
            "-m",
            "bn=true,false",
            "lr=0.001,0.01",
            *TINY,
            "hydra/launcher=ray_cluster",
            f"tracking.uri={store}",
            "hydra.sweep.dir=sweep",
        ],
        cwd=driver,
        env={"RAY_ADDRESS": ray_cluster["address"]},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [parent], jobs = sweep_runs(MlflowClient(tracking_uri=store))
    assert len(jobs) == 4 and parent.data.tags["jobs.finished"] == "4"
    for run in jobs:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["threads"] == "1"  # Ray's num_cpus per job
        assert run.info.status == "FINISHED"
    # The jobs wrote their outputs where their node works; the driver's sweep folder
    # holds only what the driver wrote. The parent and the counts came from the store.
    assert sorted(p.name for p in (driver / "sweep").iterdir()) == ["multirun.yaml"]
    job_folders = [p for node in ray_cluster["nodes"] for p in (node / "sweep").glob("[0-9]*")]
    assert len(job_folders) == 4


def test_a_killed_ray_worker_leaves_no_running_run_and_the_relaunch_trains_what_is_missing(
    ray_cluster, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path}/mlflow.db"
    args = [
        "-m",
        "bn=true,false",
        "data.limit=320",
        "train.steps=400",
        "train.eval_every=20",
        "hydra/launcher=ray_cluster",
        f"tracking.uri={store}",
        "tracking.heartbeat_seconds=2",
        "tracking.stale_after_seconds=8",
    ]
    env = {"RAY_ADDRESS": ray_cluster["address"]}
    client = MlflowClient(tracking_uri=store)

    def kill_a_worker(run) -> None:
        [victim, *_] = _ray_task_pids()
        os.kill(victim, signal.SIGKILL)

    returncode, _, err = disrupt_mid_sweep(args, tmp_path, client, kill_a_worker, env)
    assert returncode == 1, err[-3000:]
    assert "1 job(s) failed" in err
    _, jobs = sweep_runs(client)
    assert not [r for r in jobs if r.info.status == "RUNNING"]
    assert [r.data.tags["outcome"] for r in jobs].count("killed") == 1

    again = run_train(args, cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    _, jobs = sweep_runs(client)
    complete = [r for r in jobs if r.data.tags["outcome"] == "finished"]
    assert sorted(r.data.params["model.bn"] for r in complete) == ["false", "true"]


def _ray_task_pids() -> list[int]:
    """Worker processes running a job: Ray names them after the task (`ray::_run_job`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if command.startswith(b"ray::_run_job"):
                found.append(int(entry.name))
    return sorted(found)


def test_a_search_on_ray_prunes_across_nodes_and_resumes(ray_cluster, tmp_path: Path) -> None:
    """A trial that learns, then one that stays at chance (plain sigmoid, lr=0.5), each on
    a Ray worker: the second is pruned against the first through the storage."""
    storage = f"sqlite:///{tmp_path}/optuna.db"
    args = [
        "-m",
        "hparams_search=lr_bn",
        "data.limit=640",
        "train.steps=60",
        "train.eval_every=20",
        "seed=choice(0)",
        "hydra/launcher=ray_cluster",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.pruner.n_startup_trials=1",
        "hydra.sweeper.pruner.n_warmup_steps=0",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
    ]
    env = {"RAY_ADDRESS": ray_cluster["address"]}
    good = run_train(
        [*args, "lr=0.01", "bn=true", "activation=relu", "hydra.sweeper.n_trials=1"],
        cwd=tmp_path,
        env=env,
    )
    assert good.returncode == 0, good.stderr[-3000:]
    hopeless = run_train(
        [*args, "lr=0.5", "bn=false", "activation=sigmoid", "hydra.sweeper.n_trials=2"],
        cwd=tmp_path,
        env=env,
    )
    assert hopeless.returncode == 0, hopeless.stderr[-3000:]
    trials = optuna.load_study(study_name="lr_bn", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"]
    assert max(trials[1].intermediate_values) < 60
    # The second launch resumed the study of the first, under the same search parent.
    [parent], jobs = sweep_runs(MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"))
    assert len(jobs) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in jobs} == {parent.info.run_id}
