"""Liveness from the store: heartbeats, dead runs closed by the next launch, no double training."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from bnlab import metrics, tracking
from bnlab.config import validate
from bnlab.job import runner as job
from bnlab.job.identity import identity_hash
from bnlab.sweep import search
from conftest import TINY, experiment_runs, run_train, start_train, wait_for

# Heartbeats fast enough for a test to see a dead run within seconds.
FAST_LIVENESS = ["tracking.heartbeat_seconds=0.5", "tracking.stale_after_seconds=3"]


def test_heartbeat_stamps_the_run_and_writes_buffered_metrics(store_uri: str, client) -> None:
    store = tracking.Store(store_uri, "bn-trick")
    run = store.start_run("probe", {metrics.ROLE_TAG: "job"})
    created = float(client.get_run(run.run_id).data.tags[metrics.HEARTBEAT_TAG])
    run.log_metrics({metrics.VAL_ACCURACY: 0.4}, 5)  # the first evaluation: written at once
    assert [p.step for p in client.get_metric_history(run.run_id, metrics.VAL_ACCURACY)] == [5]
    run.log_metrics({metrics.VAL_ACCURACY: 0.5}, 10)  # buffered: FLUSH_SECONDS is 5 s
    assert [p.step for p in client.get_metric_history(run.run_id, metrics.VAL_ACCURACY)] == [5]
    requests: list[str] = []
    for name in ("log_batch", "set_tag"):
        send = getattr(run.client, name)

        def counted(*args, send=send, name=name, **kwargs):
            requests.append(name)
            return send(*args, **kwargs)

        setattr(run.client, name, counted)
    run.start_heartbeat(0.2)

    def beaten() -> bool:
        stamped = float(client.get_run(run.run_id).data.tags[metrics.HEARTBEAT_TAG])
        history = client.get_metric_history(run.run_id, metrics.VAL_ACCURACY)
        return stamped > created and sorted(p.step for p in history) == [5, 10]

    wait_for(beaten, timeout=10)
    run.stop_heartbeat()
    # One request per beat: the stamp rides on the metrics' batch (each request to a
    # server with accounts costs a password check).
    assert requests and set(requests) == {"log_batch"}
    run.end(metrics.FINISHED)
    assert client.get_run(run.run_id).info.status == "FINISHED"


def _age(client: MlflowClient, run_id: str, seconds: float) -> None:
    client.set_tag(run_id, metrics.HEARTBEAT_TAG, f"{time.time() - seconds:.3f}")


def test_a_launch_closes_dead_runs_with_their_parent_and_trains_the_cell_again(
    tiny_cfg, store_uri: str, client
) -> None:
    store = tracking.Store(store_uri, "bn-trick", stale_after_seconds=60)
    identity = identity_hash(validate(tiny_cfg()))
    parent = store.start_run("sweep dead", {metrics.ROLE_TAG: "sweep"})
    child = store.start_run(
        "job dead", {metrics.ROLE_TAG: "job", metrics.IDENTITY_TAG: identity}, parent.run_id
    )
    alive = store.start_run("sweep alive", {metrics.ROLE_TAG: "sweep"})
    foreign = store.start_run("not ours", {})
    for run in (parent, child, foreign):
        _age(client, run.run_id, 600)

    job.run(tiny_cfg())

    for run_id in (parent.run_id, child.run_id):
        closed = client.get_run(run_id)
        assert closed.info.status == "KILLED"
        assert closed.data.tags[metrics.OUTCOME_TAG] == metrics.KILLED
        assert "no heartbeat since" in closed.data.tags[metrics.ERROR_TAG]
    counts = client.get_run(parent.run_id).data.tags
    assert counts["jobs.launched"] == "1" and counts["jobs.killed"] == "1"
    assert client.get_run(alive.run_id).info.status == "RUNNING"
    assert client.get_run(foreign.run_id).info.status == "RUNNING"  # not this project's run
    complete = [
        run
        for run in experiment_runs(client)
        if run.data.tags.get(metrics.IDENTITY_TAG) == identity and run.info.status == "FINISHED"
    ]
    assert len(complete) == 1  # the killed cell was trained again


def test_a_job_waits_for_a_live_run_with_its_identity_and_reuses_it(
    tiny_cfg, store_uri: str, client, caplog
) -> None:
    store = tracking.Store(store_uri, "bn-trick")
    identity = identity_hash(validate(tiny_cfg()))
    rival = store.start_run("rival", {metrics.ROLE_TAG: "job", metrics.IDENTITY_TAG: identity})
    rival.start_heartbeat(0.2)

    def finish_once_the_job_waits() -> None:
        # The job opened its own claim, found the rival, withdrew the claim and waits.
        wait_for(lambda: waiting in caplog.text, timeout=120)
        rival.log_metrics({metrics.OBJECTIVE: 0.77}, 20)
        rival.end(metrics.FINISHED)

    waiting = f"Waiting for run {rival.run_id}"
    finisher = threading.Thread(target=finish_once_the_job_waits)
    finisher.start()
    with caplog.at_level(logging.INFO, logger="bnlab.job.runner"):
        final = job.run(tiny_cfg(*FAST_LIVENESS))
    finisher.join()
    assert waiting in caplog.text
    assert final[metrics.OBJECTIVE] == pytest.approx(0.77)
    [only] = experiment_runs(client)  # the waiting job's own claim was withdrawn
    assert only.info.run_id == rival.run_id
    # ... closed before it was deleted: no deleted run stays RUNNING.
    from mlflow.entities import ViewType

    experiment = client.get_experiment_by_name("bn-trick").experiment_id
    [withdrawn] = client.search_runs([experiment], run_view_type=ViewType.DELETED_ONLY)
    assert withdrawn.info.status == "KILLED"


def test_a_job_trains_when_the_run_it_waits_for_dies(tiny_cfg, store_uri: str, client) -> None:
    store = tracking.Store(store_uri, "bn-trick")
    identity = identity_hash(validate(tiny_cfg()))
    dying = store.start_run("dying", {metrics.ROLE_TAG: "job", metrics.IDENTITY_TAG: identity})
    final = job.run(tiny_cfg(*FAST_LIVENESS))  # no heartbeat ever comes: stale after 3 s
    assert final["steps"] == 20
    # The job that waited closed the dead run before it trained: no ghost stays RUNNING.
    dead = client.get_run(dying.run_id)
    assert dead.info.status == "KILLED" and dead.data.tags[metrics.OUTCOME_TAG] == metrics.KILLED
    finished = [run for run in experiment_runs(client) if run.info.status == "FINISHED"]
    assert len(finished) == 1


def _runs(client: MlflowClient) -> list:
    try:
        return experiment_runs(client)
    except Exception:  # the store is not created yet
        return []


@pytest.mark.slow
def test_a_sweep_killed_and_relaunched_at_once_leaves_no_ghost_and_one_run_per_cell(
    tmp_path: Path,
) -> None:
    args = ["-m", "bn=true,false", "data.limit=320", "train.steps=400", "train.eval_every=20"]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    sweep = start_train(
        [*args, *FAST_LIVENESS],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def training() -> bool:
        jobs = [r for r in _runs(client) if r.data.tags.get(metrics.ROLE_TAG) == "job"]
        return any(client.get_metric_history(r.info.run_id, metrics.VAL_ACCURACY) for r in jobs)

    wait_for(training)
    os.killpg(sweep.pid, signal.SIGKILL)
    sweep.wait(timeout=30)
    left = {r.info.run_id for r in _runs(client) if r.info.status == "RUNNING"}
    assert len(left) == 2  # the parent and its job: nobody closed them
    # Relaunched at once: the dead runs' stamps are still fresh, so the launch cannot reap
    # them; the job of the dead cell waits for its stamp to stop, then closes both.
    again = run_train([*args, *FAST_LIVENESS], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    runs = _runs(client)
    assert all(r.info.status != "RUNNING" for r in runs), [
        (r.info.run_name, r.data.tags) for r in runs if r.info.status == "RUNNING"
    ]
    for run_id in left:
        closed = client.get_run(run_id)
        assert closed.info.status == "KILLED"
        assert closed.data.tags[metrics.OUTCOME_TAG] == metrics.KILLED
    dead_parent = next(
        client.get_run(i) for i in left if client.get_run(i).data.tags["role"] == "sweep"
    )
    assert dead_parent.data.tags["jobs.killed"] == "1"
    complete = [
        r.data.tags[metrics.IDENTITY_TAG]
        for r in runs
        if r.data.tags.get(metrics.ROLE_TAG) == "job"
        and r.data.tags.get(metrics.OUTCOME_TAG) in metrics.COMPLETE_OUTCOMES
    ]
    assert len(complete) == 2 and len(set(complete)) == 2


@pytest.mark.slow
def test_identical_sweeps_at_once_in_one_folder_train_each_cell_once(tmp_path: Path) -> None:
    args = ["-m", "bn=true,false", "lr=0.001,0.01", *TINY, f"hydra.sweep.dir={tmp_path}/shared"]
    sweeps = [
        start_train(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [sweep.communicate(timeout=600) for sweep in sweeps]
    for sweep, (_, stderr) in zip(sweeps, outputs, strict=True):
        assert sweep.returncode == 0, stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    runs = _runs(client)
    parents = [r for r in runs if r.data.tags.get("role") == "sweep"]
    jobs = [r for r in runs if r.data.tags.get("role") == "job"]
    assert len(parents) == 2
    assert parents[0].data.tags["sweep_id"] != parents[1].data.tags["sweep_id"]
    identities = [r.data.tags[metrics.IDENTITY_TAG] for r in jobs]
    assert len(jobs) == 4 and len(set(identities)) == 4  # each cell trained once
    for parent in parents:
        tags = parent.data.tags
        assert tags["jobs.launched"] == "4"
        assert int(tags["jobs.finished"]) + int(tags["jobs.skipped"]) == 4
        for child in jobs:
            if child.data.tags[metrics.PARENT_TAG] == parent.info.run_id:
                assert child.data.tags["sweep_id"] == tags["sweep_id"]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_job_writes_every_evaluation_it_printed(tmp_path: Path, signum: int) -> None:
    args = ["data.limit=320", "train.steps=3000", "train.eval_every=10"]
    args += ["tracking.heartbeat_seconds=30", "tracking.stale_after_seconds=90"]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    process = start_train(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout))
    reader.start()
    # Stop it after three evaluations, well inside the 5-second metric buffer.
    wait_for(lambda: sum("- step " in line for line in list(lines)) >= 3)
    process.send_signal(signum)
    process.wait(timeout=60)
    reader.join(timeout=30)
    output = "".join(lines)
    assert process.returncode == 130, output[-2000:]
    printed = [int(step) for step in re.findall(r"- step (\d+):", output)]
    [run] = _runs(client)
    assert run.info.status == "KILLED"
    history = client.get_metric_history(run.info.run_id, metrics.VAL_ACCURACY)
    assert printed and sorted(point.step for point in history) == printed


@pytest.mark.slow
def test_a_stopped_joblib_sweep_writes_every_evaluation_its_jobs_printed(tmp_path: Path) -> None:
    """SIGTERM to a sweep's process group on the joblib launcher: its workers close their
    runs with every point they logged before the launcher kills them."""
    args = ["-m", "bn=true,false", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    args += ["data.limit=320", "train.steps=3000", "train.eval_every=10"]
    args += ["tracking.heartbeat_seconds=30", "tracking.stale_after_seconds=90"]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    process = start_train(
        args,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout))
    reader.start()
    # Both jobs evaluated a few times, well inside the 5-second metric buffer.
    wait_for(lambda: sum("- step " in line for line in list(lines)) >= 6)
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=120)
    reader.join(timeout=30)
    output = "".join(lines)
    assert process.returncode == 130, output[-2000:]
    jobs = [run for run in _runs(client) if run.data.tags.get(metrics.ROLE_TAG) == "job"]
    closed = {
        run.info.run_id: (run.info.status, run.data.tags.get(metrics.ERROR_TAG)) for run in jobs
    }
    assert jobs and all(status == "KILLED" for status, _ in closed.values()), closed
    logs = [path.read_text() for path in (tmp_path / "multirun").rglob("train.log")]
    for run in jobs:
        [log] = [text for text in logs if run.info.run_id in text]
        printed = [int(step) for step in re.findall(r"- step (\d+):", log)]
        history = client.get_metric_history(run.info.run_id, metrics.VAL_ACCURACY)
        assert sorted(point.step for point in history) == printed


@pytest.mark.slow
def test_a_search_fails_only_the_trials_of_dead_searches(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/optuna.db"
    storage = search.open_storage(url, heartbeat_seconds=1, stale_after_seconds=3)
    study = optuna.create_study(study_name="lr_bn", storage=storage, direction="maximize")
    dead, alive = study.ask(), study.ask()
    ids = {
        trial.number: storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name("lr_bn"), trial.number
        )
        for trial in (dead, alive)
    }
    stop = threading.Event()

    def keep_alive() -> None:
        while not stop.wait(0.5):
            storage.record_heartbeat(ids[alive.number])

    storage.record_heartbeat(ids[dead.number])
    stamped = time.monotonic()
    beating = threading.Thread(target=keep_alive)
    beating.start()
    try:
        # The dead trial's last stamp must be older than the search's staleness limit (3 s).
        wait_for(lambda: time.monotonic() - stamped > 3.5, timeout=10)
        done = run_train(
            [
                "-m",
                "hparams_search=lr_bn",
                *TINY,
                "hydra.sweeper.n_trials=2",
                "hydra.sweeper.heartbeat_seconds=1",
                "hydra.sweeper.stale_after_seconds=3",
            ],
            cwd=tmp_path,
        )
    finally:
        stop.set()
        beating.join()
    assert done.returncode == 0, done.stderr[-3000:]
    states = {t.number: t.state for t in optuna.load_study(study_name="lr_bn", storage=url).trials}
    assert states[dead.number] == optuna.trial.TrialState.FAIL
    assert states[alive.number] == optuna.trial.TrialState.RUNNING
    assert optuna.trial.TrialState.COMPLETE in states.values()


def test_a_job_whose_heartbeat_stopped_but_whose_process_lives_here_is_not_dead(
    monkeypatch,
) -> None:
    # A full disk stops a job's heartbeats while the job goes on offline: the sweep must
    # not close itself as if the launcher waited for a dead process.
    import socket
    import subprocess
    import sys
    from types import SimpleNamespace

    from bnlab.sweep import recorder

    interrupted = []
    monkeypatch.setattr(recorder._thread, "interrupt_main", lambda: interrupted.append(1))
    store = SimpleNamespace(stale_after_seconds=0.0)
    progress = SimpleNamespace(total=2, stop=lambda: None)
    watch = recorder.SweepRecorder(store, None, "s", progress)
    ended = {"status": "FINISHED", "live": False}
    here = {"status": "RUNNING", "live": False, "host": socket.gethostname()}
    for _ in range(3):
        watch.watch([ended, {**here, "pid": str(os.getpid())}])
    assert not interrupted and not watch.launcher_stuck
    # A process that has ended is dead, here or elsewhere.
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    ).stdout.strip()
    for dead in ({**here, "pid": gone}, {**here, "host": "elsewhere", "pid": str(os.getpid())}):
        watch = recorder.SweepRecorder(store, None, "s", progress)
        for _ in range(2):  # the first look starts the clock; the second is past it
            watch.watch([ended, dead])
        assert watch.launcher_stuck
    assert len(interrupted) == 2
