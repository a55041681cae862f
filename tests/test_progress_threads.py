"""The sweep's progress line, and the thread counts a launcher gives each job."""

from __future__ import annotations

import sys

import pytest

from bnlab import metrics
from bnlab.experiment import threads
from bnlab.sweep import progress

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
RAY = "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def jobs(**counts: int) -> list[dict]:
    return [{"outcome": outcome} for outcome, n in counts.items() for _ in range(n)]


def test_progress_line_counts_from_the_jobs_and_times_by_the_trained_ones() -> None:
    found = jobs(finished=1, diverged=1, skipped=1, running=2)
    # 3 of 36 done; 2 trained in 20 s, so the 33 left take 33 * 10 s.
    assert progress.line(found, 36, 20.0) == (
        "3/36 done (2 trained, 1 skipped), 0:20 elapsed, ETA 5:30"
    )
    assert progress.line(jobs(running=2), 36, 5.0).endswith("ETA after the first job")
    assert progress.line(jobs(skipped=4), 4, 1.0) == (
        "4/4 done (0 trained, 4 skipped), 0:01 elapsed, ETA 0:00"
    )
    failed = jobs(finished=1, **{metrics.FAILED: 1, metrics.KILLED: 1})
    # The same outcome words as the sweep's summary ("1 failed, 1 killed").
    assert "3 trained, 0 skipped, 1 failed, 1 killed" in progress.line(failed, 10, 4000.0)
    killed = jobs(finished=1, **{metrics.KILLED: 2})
    assert "3 trained, 0 skipped, 2 killed" in progress.line(killed, 10, 60.0)
    assert "failed" not in progress.line(killed, 10, 60.0)
    assert "1:06:40 elapsed" in progress.line(failed, 10, 4000.0)


def test_each_launcher_gives_its_jobs_their_share_of_cpus(monkeypatch) -> None:
    monkeypatch.setattr(threads, "cpus", lambda: 8)
    assert threads.per_job({"_target_": JOBLIB, "n_jobs": 2}) == 4
    assert threads.per_job({"_target_": JOBLIB, "n_jobs": -1}) == 1
    assert threads.per_job({"_target_": JOBLIB, "n_jobs": -2}) == 1  # 7 workers on 8 CPUs
    assert threads.per_job({"_target_": JOBLIB, "n_jobs": 16}) == 1
    assert threads.per_job({"_target_": RAY, "ray": {"remote": {"num_cpus": 3}}}) == 3
    assert threads.per_job({"_target_": RAY, "ray": {"remote": {}}}) is None
    assert threads.per_job({"_target_": SLURM, "cpus_per_task": 6}) == 6
    assert threads.per_job({"_target_": BASIC}) is None
    assert threads.per_job(None) is None
    assert threads.per_job({"_target_": BASIC}, configured=2) == 2


def test_pinning_sets_what_the_backends_read_and_keeps_the_users_choice(monkeypatch) -> None:
    for name in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS", "TF_NUM_INTEROP_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's own setting wins
    for backend in ("tensorflow", "jax", "torch"):
        monkeypatch.delitem(sys.modules, backend, raising=False)
    assert threads.pin(1) is True
    import os

    assert os.environ["TF_NUM_INTRAOP_THREADS"] == "1"
    assert os.environ["TF_NUM_INTEROP_THREADS"] == "1"
    assert os.environ["OMP_NUM_THREADS"] == "3"
    assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/tmp/x --xla_cpu_multi_thread_eigen=false"
    monkeypatch.setitem(sys.modules, "tensorflow", object())
    assert threads.pin(1) is False  # too late: the backend already started
    assert threads.pin(None) is True


@pytest.mark.parametrize("value", [0, 1])
def test_train_threads_is_not_part_of_the_identity(value) -> None:
    from bnlab.config import validate
    from bnlab.job.identity import identity_hash
    from conftest import compose_config

    base = identity_hash(validate(compose_config([])))
    assert identity_hash(validate(compose_config([f"train.threads={value}"]))) == base


def test_a_running_job_without_a_recent_heartbeat_is_shown_stale() -> None:
    now = 1_000_000.0
    found = [
        {"outcome": "running", "status": "RUNNING", "beat": now - 3},
        {"outcome": "running", "status": "RUNNING", "beat": now - 30},
        {"outcome": metrics.FINISHED, "status": "FINISHED", "beat": now - 300},
    ]
    assert progress.stale(found, 12.0, now) == 1
    assert progress.stale(found, 60.0, now) == 0


def test_the_progress_line_names_stale_jobs_as_soon_as_their_count_changes(caplog) -> None:
    import logging
    import time

    found = [{"outcome": "running", "status": "RUNNING", "beat": time.time()}]
    shown = progress.Progress(lambda: found, 2, "Sweep x", 3600, quiet_seconds=12.0)
    try:
        with caplog.at_level(logging.INFO):
            shown.report()
            found[0]["beat"] = time.time() - 13  # its process stopped 13 s ago
            shown.report()
    finally:
        shown.stop()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Sweep x")]
    assert len(lines) == 2 and "stale" not in lines[0]
    assert "1 stale (no heartbeat for over 12 s)" in lines[1]
