"""A spool folder is writable by others: hand-made entries cannot delete, leak or stop.

Each entry below is crafted as a hostile user with write access to `unsent/` would. Replay
checks every field, never follows a symbolic link, changes no run it did not create
unless that run carries the entry's own identity and experiment, and moves a bad entry
aside with one line while recording the others.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from bnlab import metrics, tracking
from bnlab.config import TrackingConfig
from bnlab.tracking import spool
from conftest import ROOT


def _journal(run_id: str, store: str, **fields: object) -> spool.Journal:
    values: dict = {
        "experiment": "bn-trick",
        "store": store,
        "run_id": run_id,
        "name": "BN relu lr=0.01 s0",
        "start_time": 1_700_000_000_000,
        "end_time": 1_700_000_060_000,
        "status": "FINISHED",
        "params": {"optimizer.lr": "0.01"},
        "tags": {metrics.ROLE_TAG: "job", metrics.OUTCOME_TAG: "finished", "identity": "x1"},
        "metrics": [("val/accuracy", 0.5, 1, 10)],
        "texts": {"config.yaml": "lr: 0.01\n"},
    }
    values.update(fields)
    return spool.Journal(**values)


def _rewrite(folder: Path, **fields: object) -> None:
    """Changes fields of an entry's run.json by hand, as a person with write access could."""
    record = json.loads((folder / spool.RUN_FILE).read_text())
    record.update(fields)
    (folder / spool.RUN_FILE).write_text(json.dumps(record))


def _all_runs(client: MlflowClient) -> list:
    experiments = client.search_experiments(view_type=ViewType.ALL)
    return client.search_runs([e.experiment_id for e in experiments], run_view_type=ViewType.ALL)


@pytest.fixture
def store(store_uri: str) -> tracking.Store:
    return tracking.open_store(TrackingConfig(uri=store_uri))


def test_an_entry_naming_another_experiments_run_deletes_nothing(
    tmp_path: Path, store_uri: str, store: tracking.Store, client: MlflowClient
) -> None:
    other = tracking.open_store(TrackingConfig(uri=store_uri, experiment="someone-else"))
    victim = other.start_run("their finished run", {metrics.ROLE_TAG: "job", "identity": "x1"})
    victim.end(metrics.FINISHED)
    same_experiment = store.start_run("another cell", {metrics.ROLE_TAG: "job", "identity": "y"})
    same_experiment.end(metrics.FINISHED)
    root = tmp_path / "unsent"
    _journal(victim.run_id, store_uri).save(root)
    _journal(same_experiment.run_id, store_uri).save(root)
    assert store.spool.record_pending(root) == 2
    for run_id in (victim.run_id, same_experiment.run_id):
        run = client.get_run(run_id)
        assert run.info.lifecycle_stage == "active" and run.info.status == "FINISHED"


def test_a_symbolic_link_is_never_uploaded_and_its_entry_is_moved_aside(
    tmp_path: Path, store_uri: str, store: tracking.Store, client: MlflowClient, caplog
) -> None:
    secret = tmp_path / "admin.password"
    secret.write_text("hunter2-secret\n")
    root = tmp_path / "unsent"
    as_file = _journal(uuid.uuid4().hex, store_uri).save(root)
    (as_file / "artifacts" / "notes.txt").symlink_to(secret)
    as_folder = _journal(uuid.uuid4().hex, store_uri).save(root)
    (as_folder / "artifacts" / "more").symlink_to(tmp_path, target_is_directory=True)
    linked_entry = root / uuid.uuid4().hex
    elsewhere = _journal(linked_entry.name, store_uri).save(tmp_path / "elsewhere")
    linked_entry.symlink_to(elsewhere, target_is_directory=True)
    good = _journal(uuid.uuid4().hex, store_uri).save(root)
    with caplog.at_level(logging.WARNING):
        assert store.spool.record_pending(root) == 1
    lines = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(lines) == 3 and all("symbolic link" in line for line in lines)
    [run] = [r for r in _all_runs(client) if r.data.tags.get(metrics.SPOOL_TAG)]
    assert run.data.tags[metrics.SPOOL_TAG] == good.name
    uploaded = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert uploaded == {"config.yaml"}
    assert sorted(p.name for p in (root / spool.QUARANTINE).iterdir()) == sorted(
        [as_file.name, as_folder.name, linked_entry.name]
    )
    assert secret.read_text() == "hunter2-secret\n"  # moved aside, never followed


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("run_id", "x' OR '1'='1", "run_id"),
        ("experiment", "../../etc", "experiment"),
        ("experiment", "/tmp/abs", "experiment"),
        ("status", "RUNNING", "status"),
        ("metrics", [["val/accuracy", "high", 1, 10]], "metrics"),
        ("params", {"lr": 0.01}, "params"),
        ("datasets", [{"name": "x"}], "datasets"),
        ("start_time", -5, "start_time"),
        ("name", "a\nb", "name"),
    ],
)
def test_a_bad_field_moves_its_entry_aside_in_one_line_and_the_others_are_recorded(
    tmp_path: Path,
    store_uri: str,
    store: tracking.Store,
    caplog,
    field: str,
    value: object,
    said: str,
) -> None:
    root = tmp_path / "unsent"
    bad = _journal(uuid.uuid4().hex, store_uri).save(root)
    _rewrite(bad, **{field: value})
    _journal(uuid.uuid4().hex, store_uri).save(root)
    with caplog.at_level(logging.WARNING):
        assert store.spool.record_pending(root) == 1
    [line] = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert bad.name in line and said in line and "\n" not in line
    assert (root / spool.QUARANTINE / bad.name / spool.RUN_FILE).is_file()


def test_sync_names_a_bad_entry_in_one_line_and_records_the_rest(
    tmp_path: Path, store_uri: str
) -> None:
    root = tmp_path / "unsent"
    bad = _journal(uuid.uuid4().hex, store_uri).save(root)
    _rewrite(bad, run_id="deadbeef' or tags.x = '")
    _journal(uuid.uuid4().hex, store_uri).save(root)
    done = subprocess.run(
        [sys.executable, str(ROOT / "pipelines" / "sync.py"), str(root)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**__import__("os").environ, "MLFLOW_TRACKING_URI": store_uri},
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "Recorded 1 run(s)" in done.stdout
    assert [line for line in done.stderr.splitlines() if bad.name in line]


def test_a_parent_that_is_not_in_the_store_is_dropped_not_pointed_at(
    tmp_path: Path, store_uri: str, store: tracking.Store, client: MlflowClient
) -> None:
    root = tmp_path / "unsent"
    tags = {metrics.ROLE_TAG: "job", "identity": "x1", metrics.PARENT_TAG: uuid.uuid4().hex}
    entry = _journal(uuid.uuid4().hex, store_uri, tags=tags).save(root)
    assert store.spool.record_pending(root) == 1
    [run] = [r for r in _all_runs(client) if r.data.tags.get(metrics.SPOOL_TAG) == entry.name]
    assert metrics.PARENT_TAG not in run.data.tags


def test_a_sync_killed_mid_way_leaves_no_deleted_run_running(
    tmp_path: Path, store_uri: str, store: tracking.Store, client: MlflowClient
) -> None:
    root = tmp_path / "unsent"
    job = store.start_run("BN relu lr=0.01 s0", {metrics.ROLE_TAG: "job", "identity": "x1"})
    entry = _journal(job.run_id, store_uri).save(root)
    # What a sync killed after creating its run left: a RUNNING run tagged with the entry.
    store.start_run("BN relu lr=0.01 s0", {"identity": "x1", metrics.SPOOL_TAG: entry.name})
    assert store.spool.record_pending(root) == 1
    runs = _all_runs(client)
    assert not [
        r for r in runs if r.info.lifecycle_stage == "deleted" and r.info.status == "RUNNING"
    ]
    [active] = [r for r in runs if r.info.lifecycle_stage == "active"]
    assert active.info.status == "FINISHED" and active.data.tags[metrics.SPOOL_TAG] == entry.name
