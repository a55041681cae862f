"""The study in one command, and the project run through `mlflow run --env-manager local`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from bnlab.job import identity
from conftest import ROOT, TINY, experiment_runs, run_forked

pytestmark = pytest.mark.slow

PROJECT_FILES = ("MLproject", "python_env.yaml", "pyproject.toml", "src", "conf", "pipelines")


@pytest.mark.usefixtures("store_uri")  # a copy of the empty template store
def test_study_runs_the_blog_grid_then_reports_and_resumes(tmp_path: Path) -> None:
    # Two seeds instead of the default three keep the test short; the override is the
    # user's way to choose seeds (the default 36-job grid is checked in test_identity).
    command = [sys.executable, str(ROOT / "pipelines" / "study.py"), *TINY, "seed=0,1"]
    first = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db" in first.stdout
    # The main job runs on joblib, one single-threaded worker per CPU, and says how far it is.
    assert "24/24 done (24 trained, 0 skipped)" in first.stdout + first.stderr
    report = tmp_path / "reports" / "bn-trick"
    claims = json.loads((report / "claims.json").read_text())
    assert len(claims) == 6
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    parents = [r for r in experiment_runs(client) if r.data.tags.get("role") == "sweep"]
    assert len(parents) == 1 and parents[0].data.tags["jobs.finished"] == "24"
    jobs = [r for r in experiment_runs(client) if r.data.tags.get("role") == "job"]
    assert {r.data.tags["threads"] for r in jobs} == {"1"}
    assert "report/index.html" in {
        a.path for a in client.list_artifacts(parents[0].info.run_id, "report")
    }
    (report / "index.html").unlink()

    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert (report / "index.html").is_file()
    parents = [r for r in experiment_runs(client) if r.data.tags.get("role") == "sweep"]
    latest = max(parents, key=lambda run: run.info.start_time)
    assert latest.data.tags["jobs.skipped"] == "24"
    # The refreshed report still covers the whole grid, through the skipped runs.
    assert len(json.loads((report / "claims.json").read_text())) == 6


def run_study(command: list[str], cwd: Path, says: str) -> subprocess.CompletedProcess:
    """Runs a study command in `cwd`; it must succeed and its output say `says`."""
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert says in done.stdout + done.stderr
    return done


@pytest.mark.usefixtures("store_uri")  # a copy of the empty template store
def test_the_digits_example_sweeps_resumes_and_reports_through_the_plug_in_points(
    tmp_path: Path,
) -> None:
    # The second experiment (+experiment=digits: an MLP on the 8x8 digits), shrunk.
    command = [
        sys.executable,
        str(ROOT / "pipelines" / "study.py"),
        "+experiment=digits",
        *TINY,
        "seed=0",
        "lr=0.01,0.05",
    ]
    run_study(command, tmp_path, "8/8 done (8 trained, 0 skipped)")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    assert client.get_experiment_by_name("bn-trick") is None
    jobs = [r for r in experiment_runs(client, "bn-digits") if r.data.tags.get("role") == "job"]
    assert len(jobs) == 8
    for run in jobs:
        assert run.data.params["model._target_"] == "bnlab.plugins.mlp.build_mlp"
        assert run.data.params["data._target_"] == "bnlab.plugins.digits.load_digits"
        assert run.data.tags["identity_scheme"] == str(identity.SCHEME)
        [dataset] = run.inputs.dataset_inputs
        assert dataset.dataset.name == "digits"
        assert json.loads(dataset.dataset.profile)["input_shape"] == [8, 8, 1]
    assert {r.info.run_name for r in jobs} >= {"BN relu lr=0.01 s0", "no BN sigmoid lr=0.05 s0"}
    report = tmp_path / "reports" / "bn-digits"
    assert (report / "index.html").is_file()
    summary = (report / "summary.csv").read_text()
    assert "relu" in summary and "sigmoid" in summary

    run_study(command, tmp_path, "8/8 done (0 trained, 8 skipped)")
    jobs = [r for r in experiment_runs(client, "bn-digits") if r.data.tags.get("role") == "job"]
    assert len(jobs) == 8


@pytest.mark.usefixtures("store_uri")  # a copy of the empty template store
def test_the_normalizations_study_compares_four_variants_in_its_report(tmp_path: Path) -> None:
    # BN, LayerNorm, GroupNorm and none (conf/experiment/normalizations.yaml), shrunk.
    command = [
        sys.executable,
        "-m",
        "bnlab",
        "study",
        "+experiment=normalizations",
        "model=mlp",
        "data=digits",
        "train.steps=20",
        "train.eval_every=10",
        "seed=0,1",
        "lr=0.01",
        "activation=relu",
    ]
    run_study(command, tmp_path, "8/8 done (8 trained, 0 skipped)")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    jobs = [r for r in experiment_runs(client) if r.data.tags.get("role") == "job"]
    sides = {(r.data.params["bn"], r.data.params["model.norm"]) for r in jobs}
    assert sides == {("true", "batch"), ("true", "layer"), ("true", "group"), ("false", "batch")}
    report = tmp_path / "reports" / "bn-trick"
    summary = (report / "summary.md").read_text()
    rows = [line for line in summary.splitlines() if line.startswith("| relu | 0.01 |")]
    assert [row.split(" | ")[2] for row in rows] == ["BN", "LayerNorm", "GroupNorm", "none"]
    assert "best val acc − none" in summary
    [cell] = json.loads((report / "claims.json").read_text())
    assert list(cell["sides"]) == ["BN", "LayerNorm", "GroupNorm", "none"]
    assert all(side["seeds"] == 2 for side in cell["sides"].values())
    page = (report / "index.html").read_text()
    assert "BN vs LayerNorm vs GroupNorm vs none" in page
    assert "differences from none are paired by seed" in page


@pytest.fixture
def project(tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    copy.mkdir()
    for name in PROJECT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, copy / name)
    return copy


def mlflow_run(project: Path, store: str, *args: str) -> subprocess.CompletedProcess:
    # The entry points call `python`: this interpreter's, as in an activated environment.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "PATH": path}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mlflow",
            "run",
            str(project),
            "--env-manager",
            "local",
            "--experiment-name",
            "bn-trick",
            *args,
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.usefixtures("store_uri")  # a copy of the empty template store
def test_mlflow_run_entry_points_nest_and_record(project: Path, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=store)
    overrides = "bn=true,false " + " ".join(TINY)
    sweep = mlflow_run(project, store, "-e", "sweep", "-P", f"overrides={overrides}")
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    runs = experiment_runs(client)
    parents = [r for r in runs if r.data.tags.get("role") == "sweep"]
    jobs = [r for r in runs if r.data.tags.get("role") == "job"]
    # The project's run is the sweep's parent: no stray extra run.
    assert len(runs) == 3 and len(parents) == 1 and len(jobs) == 2
    assert parents[0].data.tags.get("mlflow.project.entryPoint") == "sweep"
    assert {job.data.tags["mlflow.parentRunId"] for job in jobs} == {parents[0].info.run_id}

    train = mlflow_run(
        project,
        store,
        "-e",
        "train",
        "-P",
        "bn=false",
        "-P",
        "lr=0.05",
        "-P",
        "activation=sigmoid",
        "-P",
        "steps=20",
    )
    assert train.returncode == 0, train.stderr[-3000:]
    [trained] = [
        r
        for r in experiment_runs(client)
        if r.data.tags.get("mlflow.project.entryPoint") == "train"
    ]
    assert trained.data.params["optimizer.learning_rate"] == "0.05"
    assert trained.data.params["model.activation"] == "sigmoid"
    assert trained.data.params["train.steps"] == "20"
    assert trained.data.tags["outcome"] == "finished"
    assert trained.info.run_name == "no BN sigmoid lr=0.05 s0 train.steps=20"

    report = mlflow_run(project, store, "-e", "report")
    assert report.returncode == 0, report.stderr[-3000:]
    [reported] = [
        r
        for r in experiment_runs(client)
        if r.data.tags.get("mlflow.project.entryPoint") == "report"
    ]
    assert reported.data.tags["role"] == "report"
    assert "report/index.html" in {
        a.path for a in client.list_artifacts(reported.info.run_id, "report")
    }


BAD_PATHS = [
    (["report.py", "--tracking-uri", "foo://nowhere"], "--tracking-uri"),
    (["report.py", "--tracking-uri", "http://[::1"], "--tracking-uri: not a valid URI"),
    (["report.py", "--tracking-uri", "sqlite:////proc/x/mlflow.db"], "--tracking-uri"),
    (["report.py", "--study", "s", "--optuna-storage", "bogus://x"], "--optuna-storage"),
    (["report.py", "--out", "/proc/x"], "--out"),
    (["sync.py", "no-such-folder"], "no-such-folder"),
    (["sync.py", "SPOOL", "--tracking-uri", "http://[::1"], "--tracking-uri: not a valid URI"),
]


@pytest.mark.usefixtures("store_uri")  # a copy of the empty template store
@pytest.mark.parametrize(("args", "key"), BAD_PATHS, ids=[" ".join(a) for a, _ in BAD_PATHS])
def test_pipelines_refuse_bad_paths_with_one_line(args: list[str], key: str, tmp_path: Path):
    # A store with one run, so only the path under test is wrong. Each case exits before
    # any work: it runs in a fork of a preloaded interpreter (argv, folder, output and exit
    # status as a fresh one's).
    from bnlab import tracking
    from bnlab.bench import synthetic_store

    store = tracking.Store(f"sqlite:///{tmp_path}/mlflow.db", "bn-trick")
    synthetic_store.log_run(store, bn=True, lr=0.01, activation="relu", seed=0)
    (tmp_path / "SPOOL").mkdir()
    script, *rest = args
    done = run_forked([str(ROOT / "pipelines" / script), *rest], tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    [line] = done.stderr.splitlines()
    assert line.startswith("error: ") and key in line
