"""Real multirun sweeps in subprocesses, read back through MlflowClient."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import (
    TINY,
    experiment_runs,
    free_port,
    run_train,
    serve,
    start_train,
    sweep_runs,
    wait_for,
)
from fault_injection import INTERRUPT_WHILE_CLOSING, fail_when, hold_jobs_until, hold_until

pytestmark = pytest.mark.slow

GRID = ["bn=true,false", "lr=0.001,0.01"]


def default_store(cwd: Path) -> MlflowClient:
    """The store a user gets without configuring anything: ./mlflow.db."""
    return MlflowClient(tracking_uri=f"sqlite:///{cwd}/mlflow.db")


@pytest.mark.usefixtures("store_uri")  # a copy of the empty template store
def test_a_failing_job_does_not_stop_the_sweep(tmp_path: Path) -> None:
    done = run_train(
        ["-m", "seed=0,1", "lr=0.001,0.01", *TINY, *fail_when("train.seed", 1)], cwd=tmp_path
    )
    assert done.returncode == 1
    assert "2 job(s) failed:" in done.stderr
    assert done.stderr.count(" s1: InjectedFailure") == 2
    parents, jobs = sweep_runs(default_store(tmp_path))
    assert len(parents) == 1 and len(jobs) == 4
    assert {run.data.tags["mlflow.parentRunId"] for run in jobs} == {parents[0].info.run_id}
    assert parents[0].info.status == "FAILED"
    assert parents[0].data.tags["jobs.failed"] == "2"
    assert parents[0].data.tags["jobs.finished"] == "2"
    statuses = sorted((run.info.status, run.data.tags["outcome"]) for run in jobs)
    assert statuses == [("FAILED", "failed")] * 2 + [("FINISHED", "finished")] * 2
    for run in jobs:
        if run.info.status == "FAILED":
            assert "InjectedFailure" in run.data.tags["error"]


def test_parallel_writers_to_one_fresh_store_lose_nothing_and_nest_each_job_under_its_parent(
    tmp_path: Path,
) -> None:
    """Two grid sweeps, each with two joblib workers, start at once on a store that does not
    exist; each nests its four jobs under its own parent run. The joblib workers are
    processes of their own (the basic launcher's jobs: the failing-job test below)."""
    commands = []
    for seed in (0, 1):
        commands.append(
            start_train(
                [
                    "-m",
                    *GRID,
                    *TINY,
                    f"seed={seed}",
                    "hydra/launcher=joblib",
                    "hydra.launcher.n_jobs=2",
                    f"hydra.sweep.dir={tmp_path}/sweep{seed}",
                ],
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    outputs = [command.communicate(timeout=600) for command in commands]
    for command, (_, stderr) in zip(commands, outputs, strict=True):
        assert command.returncode == 0, stderr[-3000:]
        assert "database is locked" not in stderr
    client = default_store(tmp_path)
    assert len(client.search_experiments(filter_string="name = 'bn-trick'")) == 1
    parents, jobs = sweep_runs(client)
    assert len(parents) == 2 and len(jobs) == 8
    assert all(run.info.status == "FINISHED" for run in parents + jobs)
    for run in jobs:
        assert len(client.get_metric_history(run.info.run_id, "val/accuracy")) == 2
    for seed, parent in zip((0, 1), sorted(parents, key=sweep_seed), strict=True):
        assert_a_grid_sweep(client, parent, jobs, seed, outputs[seed])


def sweep_seed(parent) -> str:
    return re.search(r"seed=(\d)", parent.data.params["sweep.overrides"]).group(1)


def assert_a_grid_sweep(client: MlflowClient, parent, jobs: list, seed: int, output) -> None:
    """`parent` is a finished sweep of GRID at `seed` whose four jobs nest under it."""
    sweep_id = parent.data.tags["sweep_id"]
    assert parent.info.run_name == f"sweep {sweep_id[:6]} (4 jobs)"
    note = parent.data.tags["mlflow.note.content"]
    assert "4 launched" in note and "4 finished" in note and "Best job: **" in note
    assert "report/index.html" in note
    assert parent.data.metrics == {}  # its counters are tags, not charts
    assert parent.data.tags["jobs.launched"] == "4"
    assert parent.data.tags["jobs.finished"] == "4"
    assert parent.data.params["sweep.overrides"].startswith("bn=true,false")
    mine = [run for run in jobs if run.data.tags["mlflow.parentRunId"] == parent.info.run_id]
    assert len(mine) == 4
    for run in mine:
        assert run.data.tags["sweep_id"] == sweep_id
        artifacts = {artifact.path for artifact in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "learning_curve.png", "train.log"} <= artifacts
    # Short names, what varies first; the sweep's constants (TINY) stay out.
    assert {run.info.run_name for run in mine} == {
        f"{bn} relu lr={lr} s{seed}" for bn in ("BN", "no BN") for lr in ("0.001", "0.01")
    }
    runs_table = re.findall(r"Runs table \(Group by -> bn\): (\S+)", "".join(output))
    experiment_id = parent.info.experiment_id
    assert runs_table == [
        f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    ]


def finished_jobs(client: MlflowClient) -> list:
    try:
        _, jobs = sweep_runs(client)
    except Exception:
        return []
    return [run for run in jobs if run.info.status == "FINISHED"]


@pytest.mark.usefixtures("store_uri")  # a copy of the empty template store
def test_an_interrupted_sweep_resumes_without_duplicates_and_a_late_ctrl_c_still_closes_it(
    tmp_path: Path,
) -> None:
    args = ["-m", *GRID, *TINY]
    client = default_store(tmp_path)
    # The second job (lr=0.01) waits after its first evaluation, so the Ctrl-C lands while
    # it trains, after the first job finished, however fast the jobs are.
    held = hold_until(str(tmp_path / "never-opened"), "lr", "0.01")
    sweep = start_train(
        [*args, *held], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )

    def second_job_training() -> bool:
        try:
            _, jobs = sweep_runs(client)
        except AssertionError:  # no experiment yet
            return False
        running = [
            run
            for run in jobs
            if run.info.status == "RUNNING" and run.data.params.get("lr") == "0.01"
        ]
        return any(client.get_metric_history(run.info.run_id, "val/accuracy") for run in running)

    wait_for(second_job_training)
    sweep.send_signal(signal.SIGINT)
    output, stderr = sweep.communicate(timeout=120)
    assert sweep.returncode == 130, stderr[-3000:]
    assert_none_running(client, output + stderr)
    parents, jobs = sweep_runs(client)
    assert parents[0].info.status == "KILLED"
    done_before = {run.data.tags["identity"] for run in finished_jobs(client)}
    assert len(done_before) == 1 and len(jobs) == 2

    # The relaunch trains the three others; a Ctrl-C that lands while it closes the sweep
    # (fault_injection.InterruptWhileClosing) still closes its parent, as KILLED.
    again = run_train([*args, *INTERRUPT_WHILE_CLOSING], cwd=tmp_path)
    assert again.returncode == 130, again.stderr[-3000:]
    assert_none_running(client, again.stdout + again.stderr)
    finished = finished_jobs(client)
    hashes = [run.data.tags["identity"] for run in finished]
    assert len(hashes) == 4 and len(set(hashes)) == 4
    parents, _ = sweep_runs(client)
    latest = max(parents, key=lambda run: run.info.start_time)
    assert latest.info.status == "KILLED"
    assert latest.data.tags["jobs.skipped"] == "1"
    assert latest.data.tags["jobs.launched"] == "4"
    jobs_file = Path(client.download_artifacts(latest.info.run_id, "jobs.json", str(tmp_path)))
    outcomes = [record["outcome"] for record in json.loads(jobs_file.read_text())]
    assert outcomes.count("skipped") == 1


def assert_none_running(client: MlflowClient, output: str) -> None:
    """No run of the store is left RUNNING; else says which, with the command's output."""
    running = [
        (run.info.run_name, run.data.tags)
        for run in experiment_runs(client)
        if run.info.status == "RUNNING"
    ]
    assert not running, f"{running}\n{output[-3000:]}"


def server_command(folder: Path, port: int) -> list[str]:
    """`mlflow server` on a SQLite store in `folder`, listening on loopback `port`."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{folder}/server.db",
        "--artifacts-destination",
        str(folder / "server-artifacts"),
        "--workers",
        "1",
    ]


# The server's job runner is not used: it would start a Huey consumer and its workers.
SERVER_ENV = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@pytest.fixture
def mlflow_server(tmp_path: Path):
    port = free_port()
    with serve(server_command(tmp_path, port), port, env=SERVER_ENV):
        yield f"http://127.0.0.1:{port}"


def test_job_against_a_real_mlflow_server(tmp_path: Path, mlflow_server: str) -> None:
    done = run_train([*TINY, f"tracking.uri={mlflow_server}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(tracking_uri=mlflow_server)
    [run] = experiment_runs(client)
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "val/accuracy")) == 2
    assert "learning_curve.png" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert not (tmp_path / "mlflow.db").exists()


def _parents(client: MlflowClient) -> list:
    """The store's sweep parents, none while the experiment does not exist yet."""
    if client.get_experiment_by_name("bn-trick") is None:
        return []
    return sweep_runs(client)[0]


def test_a_server_that_goes_down_before_the_jobs_open_runs_costs_one_line_a_job(
    tmp_path: Path,
) -> None:
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    gate = tmp_path / "gate"
    args = [
        "-m",
        *GRID,
        *TINY,
        f"tracking.uri={uri}",
        "tracking.deadline_seconds=3",
        "tracking.connect_seconds=3",
        "tracking.heartbeat_seconds=1",
        "tracking.stale_after_seconds=4",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
    ]
    client = MlflowClient(tracking_uri=uri)
    with serve(server_command(tmp_path, port), port, env=SERVER_ENV):
        # Every job waits before it opens its run until the server is gone.
        sweep = start_train(
            [*args, *hold_jobs_until(str(gate))],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: bool(_parents(client)), timeout=120)
        except BaseException:
            sweep.kill()
            raise
    gate.touch()
    out, _ = sweep.communicate(timeout=300)
    assert sweep.returncode == 1, out[-3000:]
    lines = out.splitlines()
    assert "Traceback" not in out and "Error executing job" not in out, out[-3000:]
    not_started = [line for line in lines if "not started:" in line]
    assert len(not_started) == 4, out[-3000:]
    for line in not_started:
        assert f"no tracking store answers at {uri}" in line
    # The four cells, each named once.
    assert len({line.split(" not started:")[0].split("Job ")[-1] for line in not_started}) == 4
    problems = [line for line in lines if re.search(r"\b(error|warning|failed)\b", line, re.I)]
    summary = [line for line in problems if line not in not_started]
    assert len(summary) == 1 and summary[0].startswith("error: could not close sweep"), out
    assert "the next launch from this store closes it" in summary[0]

    # The server is back: the next launch closes the parent and trains every cell.
    with serve(server_command(tmp_path, port), port, env=SERVER_ENV):
        [parent] = sweep_runs(client)[0]
        beat = float(parent.data.tags["heartbeat"])
        wait_for(lambda: time.time() - beat > 4, timeout=30)
        again = run_train(args, cwd=tmp_path)
        assert again.returncode == 0, again.stderr[-3000:]
        closed = client.get_run(parent.info.run_id)
        assert closed.info.status == "KILLED"
        assert closed.data.tags["jobs.launched"] == "0"
        assert len(finished_jobs(client)) == 4


def test_a_launched_job_derived_from_the_first_equals_its_full_composition(monkeypatch) -> None:
    import pickle

    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from bnlab.sweep.grid import grid_jobs
    from bnlab.sweep.launch_configs import DerivingConfigLoader
    from conftest import CONF_DIR

    sweep = ["model=mlp", "optimizer=adam,sgd", "lr=0.001,0.01", "seed=0,1", "train.steps=20"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", sweep, run_mode=RunMode.MULTIRUN)
        jobs = grid_jobs(master)
        composed = [loader.load_sweep_config(master, job) for job in jobs]
        # It travels to a launcher's workers pickled, composing its own first job there.
        deriving = pickle.loads(pickle.dumps(DerivingConfigLoader(loader)))
        calls = []
        compose_one = deriving._loader.load_sweep_config
        monkeypatch.setattr(
            deriving._loader,
            "load_sweep_config",
            lambda *a: calls.append(a[1]) or compose_one(*a),
        )
        derived = [deriving.load_sweep_config(master, job) for job in jobs]
    assert len(jobs) == 8
    for job, full, fast in zip(jobs, composed, derived, strict=True):
        assert OmegaConf.to_yaml(fast) == OmegaConf.to_yaml(full), job
        assert OmegaConf.is_struct(fast) and fast.hydra.overrides.task == job
    # Only the first job and those that change a config group were composed.
    assert calls == [job for job in jobs if job == jobs[0] or "optimizer=sgd" in job]
    assert deriving.get_search_path() is deriving._loader.get_search_path()
