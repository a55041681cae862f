"""The shared tracking stack: real PostgreSQL and MLflow server processes, started by
`pipelines/tracking_stack.py`, written to by real sweeps and read back through MlflowClient."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import (
    LIGHT,
    ROOT,
    disrupt_mid_sweep,
    experiment_runs,
    run_train,
    stack_command,
)
from fault_injection import fail_when

pytestmark = pytest.mark.slow

# The password of the account `bnlab`, which these tests put in URIs (MLflow wants 12+ characters).
SECRET = "pw-Wq81zT-Kd3"
# A shell with no account in the environment: the URI's credentials are the only ones.
NO_ACCOUNT = {"MLFLOW_TRACKING_USERNAME": None, "MLFLOW_TRACKING_PASSWORD": None}


@pytest.fixture(scope="module")
def uri_account(tracking_stack, tmp_path_factory) -> str:
    """An account whose password the tests write into URIs: `bnlab:SECRET`."""
    password_file = tmp_path_factory.mktemp("account") / "bnlab.password"
    password_file.write_text(SECRET + "\n")
    password_file.chmod(0o600)
    added = stack_command(
        "user", tracking_stack.root, "add", "bnlab", "--password-file", str(password_file)
    )
    assert added.returncode == 0, added.stderr
    return "bnlab"


def server_errors(log: Path, since: int) -> list[str]:
    """Error lines and 5xx answers the server logged after byte `since`."""
    text = log.read_bytes()[since:].decode(errors="replace")
    return [
        line
        for line in text.splitlines()
        if "Traceback" in line or " ERROR " in line or '" 500' in line or 'HTTP/1.1" 5' in line
    ]


def complete_history(client: MlflowClient, run_id: str, steps: int, every: int) -> bool:
    curve = client.get_metric_history(run_id, "val/accuracy")
    return sorted(point.step for point in curve) == list(range(every, steps + 1, every))


def test_up_twice_reuses_the_running_stack(tracking_stack) -> None:
    before = tracking_stack.server_pid
    started = time.monotonic()
    again = stack_command("up", tracking_stack.root)
    assert again.returncode == 0, again.stderr
    assert time.monotonic() - started < 10
    assert tracking_stack.tracking_uri in again.stdout
    assert f"env --dir {tracking_stack.root}" in again.stdout
    # `up` names the admin's password file; only `env` prints the password itself.
    assert tracking_stack.admin_password_file.read_text().strip() not in again.stdout
    assert type(tracking_stack).load(tracking_stack.root).server_pid == before
    status = stack_command("status", tracking_stack.root)
    assert status.returncode == 0 and "server: up" in status.stdout


def test_a_sweep_through_the_server_keeps_artifacts_there_and_no_password_anywhere(
    tracking_stack, stack_env, uri_account, tmp_path: Path
) -> None:
    port = tracking_stack.port
    uri = f"http://bnlab:{SECRET}@127.0.0.1:{port}"
    # The sweep takes the password from $MLFLOW_TRACKING_URI (tracking=server), the
    # failing single run from its command line, the report from --tracking-uri.
    done = run_train(
        [
            "-m",
            "bn=true,false",
            *LIGHT,
            "hydra/launcher=joblib",
            "tracking=server",
            "tracking.experiment=through-server",
        ],
        cwd=tmp_path,
        env={**NO_ACCOUNT, "MLFLOW_TRACKING_URI": uri},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # Hydra's own "Error executing job with overrides" line shows the override redacted.
    failed = run_train(
        [
            *LIGHT,
            f"tracking.uri={uri}",
            "tracking.experiment=through-server",
            "seed=5",
            *fail_when("train.seed", 5),
        ],
        cwd=tmp_path,
        env=NO_ACCOUNT,
    )
    assert failed.returncode != 0
    assert "Error executing job" in failed.stderr and "bnlab:***@" in failed.stderr
    report = subprocess.run(
        [
            sys.executable,
            str(ROOT / "pipelines" / "report.py"),
            "--tracking-uri",
            uri,
            "--experiment",
            "through-server",
            "--out",
            str(tmp_path / "report"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={key: value for key, value in os.environ.items() if key not in NO_ACCOUNT},
    )
    assert report.returncode == 0, report.stderr[-3000:]

    client = MlflowClient(tracking_uri=f"http://127.0.0.1:{port}")
    runs = experiment_runs(client, "through-server")
    jobs = [run for run in runs if run.data.tags.get("role") == "job"]
    assert sorted(run.data.tags["outcome"] for run in jobs) == ["failed", "finished", "finished"]
    [reported] = [run for run in runs if run.data.tags.get("role") == "report"]
    assert "report/index.html" in {
        item.path for item in client.list_artifacts(reported.info.run_id, "report")
    }
    for run in jobs:
        # Artifacts go through the server, into the stack's folder: no path on this disk.
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        assert (tracking_stack.root / "artifacts").rglob(f"{run.info.run_id}/artifacts/train.log")
        assert run.data.params["tracking.uri"] == f"http://bnlab:***@127.0.0.1:{port}"
    shown = [done.stdout, done.stderr, failed.stdout, failed.stderr, report.stdout, report.stderr]
    assert_no_secret(client, runs, shown, tmp_path)


def test_a_password_on_the_command_line_of_a_joblib_sweep_is_hidden_in_every_form(
    tracking_stack, stack_env, uri_account, tmp_path: Path
) -> None:
    # Hydra escapes the URI's colons in its launch lines and the jobs' overrides
    # (`http\://bnlab\:PW@...`), a form the redaction once let through.
    uri = f"http://bnlab:{SECRET}@127.0.0.1:{tracking_stack.port}"
    done = run_train(
        [
            "-m",
            "lr=0.001,0.002,0.003,0.004",
            *LIGHT,
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=4",
            f"tracking.uri={uri}",
            "tracking.experiment=cli-password",
        ],
        cwd=tmp_path,
        env=NO_ACCOUNT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tracking.uri=http\\://bnlab\\:***@127.0.0.1" in done.stdout + done.stderr
    client = MlflowClient(tracking_uri=f"http://127.0.0.1:{tracking_stack.port}")
    runs = experiment_runs(client, "cli-password")
    assert len([run for run in runs if run.data.tags.get("role") == "job"]) == 4
    assert_no_secret(client, runs, [done.stdout, done.stderr], tmp_path)


def assert_no_secret(client: MlflowClient, runs: list, shown: list[str], folder: Path) -> None:
    """SECRET is on no console line, in no run's name, params, tags or text artifacts,
    and in no file under `folder` (Hydra's saved configs among them)."""
    assert not [line for text in shown for line in text.splitlines() if SECRET in line]
    for run in runs:
        recorded = [run.info.run_name, *run.data.params.values(), *run.data.tags.values()]
        assert not [value for value in recorded if SECRET in str(value)], run.info.run_name
        for path in _text_artifacts(client, run.info.run_id):
            assert SECRET not in Path(client.download_artifacts(run.info.run_id, path)).read_text()
    written = [path for path in folder.rglob("*") if path.is_file()]
    assert any(path.name == "overrides.yaml" for path in written)
    assert any(path.name == "multirun.yaml" for path in written)
    leaking = [path for path in written if SECRET.encode() in path.read_bytes()]
    assert not leaking


def _text_artifacts(client: MlflowClient, run_id: str, folder: str | None = None) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, folder):
        if item.is_dir:
            found += _text_artifacts(client, run_id, item.path)
        elif item.path.endswith((".yaml", ".json", ".log", ".txt", ".html", ".csv", ".md")):
            found.append(item.path)
    return found


@pytest.mark.cpu_heavy
def test_eight_jobs_at_once_write_every_point_once(
    tracking_stack, stack_env, tmp_path: Path
) -> None:
    log = tracking_stack.root / "mlflow.log"
    since = log.stat().st_size
    done = run_train(
        [
            "-m",
            "bn=true,false",
            "lr=0.001,0.01",
            "seed=0,1",
            "model=mlp",
            "data=digits",
            "data.limit=320",
            "train.steps=40",
            "train.eval_every=5",
            "tracking=server",
            "tracking.experiment=load",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=8",
        ],
        cwd=tmp_path,
        env=stack_env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(tracking_uri=tracking_stack.tracking_uri)
    runs = experiment_runs(client, "load")
    [parent] = [run for run in runs if run.data.tags.get("role") == "sweep"]
    jobs = [run for run in runs if run.data.tags.get("role") == "job"]
    assert len(jobs) == 8 and len({run.data.tags["identity"] for run in jobs}) == 8
    assert parent.data.tags["jobs.launched"] == "8" and parent.data.tags["jobs.finished"] == "8"
    for run in jobs:
        assert run.info.status == "FINISHED"
        assert complete_history(client, run.info.run_id, 40, 5), run.info.run_name
    assert server_errors(log, since) == []


GRID = ["bn=true,false", "data.limit=320", "train.steps=300", "train.eval_every=30"]


@pytest.mark.parametrize("part", ["server", "postgres"])
def test_a_restart_mid_sweep_loses_nothing_and_a_relaunch_completes_the_grid(
    tracking_stack, stack_env, tmp_path: Path, part: str
) -> None:
    experiment = f"restart-{part}"
    args = ["-m", *GRID, "tracking=server", f"tracking.experiment={experiment}"]
    env = stack_env
    client = MlflowClient(tracking_uri=tracking_stack.tracking_uri)

    def restart(run) -> None:
        assert stack_command("down", tracking_stack.root, "--only", part).returncode == 0
        time.sleep(3)  # the outage's length, not a wait for a condition
        restarted = stack_command("up", tracking_stack.root, "--only", part)
        assert restarted.returncode == 0, restarted.stderr

    try:
        returncode, out, err = disrupt_mid_sweep(args, tmp_path, client, restart, env, experiment)
    finally:
        stack_command("up", tracking_stack.root)
    # Each job either rode out the outage or ended with a clear, listed error.
    assert returncode in (0, 1), err[-3000:]
    if returncode == 1:
        assert "job(s) failed" in err
    jobs = [r for r in experiment_runs(client, experiment) if r.data.tags.get("role") == "job"]
    shown = (out + err)[-4000:]
    for run in jobs:
        assert run.info.status != "RUNNING"
        if run.data.tags.get("outcome") == "finished":
            assert complete_history(client, run.info.run_id, 300, 30), run.info.run_name
        else:
            assert run.data.tags.get("error"), f"{run.info.run_name}: {shown}"

    again = run_train(args, cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    runs = experiment_runs(client, experiment)
    complete = [
        r for r in runs if r.data.tags.get("role") == "job" and r.data.tags["outcome"] == "finished"
    ]
    assert sorted(r.data.params["model.bn"] for r in complete) == ["false", "true"]
    for run in complete:
        assert complete_history(client, run.info.run_id, 300, 30), run.info.run_name


def test_down_keeps_the_data_and_up_brings_it_back(
    tracking_stack, stack_env, tmp_path: Path
) -> None:
    # Its own run, so the test holds whichever tests ran before it.
    client = MlflowClient(tracking_uri=tracking_stack.tracking_uri)
    kept = client.create_run(client.create_experiment("kept")).info.run_id
    client.log_metric(kept, "val/accuracy", 0.5, step=10)
    client.log_text(kept, "kept across down and up", "note.txt")
    client.set_terminated(kept)
    before = {run.info.run_id for run in experiment_runs(client, "kept")}
    assert stack_command("down", tracking_stack.root).returncode == 0
    status = stack_command("status", tracking_stack.root)
    assert status.returncode != 0 and "server: down" in status.stdout
    up = stack_command("up", tracking_stack.root)
    assert up.returncode == 0, up.stderr
    assert {run.info.run_id for run in experiment_runs(client, "kept")} == before == {kept}
    assert [(p.step, p.value) for p in client.get_metric_history(kept, "val/accuracy")] == [
        (10, 0.5)
    ]
    note = Path(client.download_artifacts(kept, "note.txt", str(tmp_path)))
    assert note.read_text() == "kept across down and up"
