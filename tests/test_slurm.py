"""Sweeps and searches on a real single-node Slurm cluster (Debian's slurm-wlm and munge,
accounting off), through Hydra's submitit launcher, read back with MlflowClient."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from bnlab.stack import free_port
from conftest import TINY, disrupt_mid_sweep, run_train, sweep_runs, wait_for

pytestmark = pytest.mark.slow

SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
]


def _start_munge() -> int | None:
    """Starts munged as the munge user unless one answers; returns the pid it started."""
    if subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0:
        return None
    run_dir = Path("/run/munge")
    run_dir.mkdir(exist_ok=True)
    shutil.chown(run_dir, "munge", "munge")
    subprocess.run(["runuser", "-u", "munge", "--", shutil.which("munged")], check=True)
    wait_for(
        lambda: (
            subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0
        ),
        timeout=20,
    )
    return int((run_dir / "munged.pid").read_text())


def _config(folder: Path, node: str) -> str:
    return "\n".join(
        [
            "ClusterName=bnlab",
            f"SlurmctldHost={node}(127.0.0.1)",
            "SlurmUser=root",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "AuthType=auth/munge",
            f"StateSaveLocation={folder}/state",
            f"SlurmdSpoolDir={folder}/spool",
            f"SlurmctldPidFile={folder}/slurmctld.pid",
            f"SlurmdPidFile={folder}/slurmd.pid",
            f"SlurmctldLogFile={folder}/slurmctld.log",
            f"SlurmdLogFile={folder}/slurmd.log",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "MpiDefault=none",
            "ReturnToService=2",
            # A cancelled job gets SIGKILL 5 s after SIGTERM (submitit ignores SIGTERM).
            "KillWait=5",
            f"NodeName={node} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory=4000",
            f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """slurmctld and slurmd on loopback ports, with their own config (SLURM_CONF)."""
    missing = [
        name for name in ("slurmctld", "slurmd", "munged", "sbatch") if not shutil.which(name)
    ]
    if missing or os.geteuid() != 0:
        reason = f"needs root and Slurm ({', '.join(missing) or 'not root'})"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("slurm")
    (folder / "state").mkdir()
    (folder / "spool").mkdir()
    node = socket.gethostname().split(".")[0]
    conf = folder / "slurm.conf"
    conf.write_text(_config(folder, node))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    munge_pid = _start_munge()
    subprocess.run(["slurmctld", "-i"], env=env, check=True)
    subprocess.run(["slurmd"], env=env, check=True)

    def idle() -> bool:
        done = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
        return done.stdout.strip() == "idle"

    wait_for(idle, timeout=60)
    yield {"SLURM_CONF": str(conf)}
    subprocess.run(["scancel", "--user", "root"], env=env)

    def queue_empty() -> bool:
        done = subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True)
        return done.returncode != 0 or not done.stdout.strip()

    with contextlib.suppress(TimeoutError):
        wait_for(queue_empty, timeout=60)
    # The daemons, and any job step they leave (a slurmstepd outlives its slurmd).
    pids = [
        int(pid_file.read_text())
        for pid_file in (folder / "slurmd.pid", folder / "slurmctld.pid")
        if pid_file.exists()
    ]
    pids += _steps_of(conf)
    _stop(pids)
    if munge_pid:
        os.kill(munge_pid, signal.SIGTERM)


def _steps_of(conf: Path) -> list[int]:
    """The slurmstepd processes of the cluster configured by `conf`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (proc / "comm").read_text().strip() != "slurmstepd":
                continue
            if f"SLURM_CONF={conf}".encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
    return found


def _stop(pids: list[int]) -> None:
    """SIGTERM, then SIGKILL what is still there after 15 s."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), timeout=15)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_a_sweep_on_slurm_is_recorded_through_the_store(slurm, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/mlflow.db"
    done = run_train(
        ["-m", "bn=true,false", *TINY, *SLURM, f"tracking.uri={store}"], cwd=tmp_path, env=slurm
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [parent], jobs = sweep_runs(MlflowClient(tracking_uri=store))
    assert len(jobs) == 2 and parent.data.tags["jobs.finished"] == "2"
    for run in jobs:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["threads"] == "1"  # cpus_per_task
        assert run.data.tags["slurm_job_id"]
        assert run.info.status == "FINISHED"


def test_scancel_mid_job_leaves_no_running_run_and_the_relaunch_trains_what_is_missing(
    slurm, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path}/mlflow.db"
    args = [
        "-m",
        "bn=true,false",
        "data.limit=320",
        "train.steps=200",
        "train.eval_every=50",
        *SLURM,
        f"tracking.uri={store}",
        "tracking.heartbeat_seconds=2",
        "tracking.stale_after_seconds=8",
    ]
    client = MlflowClient(tracking_uri=store)
    cancelled = []

    def cancel(run) -> None:
        # One task of the array (ARRAY_TASK), not the whole array.
        tags = run.data.tags
        cancelled.append(f"{tags['slurm_array_job_id']}_{tags['slurm_array_task_id']}")
        subprocess.run(["scancel", cancelled[0]], env={**os.environ, **slurm}, check=True)

    # The BN job waits after its first evaluation until it is cancelled: a held job runs
    # past Slurm's KillWait whatever its schedule (submitit ignores scancel's SIGTERM, so
    # a job that ends within KillWait would finish), and the plain job runs through.
    returncode, _, err = disrupt_mid_sweep(
        args, tmp_path, client, cancel, slurm, hold_only=("model.bn", "true"), keep_held=True
    )
    assert returncode == 1, err[-3000:]
    assert "1 job(s) failed" in err
    _, jobs = sweep_runs(client)
    assert not [r for r in jobs if r.info.status == "RUNNING"]
    outcomes = sorted(r.data.tags["outcome"] for r in jobs)
    assert outcomes == ["finished", "killed"]
    [killed] = [r for r in jobs if r.data.tags["outcome"] == "killed"]
    assert cancelled[0].endswith(f"_{killed.data.tags['slurm_array_task_id']}")

    again = run_train(args, cwd=tmp_path, env=slurm)
    assert again.returncode == 0, again.stderr[-3000:]
    _, jobs = sweep_runs(client)
    complete = [r for r in jobs if r.data.tags["outcome"] == "finished"]
    assert sorted(r.data.params["model.bn"] for r in complete) == ["false", "true"]
    assert len(jobs) == 3  # the killed run, the survivor, and the one retrained cell


def test_a_search_on_slurm_reports_to_its_storage_and_resumes(slurm, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/optuna.db"
    args = [
        "-m",
        "hparams_search=lr_bn",
        *TINY,
        *SLURM,
        "hydra.sweeper.n_jobs=2",
        f"hydra.sweeper.storage={storage}",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
    ]
    done = run_train([*args, "hydra.sweeper.n_trials=2"], cwd=tmp_path, env=slurm)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = optuna.load_study(study_name="lr_bn", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert all(set(t.intermediate_values) == {10, 20} for t in trials)
    again = run_train([*args, "hydra.sweeper.n_trials=3"], cwd=tmp_path, env=slurm)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(optuna.load_study(study_name="lr_bn", storage=storage).trials) == 3
    [parent], jobs = sweep_runs(MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"))
    assert len(jobs) == 3
    assert {r.data.tags["mlflow.parentRunId"] for r in jobs} == {parent.info.run_id}
    assert all(r.data.tags.get("slurm_job_id") for r in jobs)
