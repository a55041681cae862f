"""A store that stops taking writes loses no result: the job keeps it on disk, and the
next launch records it instead of training the cell again."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from bnlab import metrics, tracking
from bnlab.config import TrackingConfig
from bnlab.tracking import spool
from bnlab.tracking.retries import StoreUnavailable
from conftest import disrupt_mid_sweep, experiment_runs, run_train

# Entries are named by the MLflow run id their job opened: 32 hex digits.
ELSEWHERE, RUN_1, RUN_2, GOOD_RUN = (uuid.uuid4().hex for _ in range(4))


def _journal(run_id: str, store: str) -> spool.Journal:
    return spool.Journal(
        experiment="bn-trick",
        store=store,
        run_id=run_id,
        name="BN relu lr=0.01 s0",
        start_time=1_700_000_000_000,
        end_time=1_700_000_060_000,
        status="FINISHED",
        params={"optimizer.lr": "0.01"},
        tags={metrics.ROLE_TAG: "job", metrics.OUTCOME_TAG: "finished", metrics.IDENTITY_TAG: "x1"},
        metrics=[("val/accuracy", 0.5, 1, 10), ("val/accuracy", 0.75, 2, 20)],
        texts={"config.yaml": "lr: 0.01\n"},
        blobs={"curves/learning_curve.png": b"\x89PNG fake"},
    )


def test_a_saved_run_is_recorded_once_complete_and_replaces_its_partial_run(
    tmp_path: Path, store_uri: str, client: MlflowClient
) -> None:
    store = tracking.open_store(TrackingConfig(uri=store_uri))
    partial = store.start_run(
        "BN relu lr=0.01 s0", {metrics.ROLE_TAG: "job", metrics.IDENTITY_TAG: "x1"}
    )
    partial.log_metrics({"val/accuracy": 0.5}, 10)
    partial.flush()
    root = tmp_path / "unsent"
    _journal(partial.run_id, store_uri).save(root)
    _journal(ELSEWHERE, "http://another-server:5000").save(root)
    assert store.spool.record_pending(root) == 1
    assert [saved.journal.run_id for saved in spool.pending(root)] == [ELSEWHERE]
    [run] = experiment_runs(client)
    assert run.info.run_id != partial.run_id
    assert run.info.status == "FINISHED" and run.data.tags[metrics.SPOOL_TAG] == partial.run_id
    assert store.find_complete_run("x1").run_id == run.info.run_id
    history = client.get_metric_history(run.info.run_id, "val/accuracy")
    assert [(p.step, p.value) for p in history] == [(10, 0.5), (20, 0.75)]
    assert run.data.params["optimizer.lr"] == "0.01"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "curves"} <= artifacts
    assert client.get_run(partial.run_id).info.lifecycle_stage == "deleted"
    assert store.spool.record_pending(root) == 0


class _RefusingClient:
    """A store that refuses every write, once all `writers` are inside a call at once."""

    def __init__(self, writers: int) -> None:
        self.together = threading.Barrier(writers, timeout=10)

    def log_batch(self, *args: object, **kwargs: object) -> None:
        self.together.wait()
        raise StoreUnavailable("the store refused the write")


def test_an_outage_met_by_two_threads_at_once_is_announced_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The heartbeat's flush and the job's own write can meet the outage together.
    logger = tracking.RunLogger(_RefusingClient(writers=2), "run-1")  # type: ignore[arg-type]
    logger.keep_offline(tmp_path / "unsent")
    writers = [
        threading.Thread(target=logger.set_tags, args=({"phase": "train"},)),
        threading.Thread(target=logger.log_params, args=({"optimizer.lr": 0.01},)),
    ]
    with caplog.at_level(logging.WARNING):
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join(timeout=20)
    announced = [r for r in caplog.records if "stopped taking writes" in r.getMessage()]
    assert logger.offline and len(announced) == 1
    # Both writes are kept for the spool, though neither reached the store.
    assert logger.journal.tags["phase"] == "train"
    assert logger.journal.params["optimizer.lr"] == "0.01"


def _refuse_writes(database: Path) -> list[str]:
    """Makes the SQLite file refuse writes; returns the command that undoes it."""
    if os.geteuid() != 0:
        database.chmod(0o444)
        return ["chmod", "0644", str(database)]
    # Root writes through file modes; the immutable attribute stops root too.
    done = subprocess.run(["chattr", "+i", str(database)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"cannot make the store read-only here: {done.stderr.strip()}")
    return ["chattr", "-i", str(database)]


@pytest.mark.slow
def test_a_job_whose_store_refuses_writes_keeps_its_results_and_the_relaunch_records_them(
    tmp_path: Path,
) -> None:
    args = [
        "-m",
        "bn=true,false",
        "model=mlp",
        "data=digits",
        "data.limit=320",
        "train.steps=300",
        "train.eval_every=30",
        "tracking.deadline_seconds=3",
        "tracking.connect_seconds=3",
    ]
    database = tmp_path / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{database}")
    undo: list[str] = []
    try:
        returncode, out, err = disrupt_mid_sweep(
            args, tmp_path, client, lambda run: undo.extend(_refuse_writes(database)), hold=True
        )
    finally:
        if undo:
            subprocess.run(undo, check=True)
    assert returncode != 0
    kept = spool.pending(tmp_path / "unsent")
    assert len(kept) == 1, (out + err)[-3000:]
    shown = (out + err).splitlines()
    assert_bounded(shown, jobs=2)
    [line] = [line for line in shown if "Kept the results of run" in line]
    [went_offline] = [line for line in shown if "stopped taking writes" in line]
    assert "goes on offline" in went_offline
    assert "python pipelines/sync.py" in line
    journal = kept[0].journal
    assert journal.status == "FINISHED"
    assert sorted({step for key, _, _, step in journal.metrics if key == "val/accuracy"}) == list(
        range(30, 301, 30)
    )
    assert (kept[0].folder / "artifacts" / "config.yaml").is_file()

    again = run_train(args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert spool.pending(tmp_path / "unsent") == []
    jobs = [r for r in experiment_runs(client) if r.data.tags.get("role") == "job"]
    complete = [r for r in jobs if r.data.tags.get("outcome") == "finished"]
    assert sorted(r.data.params["model.bn"] for r in complete) == ["false", "true"]
    [recorded] = [r for r in complete if metrics.SPOOL_TAG in r.data.tags]
    assert recorded.data.params["model.bn"] == journal.params["model.bn"]
    history = client.get_metric_history(recorded.info.run_id, "val/accuracy")
    assert sorted(point.step for point in history) == list(range(30, 301, 30))
    artifacts = {a.path for a in client.list_artifacts(recorded.info.run_id)}
    assert {"config.yaml", "identity.json", "learning_curve.png", "train.log"} <= artifacts
    # The relaunch reused the recorded cell: one of its two jobs was skipped.
    [parent] = [
        r
        for r in experiment_runs(client)
        if r.data.tags.get("role") == "sweep" and r.info.status == "FINISHED"
    ]
    identity = recorded.data.tags[metrics.IDENTITY_TAG]
    assert parent.data.tags[f"{metrics.SKIPPED_TAG_PREFIX}{identity}"] == recorded.info.run_id
    assert parent.data.tags["jobs.skipped"] == "1" and parent.data.tags["jobs.finished"] == "1"


# What a job prints in any case: its run's link, a progress line per evaluation, its end.
ROUTINE = ("][INFO] - step ", "][INFO] - MLflow run ", "][INFO] - finished: ")


def assert_bounded(shown: list[str], jobs: int) -> None:
    """No traceback on the console, and at most 20 lines per job about the fault."""
    assert not [line for line in shown if "Traceback" in line or "Logging error" in line]
    library_noise = ("I0000 ", "WARNING: All log messages", "oneDNN", "To enable the following")
    about_the_fault = [
        line
        for line in shown
        if line.strip()
        and not any(mark in line for mark in ROUTINE + library_noise)
        and "[HYDRA]" not in line
    ]
    assert len(about_the_fault) <= 20 * jobs, "\n".join(about_the_fault[:60])


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 40 MB tmpfs as the working folder, so that it can be filled (root mounts it)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _fill(folder: Path) -> None:
    with open(folder / "filler", "wb") as filler, contextlib.suppress(OSError):
        while True:
            filler.write(b"\0" * (1 << 20))
            filler.flush()


@pytest.mark.slow
def test_a_full_disk_mid_sweep_says_what_was_lost_in_few_lines_and_the_relaunch_completes(
    small_disk: Path,
) -> None:
    args = [
        "-m",
        "bn=true,false",
        "model=mlp",
        "data=digits",
        "data.limit=320",
        "train.steps=300",
        "train.eval_every=30",
        "tracking.deadline_seconds=3",
        "tracking.connect_seconds=3",
        # The jobs the full disk leaves RUNNING are closed by the relaunch once their
        # heartbeat is stale: fast heartbeats so it waits seconds, not the default minute.
        "tracking.heartbeat_seconds=1",
        "tracking.stale_after_seconds=5",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
    ]
    client = MlflowClient(tracking_uri=f"sqlite:///{small_disk / 'mlflow.db'}")
    returncode, out, err = disrupt_mid_sweep(
        args, small_disk, client, lambda run: _fill(small_disk), hold=True
    )
    shown = (out + err).splitlines()
    assert returncode != 0, (out + err)[-3000:]
    assert_bounded(shown, jobs=2)
    # Each job's results went to the spool, or a line names the run and what was lost.
    kept = {saved.journal.run_id for saved in spool.pending(small_disk / "unsent")}
    lost = [line for line in shown if "its results were lost" in line]
    assert len(kept) + len(lost) >= 1, (out + err)[-3000:]
    for line in lost:
        assert "run " in line and "No space left on device" in line
    # No partial entry, visible or staged.
    unsent = small_disk / "unsent"
    if unsent.exists():
        entries = {path.name for path in unsent.iterdir() if path.name != spool.QUARANTINE}
        assert entries == kept

    (small_disk / "filler").unlink()
    again = run_train(args, cwd=small_disk)
    assert again.returncode == 0, again.stderr[-3000:]
    runs = client.search_runs(
        [client.get_experiment_by_name("bn-trick").experiment_id],
        max_results=100,
        run_view_type=3,  # deleted runs too: a withdrawn placeholder is closed as well
    )
    assert not [run.info.run_name for run in runs if run.info.status == "RUNNING"]
    complete = [
        run
        for run in runs
        if run.data.tags.get("role") == "job"
        and run.data.tags.get("outcome") == "finished"
        and run.info.lifecycle_stage == "active"
    ]
    assert sorted(run.data.params["model.bn"] for run in complete) == ["false", "true"]


def test_an_entry_is_renamed_into_place_whole_and_a_failed_save_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "unsent"
    folder = _journal(RUN_1, "sqlite:///x.db").save(root)
    assert sorted(path.name for path in root.iterdir()) == [RUN_1]
    assert (folder / spool.RUN_FILE).is_file()
    assert (folder / "artifacts" / "curves" / "learning_curve.png").read_bytes() == b"\x89PNG fake"

    # A full disk while the second entry's run.json is written.
    real_write_text = Path.write_text

    def disk_full(path: Path, *args: object, **kwargs: object) -> int:
        if path.name == spool.RUN_FILE:
            raise OSError(28, "No space left on device")
        return real_write_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(OSError, match="No space left"):
        _journal(RUN_2, "sqlite:///x.db").save(root)
    monkeypatch.undo()
    # No partial entry, visible or staged: only the first, complete one.
    assert sorted(path.name for path in root.iterdir()) == [RUN_1]
    assert [saved.journal.run_id for saved in spool.pending(root)] == [RUN_1]


def test_a_run_the_spool_cannot_keep_is_said_in_one_line_naming_it(tmp_path: Path) -> None:
    logger = tracking.RunLogger(_RefusingClient(writers=1), "run-9")  # type: ignore[arg-type]
    blocked = tmp_path / "unsent"
    blocked.write_text("a file where the spool folder should be")
    logger.keep_offline(blocked)
    logger.log_params({"optimizer.lr": 0.01})
    with pytest.raises(tracking.ResultsLost) as lost:
        logger.end(metrics.FINISHED)
    message = str(lost.value)
    assert len(message.splitlines()) == 1
    assert "run run-9 (finished)" in message and "results were lost" in message


CORRUPT = b"\xad\xde not UTF-8 \xff"


def _corrupt_entry(root: Path) -> Path:
    folder = root / "0123corrupt"
    (folder / "artifacts").mkdir(parents=True)
    (folder / "artifacts" / "config.yaml").write_text("lr: 0.01\n")
    (folder / spool.RUN_FILE).write_bytes(CORRUPT)
    return folder


def test_a_corrupt_entry_is_moved_aside_whole_and_the_others_are_recorded(
    tmp_path: Path, store_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "unsent"
    _journal(GOOD_RUN, store_uri).save(root)
    _corrupt_entry(root)
    store = tracking.open_store(TrackingConfig(uri=store_uri))
    with caplog.at_level(logging.WARNING):
        assert store.spool.record_pending(root) == 1
    [line] = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert "0123corrupt" in line and "quarantine" in line
    # Kept, never deleted: the same bytes, in the quarantine folder.
    aside = root / spool.QUARANTINE / "0123corrupt"
    assert (aside / spool.RUN_FILE).read_bytes() == CORRUPT
    assert (aside / "artifacts" / "config.yaml").is_file()
    assert spool.pending(root) == []


@pytest.mark.slow
def test_a_corrupt_entry_blocks_neither_a_sweep_nor_a_run_nor_sync(tmp_path: Path) -> None:
    import sys

    from conftest import LIGHT, ROOT

    _corrupt_entry(tmp_path / "unsent")
    sweep = run_train(["-m", "bn=true,false", *LIGHT], cwd=tmp_path)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    assert "Traceback" not in sweep.stderr
    shown = (sweep.stdout + sweep.stderr).splitlines()
    assert len([line for line in shown if "cannot be read" in line]) == 1
    _corrupt_entry(tmp_path / "unsent")  # a second one, for the single run and for sync
    single = run_train(LIGHT, cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    _corrupt_entry(tmp_path / "unsent2")
    sync = subprocess.run(
        [sys.executable, str(ROOT / "pipelines" / "sync.py"), str(tmp_path / "unsent2")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sync.returncode == 0, sync.stderr[-3000:]
    assert "Traceback" not in sync.stderr and "Recorded 0 run(s)" in sync.stdout
    assert (tmp_path / "unsent2" / spool.QUARANTINE / "0123corrupt" / spool.RUN_FILE).is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    jobs = [r for r in experiment_runs(client) if r.data.tags.get("role") == "job"]
    assert sorted(r.data.tags["outcome"] for r in jobs) == ["finished", "finished"]


def test_a_deleted_store_file_is_named_as_gone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logger = tracking.RunLogger(_RefusingClient(writers=1), uuid.uuid4().hex)  # type: ignore[arg-type]
    logger.journal.store = f"sqlite:///{tmp_path / 'deleted.db'}"
    logger.keep_offline(tmp_path / "unsent")
    with caplog.at_level(logging.WARNING):
        logger.log_params({"optimizer.lr": 0.01})
    [line] = [r.getMessage() for r in caplog.records if "stopped taking writes" in r.getMessage()]
    assert f"the store file {tmp_path / 'deleted.db'} is gone" in line
    assert "readonly" not in line
