"""Optuna searches launched from the Hydra command line, read back from Optuna and MLflow."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient

from bnlab.config import ConfigError
from bnlab.report.build import ReportError, build_report
from bnlab.sweep import search
from conftest import TINY, run_train, run_train_forked, runs_by_role
from fault_injection import fail_when

SEARCH = ["-m", "hparams_search=lr_bn", *TINY]


def study(cwd: Path, name: str = "lr_bn", storage: str | None = None) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage or f"sqlite:///{cwd}/optuna.db")


class Storage:
    """Where a search keeps its study: SQLite in the run folder, or the stack's PostgreSQL."""

    def __init__(self, uri: str | None, name: str, secret: str | None = None) -> None:
        self.uri = uri
        self.name = name
        self.secret = secret

    @property
    def overrides(self) -> list[str]:
        if self.uri is None:
            return []
        return [f"hydra.sweeper.storage={self.uri}", f"hydra.sweeper.study_name={self.name}"]

    def study(self, cwd: Path) -> optuna.Study:
        return study(cwd, self.name, self.uri)


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request, tmp_path: Path) -> Storage:
    """The same searches on Optuna's SQLite storage and on PostgreSQL (a shared stack).

    On PostgreSQL the URI carries the database password, which must appear nowhere.
    """
    if request.param == "sqlite":
        return Storage(None, "lr_bn")
    stack = request.getfixturevalue("tracking_stack")
    password = stack.pgpass.read_text().strip().rsplit(":", 1)[1]
    uri = stack.database_uri("optuna").replace("bnlab@", f"bnlab:{password}@")
    return Storage(uri, f"lr_bn_{tmp_path.name}", password)


def roles_in(cwd: Path) -> dict[str, list]:
    return runs_by_role(MlflowClient(tracking_uri=f"sqlite:///{cwd}/mlflow.db"))


def test_space_parses_hydra_sweep_syntax() -> None:
    dimensions = search.parse_space(
        {
            "lr": "tag(log, interval(1e-4, 0.5))",
            "bn": "choice(true, false)",
            "seed": "range(0, 3)",
            "momentum": "interval(0.5, 0.9)",
        }
    )
    by_name = {d.name: d.distribution for d in dimensions}
    assert by_name["lr"] == optuna.distributions.FloatDistribution(1e-4, 0.5, log=True)
    assert by_name["bn"] == optuna.distributions.CategoricalDistribution([True, False])
    assert by_name["seed"] == optuna.distributions.IntDistribution(0, 2)
    assert not by_name["momentum"].log


@pytest.mark.parametrize("target", search.SAMPLERS)
def test_every_sampler_is_instantiated_seeded_and_samples_the_space(target: str) -> None:
    dimensions = search.parse_space({"lr": "choice(0.001, 0.01, 0.1)", "seed": "range(0, 2)"})
    conf = {"_target_": target, "seed": 3}
    if target.endswith(("TPESampler", "CmaEsSampler")):
        conf["n_startup_trials"] = 1

    def draws() -> list[dict]:
        sampler = search.make_sampler(conf, dimensions)
        assert type(sampler).__name__ == target.rsplit(".", 1)[1]
        study_ = optuna.create_study(sampler=sampler, direction="maximize")
        values = []
        for _ in range(4):
            trial = study_.ask()
            params = {d.name: search.suggest(trial, d) for d in dimensions}
            study_.tell(trial, params["lr"] * (1 + params["seed"]))
            values.append(params)
        return values

    first = draws()
    assert first == draws()
    assert all(p["lr"] in (0.001, 0.01, 0.1) and p["seed"] in (0, 1) for p in first)


@pytest.mark.parametrize("target", search.PRUNERS)
def test_every_pruner_is_instantiated(target: str) -> None:
    pruner = search.make_pruner({"_target_": target})
    assert isinstance(pruner, optuna.pruners.BasePruner)
    assert type(pruner).__name__ == target.rsplit(".", 1)[1]


@pytest.mark.parametrize(
    ("conf", "key"),
    [
        ({"_target_": "optuna.samplers.NoSuchSampler"}, "hydra.sweeper.sampler._target_"),
        ({"_target_": "optuna.pruners.MedianPruner"}, "hydra.sweeper.sampler._target_"),
        ({"_target_": "optuna.samplers.TPESampler", "sigma0": 0.5}, "hydra.sweeper.sampler.sigma0"),
    ],
)
def test_a_sampler_that_cannot_be_built_is_refused_naming_the_key(conf: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        search.make_sampler(conf, [])


def test_a_trial_prunes_through_the_public_storage_and_pruner_api(tmp_path: Path) -> None:
    from bnlab.config import SearchConfig

    url = f"sqlite:///{tmp_path}/optuna.db"
    study_ = optuna.create_study(study_name="s", storage=url, direction="maximize")
    pruner = {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 1}
    study_.set_user_attr(search.PRUNER_ATTR, pruner)
    for value in (0.9, 0.8):
        trial = study_.ask()
        trial.report(value, 10)
        study_.tell(trial, value)
    hopeless = study_.ask()
    reporter = search.TrialReporter(SearchConfig(study="s", storage=url, trial=hopeless.number))
    assert isinstance(reporter.pruner, optuna.pruners.MedianPruner)
    assert reporter.report(10, {"val/accuracy": 0.1}) is True
    reporter.record("pruned", "run-1")
    stored = optuna.load_study(study_name="s", storage=url).trials[hopeless.number]
    assert stored.intermediate_values == {10: 0.1}
    assert stored.user_attrs == {"outcome": "pruned", "mlflow_run_id": "run-1"}


@pytest.mark.parametrize(
    "expression", ["interval(1e-4)", "foo(1, 2)", "0.1", "tag(log, interval(0, 1))"]
)
def test_bad_space_expressions_name_the_key(expression: str) -> None:
    with pytest.raises(ConfigError, match=r"^hydra\.sweeper\.params\.lr: "):
        search.parse_space({"lr": expression})


@pytest.mark.usefixtures("store_uri")  # a copy of the empty template store
def test_tiny_search_matches_between_optuna_and_mlflow_and_resumes_two_trials_at_once(
    tmp_path: Path, storage: Storage
) -> None:
    done = run_train([*SEARCH, *storage.overrides, "hydra.sweeper.n_trials=3"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = storage.study(tmp_path).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    roles = roles_in(tmp_path)
    [parent] = roles["search"]
    jobs = {int(run.data.tags["trial"]): run for run in roles["job"]}
    assert sorted(jobs) == [0, 1, 2]
    for trial in trials:
        run = jobs[trial.number]
        assert run.data.tags["study"] == storage.name
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.metrics["objective"] == pytest.approx(trial.value)
        assert float(run.data.params["optimizer.learning_rate"]) == pytest.approx(
            trial.params["lr"]
        )
        assert run.data.params["model.bn"] == str(trial.params["bn"]).lower()
        assert set(trial.intermediate_values) == {10, 20}
    best = storage.study(tmp_path).best_trial
    assert float(parent.data.tags["best.value"]) == pytest.approx(best.value)
    assert parent.data.params["search.lr"] == "tag(log, interval(1e-4, 0.5))"
    assert parent.data.params["sampler._target_"] == "optuna.samplers.TPESampler"
    assert parent.info.status == "FINISHED"

    report_dir = tmp_path / "report"
    build_report(
        f"sqlite:///{tmp_path}/mlflow.db",
        "bn-trick",
        report_dir,
        study=storage.name,
        optuna_storage=storage.uri or f"sqlite:///{tmp_path}/optuna.db",
    )
    table = pd.read_csv(report_dir / f"study_{storage.name}" / "trials.csv")
    assert table["value"].tolist() == pytest.approx([t.value for t in trials])
    for name in ("history.png", "importances.png", "lr_vs_accuracy.png"):
        assert (report_dir / f"study_{storage.name}" / name).read_bytes()[:4] == b"\x89PNG"
    page = (report_dir / "index.html").read_text()
    assert f"Study {storage.name}: optimization history" in page and "Best trial" in page
    with pytest.raises(ReportError, match="unknown study 'nope'"):
        build_report(
            f"sqlite:///{tmp_path}/mlflow.db",
            "bn-trick",
            report_dir,
            study="nope",
            optuna_storage=storage.uri or f"sqlite:///{tmp_path}/optuna.db",
        )

    # The relaunch resumes the study on the joblib launcher, two trials at once, each in
    # a worker process of its own that nests its run under the one search parent.
    joblib = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2"]
    again = run_train(
        [*SEARCH, *storage.overrides, *joblib, "hydra.sweeper.n_trials=5"], cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr[-3000:]
    trials = storage.study(tmp_path).trials
    # The median pruner may stop a resumed trial: it has three complete ones to compare.
    states = [t.state.name for t in trials]
    assert len(trials) == 5 and set(states) <= {"COMPLETE", "PRUNED"}, states
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 5
    roles = roles_in(tmp_path)
    assert len(roles["search"]) == 1 and len(roles["job"]) == 5
    parent = roles["search"][0].info.run_id
    assert {r.data.tags["mlflow.parentRunId"] for r in roles["job"]} == {parent}
    assert {r.data.tags["threads"] for r in roles["job"] if int(r.data.tags["trial"]) >= 3} == {"1"}
    if storage.secret:
        shown = done.stdout + done.stderr + again.stdout + again.stderr
        assert storage.secret not in shown
        for run in [*roles["search"], *roles["job"]]:
            recorded = [*run.data.params.values(), *run.data.tags.values()]
            assert not [value for value in recorded if storage.secret in value]
        files = [path for path in tmp_path.rglob("*") if path.is_file() and path.suffix != ".db"]
        assert not [path for path in files if storage.secret.encode() in path.read_bytes()]


@pytest.mark.usefixtures("store_uri")  # a copy of the empty template store
@pytest.mark.slow
@pytest.mark.parametrize(
    ("launcher", "storage"),
    [("basic", "sqlite"), ("joblib", "sqlite"), ("joblib", "postgresql")],
    indirect=["storage"],
)
def test_median_pruner_prunes_a_hopeless_trial(
    tmp_path: Path, launcher: str, storage: Storage
) -> None:
    """A trial that learns, then one that stays at chance (plain sigmoid, lr=0.5): pruned.

    Each trial runs in its own process (a launch each), so the pruner compares across
    processes through the storage.
    """
    settings = [
        *storage.overrides,
        "data.limit=640",
        "train.steps=60",
        "train.eval_every=20",
        "hydra.sweeper.pruner.n_startup_trials=1",
        "hydra.sweeper.pruner.n_warmup_steps=0",
        "seed=choice(0)",
    ]
    if launcher == "joblib":
        settings += ["hydra/launcher=joblib", "hydra.launcher.n_jobs=1"]
    good = run_train(
        [
            "-m",
            "hparams_search=lr_bn",
            *settings,
            "lr=0.01",
            "bn=true",
            "activation=relu",
            "hydra.sweeper.n_trials=1",
        ],
        cwd=tmp_path,
    )
    assert good.returncode == 0, good.stderr[-3000:]
    hopeless = run_train(
        [
            "-m",
            "hparams_search=lr_bn",
            *settings,
            "lr=0.5",
            "bn=false",
            "activation=sigmoid",
            "hydra.sweeper.n_trials=2",
        ],
        cwd=tmp_path,
    )
    assert hopeless.returncode == 0, hopeless.stderr[-3000:]
    trials = storage.study(tmp_path).trials
    assert [t.state for t in trials] == [
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
    ]
    reported = sorted(trials[1].intermediate_values)
    assert reported and max(reported) < 60  # stopped before the end of its schedule
    [pruned_run] = [r for r in roles_in(tmp_path)["job"] if r.data.tags["trial"] == "1"]
    assert pruned_run.info.status == "FINISHED"
    assert pruned_run.data.tags["outcome"] == "pruned"
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    curve = client.get_metric_history(pruned_run.info.run_id, "val/accuracy")
    assert [point.step for point in curve] == reported


@pytest.mark.usefixtures("store_uri")  # a copy of the empty template store
@pytest.mark.slow
def test_failing_trial_is_recorded_and_the_study_continues(tmp_path: Path) -> None:
    done = run_train(
        [
            *SEARCH,
            "hydra.sweeper.sampler._target_=optuna.samplers.GridSampler",
            "hydra.sweeper.sampler.n_startup_trials=null",
            "seed=choice(0,1)",
            *fail_when("train.seed", 1),
            "lr=0.01",
            "bn=true",
            "activation=relu",
            "hydra.sweeper.n_trials=2",
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "1 job(s) failed" in done.stderr
    states = sorted(t.state.name for t in study(tmp_path).trials)
    assert states == ["COMPLETE", "FAIL"]
    outcomes = sorted(r.data.tags["outcome"] for r in roles_in(tmp_path)["job"])
    assert outcomes == ["failed", "finished"]


BAD_SEARCH = [
    (["hydra.sweeper.params.lr=interval(1e-4)"], "hydra.sweeper.params.lr"),
    (["hydra.sweeper.sampler._target_=foo.Bar"], "hydra.sweeper.sampler._target_"),
    (["hydra.sweeper.pruner._target_=foo.Bar"], "hydra.sweeper.pruner._target_"),
    (
        ["hydra.sweeper.pruner._target_=optuna.pruners.HyperbandPruner"],
        "hydra.sweeper.pruner.n_startup_trials",
    ),
    (["hydra.sweeper.sampler.sigma0=0.5"], "hydra.sweeper.sampler.sigma0"),
    (["hydra.sweeper.storage=sqlite:////nonexistent/dir/optuna.db"], "hydra.sweeper.storage"),
    (["hydra.sweeper.params.lr=interval(-1, 0.1)"], "lr"),
]


@pytest.mark.parametrize(("args", "key"), BAD_SEARCH, ids=[a[0] for a, _ in BAD_SEARCH])
def test_bad_search_input_fails_before_any_trial(args: list[str], key: str, tmp_path: Path) -> None:
    done = run_train_forked([*SEARCH, *args], cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and key in lines[0], done.stderr[-2000:]
    assert not (tmp_path / "mlflow.db").exists()
    if (tmp_path / "optuna.db").exists():
        assert optuna.get_all_study_summaries(f"sqlite:///{tmp_path}/optuna.db") == []


def test_a_trial_that_failed_around_its_job_is_not_counted_and_is_asked_again() -> None:
    import optuna

    from bnlab.sweep import search
    from bnlab.sweep.optuna_sweeper import _count_finished

    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    # Its job never reached the storage (unreachable): no outcome on the trial.
    lost = study.ask()
    study.tell(lost, state=optuna.trial.TrialState.FAIL)
    assert _count_finished(study) == 0
    # Its job failed and said so: a trial used up.
    failed = study.ask()
    failed.set_user_attr(search.OUTCOME_ATTR, "failed")
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    done = study.ask()
    study.tell(done, 0.9)
    assert _count_finished(study) == 2
