"""The claims' verdict rules on synthetic runs, and the suite's bookkeeping of its studies."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest

from bnlab import claim_suite, claims, metrics

SEEDS = (0, 1, 2)


def runs(grid: dict[str, tuple], outcome) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One synthetic run per grid point: `outcome(point)` gives its final metrics, and
    the steps at which it reaches 0.9 (None: never), for its validation curve."""
    rows, points = [], []
    keys = list(grid)
    for index, values in enumerate(itertools.product(*grid.values())):
        row = {
            "bn": True,
            "lr": 0.01,
            "activation": "relu",
            "model.init_scale": 1.0,
            "model.bn_bias": False,
            "model.bn_position": "before",
            "model.bn_momentum": 0.9,
            **dict(zip(keys, values, strict=True)),
            "run_id": f"run{index}",
        }
        found, reach = outcome(row)
        row |= {
            metrics.BEST_VAL_ACCURACY: 0.95,
            metrics.VAL_ACCURACY: 0.94,
            metrics.TRAIN_ACCURACY: 0.96,
            metrics.TEST_ACCURACY: 0.93,
            metrics.STEPS_PER_SECOND: 100.0,
            metrics.PARAMETERS: 94_024.0,
            metrics.VAL_ACCURACY_BATCH_STATS: 0.94,
            **found,
        }
        rows.append(row)
        for step in range(50, 1001, 50):
            value = 0.95 if reach is not None and step >= reach else 0.5
            points.append({"run_id": row["run_id"], "step": step, "value": value})
    return pd.DataFrame(rows), pd.DataFrame(points)


def mostly(row: dict, good: bool, seeds_for: tuple = SEEDS) -> bool:
    """Whether this seed shows the claim: every seed when `good`, none otherwise; the
    mixed case passes seeds_for=(0,), one seed of three."""
    return good and row["seed"] in seeds_for


def case(name: str, good: bool, seeds_for: tuple = SEEDS):
    grid_base = {"seed": SEEDS}

    def bn_wins(row) -> bool:
        return mostly(row, good, seeds_for)

    if name == "faster":
        grid = {"bn": (True, False), "activation": ("relu", "sigmoid"), "lr": (0.01,), **grid_base}

        def outcome(row):
            first = row["bn"] == bn_wins(row)
            return {}, 200 if first else 600

    elif name == "higher_lr":
        grid = {"bn": (True, False), "activation": ("relu",), "lr": (0.01, 0.1), **grid_base}

        def outcome(row):
            # Both learn at 0.01; at 0.1 only the side the seed favours learns.
            learns = row["lr"] == 0.01 or row["bn"] == bn_wins(row)
            return {metrics.BEST_VAL_ACCURACY: 0.9 if learns else 0.1}, None

    elif name == "init":
        grid = {"bn": (True, False), "model.init_scale": (0.1, 1.0, 10.0), **grid_base}

        def outcome(row):
            hurt = row["model.init_scale"] != 1.0 and row["bn"] != bn_wins(row)
            return {metrics.BEST_VAL_ACCURACY: 0.3 if hurt else 0.9}, None

    elif name == "activations":
        grid = {"bn": (True, False), "activation": ("relu", "sigmoid"), "lr": (0.05,), **grid_base}

        def outcome(row):
            fails = row["activation"] == "sigmoid" and row["bn"] != bn_wins(row)
            return {metrics.BEST_VAL_ACCURACY: 0.1 if fails else 0.9}, None

    elif name == "better":
        grid = {"bn": (True, False), "activation": ("relu",), "lr": (0.01,), **grid_base}

        def outcome(row):
            return {metrics.TEST_ACCURACY: 0.95 if row["bn"] == bn_wins(row) else 0.9}, None

    elif name == "not_regularizer":
        grid = {"bn": (True, False), "activation": ("relu",), "lr": (0.01,), **grid_base}

        def outcome(row):
            # A regularizer would shrink BN's train-validation gap.
            shrunk = row["bn"] and not bn_wins(row)
            return {metrics.TRAIN_ACCURACY: 0.95 if shrunk else 0.99}, None

    elif name == "no_bias":
        grid = {"model.bn_bias": (True, False), "activation": ("relu",), **grid_base}

        def outcome(row):
            without = not row["model.bn_bias"]
            return {metrics.BEST_VAL_ACCURACY: 0.95 if without == bn_wins(row) else 0.9}, None

    elif name == "placement":
        grid = {"model.bn_position": ("before", "after"), "activation": ("relu",), **grid_base}

        def outcome(row):
            before = row["model.bn_position"] == "before"
            return {metrics.BEST_VAL_ACCURACY: 0.95 if before == bn_wins(row) else 0.85}, None

    else:  # train_vs_inference
        grid = {"model.bn_momentum": (0.9, 0.99), "activation": ("relu",), **grid_base}

        def outcome(row):
            return {metrics.VAL_ACCURACY_BATCH_STATS: 0.8 if bn_wins(row) else 0.94}, None

    return runs(grid, outcome)


@pytest.mark.parametrize("name", sorted(claims.RULES))
def test_each_rule_says_supported_not_supported_and_mixed_as_its_seeds_do(name: str) -> None:
    expected = {
        (True, SEEDS): claims.SUPPORTED,
        (False, SEEDS): claims.NOT_SUPPORTED,
        (True, (0,)): claims.NOT_SUPPORTED,
        (True, (0, 1)): claims.SUPPORTED,
    }
    for (good, seeds_for), verdict in expected.items():
        finding = claims.RULES[name](*case(name, good, seeds_for))
        assert finding.verdict == verdict, (name, good, seeds_for, finding)
        assert finding.compared > 0 and finding.rule == claims.RULE_TEXTS[name]
        assert finding.bars is not None and not finding.bars.empty


@pytest.mark.parametrize(
    ("agree", "compared", "verdict"),
    [
        (6, 6, claims.SUPPORTED),
        (4, 6, claims.SUPPORTED),
        (3, 6, claims.MIXED),
        (2, 6, claims.NOT_SUPPORTED),
        (0, 6, claims.NOT_SUPPORTED),
        (0, 0, claims.NOT_RUN),
    ],
)
def test_verdicts_follow_two_thirds_and_one_third(agree: int, compared: int, verdict: str):
    assert claims.verdict(agree, compared) == verdict


def test_a_mixed_count_is_mixed_for_a_rule_too() -> None:
    # Two seeds of four for BN: half agree.
    grid = {"bn": (True, False), "activation": ("relu",), "lr": (0.01,), "seed": (0, 1, 2, 3)}
    frame, curves = runs(
        grid,
        lambda row: (
            {metrics.TEST_ACCURACY: 0.95 if row["bn"] == (row["seed"] < 2) else 0.9},
            None,
        ),
    )
    finding = claims.RULES["better"](frame, curves)
    assert (finding.agree, finding.compared, finding.verdict) == (2, 4, claims.MIXED)


def test_a_claim_whose_runs_are_not_all_recorded_is_not_run() -> None:
    study = claim_suite.expand("placement", ["train.steps=20", "train.eval_every=10"])
    assert len(study.cells) == 12 and study.cells["identity"].nunique() == 12
    assert study.command.startswith("python src/train.py -m +experiment=claims/placement")
    recorded = study.cells.head(11).assign(
        run_id=[f"run{i}" for i in range(11)],
        outcome=metrics.FINISHED,
        start_time=0,
        **{metrics.BEST_VAL_ACCURACY: 0.9},
    )
    result = claim_suite.judge(study, recorded, pd.DataFrame(columns=["run_id", "step", "value"]))
    assert result.finding is None and result.recorded == 11
    full = pd.concat([recorded, study.cells.tail(1).assign(run_id="run11", outcome="finished")])
    result = claim_suite.judge(study, full, pd.DataFrame(columns=["run_id", "step", "value"]))
    assert result.finding is not None and result.recorded == 12


def test_every_claim_study_is_data_with_three_seeds_and_a_known_rule() -> None:
    names = claim_suite.names()
    assert names[:2] == ["faster", "higher_lr"] and names[-1] == "train_vs_inference"
    for name in names:
        study = claim_suite.expand(name, [])
        assert study.claim.claim.rule in claims.RULES
        assert sorted(study.cells["seed"].unique()) == [0, 1, 2]
        assert study.claim.train.internals is True
    lrs = sorted(claim_suite.expand("higher_lr", []).cells["lr"].unique())
    assert len(lrs) >= 7 and {0.001, 0.01, 0.05} <= set(lrs)
    scales = claim_suite.expand("init", []).cells["model.init_scale"]
    assert scales.nunique() >= 4 and scales.max() / scales.min() >= 100
    assert set(claim_suite.expand("activations", []).cells["activation"]) == {
        "relu",
        "sigmoid",
        "tanh",
        "elu",
        "selu",
        "gelu",
        "swish",
        "softplus",
    }


@pytest.mark.slow
def test_a_tiny_claims_suite_runs_end_to_end_and_a_second_launch_resumes(tmp_path) -> None:
    import json
    import subprocess
    import sys

    from mlflow import MlflowClient

    from conftest import ROOT

    # The whole suite, shrunk: the digits MLP, 20 steps, one seed, one job at a time.
    tiny = [
        "model=mlp",
        "data=digits",
        "train.steps=20",
        "train.eval_every=10",
        "seed=0",
        "hydra/launcher=basic",
    ]
    study = [sys.executable, str(ROOT / "pipelines" / "study.py")]
    done = subprocess.run(
        [*study, "--claims", *tiny], cwd=tmp_path, capture_output=True, text=True, timeout=1500
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Claim 9/9: train_vs_inference" in done.stdout
    folder = tmp_path / "reports" / "bn-trick" / "claims"
    entries = json.loads((folder / "claims.json").read_text())
    assert [entry["id"] for entry in entries] == claim_suite.names()
    for entry in entries:
        assert entry["verdict"] in (claims.SUPPORTED, claims.NOT_SUPPORTED, claims.MIXED), entry
        assert 0 <= entry["k"] <= entry["n"] and entry["n"] > 0
        assert entry["recorded"] == entry["runs"]
        assert entry["rule"] == claims.RULE_TEXTS[entry["id"]]
    page = (folder / "index.html").read_text()
    assert all(entry["says"] in page for entry in entries)
    assert page.count("data:image/png;base64,") >= len(entries)

    # What the jobs logged inside the network, read back from the store.
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("bn-trick").experiment_id
    [run] = client.search_runs(
        [experiment], "params.bn = 'true' and params.`model.bn_momentum` = '0.99'", max_results=1
    )
    history = client.get_metric_history(run.info.run_id, metrics.PREACT_P50)
    assert [point.step for point in history] == [10, 20]
    assert metrics.VAL_ACCURACY_BATCH_STATS in run.data.metrics

    # A second launch trains nothing: every study's runs are found and reused.
    again = subprocess.run(
        [*study, "--claims=placement,no_bias", *tiny],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("Sweep finished") == 2
    assert "finished 0," in again.stdout and "trained, " in again.stdout


def test_an_unknown_claim_or_bad_override_fails_before_any_study_runs(tmp_path) -> None:
    import subprocess
    import sys

    from conftest import ROOT

    study = [sys.executable, str(ROOT / "pipelines" / "study.py")]
    for arguments, key in (
        (["--claims=faster,nope"], "--claims: no claim named nope"),
        (["--claims", "model.init_scale=-1"], "model.init_scale"),
    ):
        done = subprocess.run(
            [*study, *arguments], cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 2, done.stderr[-2000:]
        [line] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert key in line
        assert not (tmp_path / "mlflow.db").exists()
