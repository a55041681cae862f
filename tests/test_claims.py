"""The claims' verdict rules on synthetic runs, and the suite's bookkeeping of its studies."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest

from bnlab import metrics
from bnlab.claims import rules as claims
from bnlab.claims import suite as claim_suite
from bnlab.config.overrides import split_swept
from bnlab.job.identity import required_metrics

SEEDS = (0, 1, 2)


def mean_of(key: str) -> str:
    return f"{key}{metrics.MEAN_SUFFIX}"


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
            "train.batch_size": 32,
            "model.bn_noise": 0.0,
            "model.norm": "batch",
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


def timings(ratio: float, rounds: int = 7) -> pd.DataFrame:
    """A side-by-side timing of one cell: without bias takes `ratio` times the step time
    with it, every round."""
    return pd.DataFrame(
        [
            {"timing": "cell", "label": label, "round": number, "seconds": seconds, "start_time": 0}
            for number in range(rounds)
            for label, seconds in (("true", 0.030), ("false", 0.030 * ratio))
        ]
    )


NO_TIMINGS = pd.DataFrame(columns=["timing", "label", "round", "seconds"])


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

    elif name == "ics":
        grid = {"bn": (True, False), "activation": ("relu",), "lr": (0.001,), **grid_base}

        def outcome(row):
            # Plain: l2 0.6, cosine 0.5; BN below and above them when the seed shows it.
            wins = bn_wins(row)
            l2 = (0.2 if wins else 1.0) if row["bn"] else 0.6
            cosine = (0.8 if wins else 0.3) if row["bn"] else 0.5
            return {
                mean_of(metrics.MECHANISM_ICS_L2): l2,
                mean_of(metrics.MECHANISM_ICS_COSINE): cosine,
            }, None

    elif name == "smoothness":
        grid = {"bn": (True, False), "activation": ("relu",), "lr": (0.001,), **grid_base}

        def outcome(row):
            value = (1.0 if bn_wins(row) else 9.0) if row["bn"] else 5.0
            return {mean_of(key): value for key in claims.SMOOTHNESS_KEYS}, None

    elif name == "noisy_bn":
        # BN and Noisy BN (this study's grid) beside the plain runs of the study it uses.
        def outcome(row):
            wins, noisy = bn_wins(row), row["model.bn_noise"] > 0
            accuracy = (0.95 if wins else 0.8) if noisy else 0.95
            shift = (1.2 if wins else 0.1) if noisy else (0.01 if row["bn"] else 0.8)
            return {
                metrics.BEST_VAL_ACCURACY: accuracy,
                mean_of(metrics.MECHANISM_INPUT_SHIFT): shift,
            }, None

        with_bn, curves = runs({"bn": (True,), "model.bn_noise": (0.0, 0.5), **grid_base}, outcome)
        plain, plain_curves = runs({"bn": (False,), "model.bn_noise": (0.0,), **grid_base}, outcome)
        plain["run_id"] = "plain-" + plain["run_id"]
        plain_curves["run_id"] = "plain-" + plain_curves["run_id"]
        frame = pd.concat([with_bn, plain], ignore_index=True)
        return frame, pd.concat([curves, plain_curves], ignore_index=True), NO_TIMINGS

    elif name == "normalizations":
        # LayerNorm and GroupNorm (this study's grid) beside BN and plain (claims/faster's).
        def outcome(row):
            if not row["bn"]:
                return {metrics.BEST_VAL_ACCURACY: 0.85}, None
            if row["model.norm"] == "batch":
                return {metrics.BEST_VAL_ACCURACY: 0.95}, None
            return {metrics.BEST_VAL_ACCURACY: 0.95 if bn_wins(row) else 0.8}, None

        cell = {"activation": ("relu",), "lr": (0.01,), **grid_base}
        normed, curves = runs(
            {"bn": (True,), "model.norm": ("batch", "layer", "group"), **cell}, outcome
        )
        plain, plain_curves = runs({"bn": (False,), "model.norm": ("batch",), **cell}, outcome)
        plain["run_id"] = "plain-" + plain["run_id"]
        plain_curves["run_id"] = "plain-" + plain_curves["run_id"]
        frame = pd.concat([normed, plain], ignore_index=True)
        return frame, pd.concat([curves, plain_curves], ignore_index=True), NO_TIMINGS

    elif name == "batch_size":
        grid = {"bn": (True, False), "train.batch_size": (2, 8, 32), **grid_base}

        def outcome(row):
            # At 32 BN leads by 0.05; below it the lead is gone when the seed shows the
            # claim, and larger (0.09) when it does not.
            if not row["bn"]:
                return {metrics.BEST_VAL_ACCURACY: 0.9}, None
            if row["train.batch_size"] == 32:
                return {metrics.BEST_VAL_ACCURACY: 0.95}, None
            return {metrics.BEST_VAL_ACCURACY: 0.9 if bn_wins(row) else 0.99}, None

    else:  # train_vs_inference
        grid = {"model.bn_momentum": (0.9, 0.99), "activation": ("relu",), **grid_base}

        def outcome(row):
            return {metrics.VAL_ACCURACY_BATCH_STATS: 0.8 if bn_wins(row) else 0.94}, None

    return (*runs(grid, outcome), timings(0.98) if name == "no_bias" else NO_TIMINGS)


# Rules that compare accuracies count a cell (seeds paired) only beyond its noise floor:
# one or two seeds of three disagreeing put the cell's interval across zero.
PAIRED_HIGHER = {
    "init",
    "better",
    "train_vs_inference",
    "batch_size",
    "ics",
    "smoothness",
    "noisy_bn",
    "normalizations",
}
PAIRED_NOT_WORSE = {"no_bias", "placement", "not_regularizer"}


@pytest.mark.parametrize("name", sorted(claims.RULES))
def test_each_rule_says_supported_not_supported_and_mixed_as_its_seeds_do(name: str) -> None:
    expected = {
        (True, SEEDS): claims.SUPPORTED,
        (False, SEEDS): claims.NOT_SUPPORTED,
        (True, (0,)): claims.NOT_SUPPORTED,
        (True, (0, 1)): claims.SUPPORTED,
    }
    if name in PAIRED_HIGHER:
        # Seeds that disagree leave the cell within noise: no evidence either way.
        expected |= {(True, (0,)): claims.WITHIN_NOISE, (True, (0, 1)): claims.WITHIN_NOISE}
    if name in PAIRED_NOT_WORSE:
        # Nothing lower beyond noise: the claim that one side is not worse holds.
        expected |= {(True, (0,)): claims.SUPPORTED, (True, (0, 1)): claims.SUPPORTED}
    for (good, seeds_for), verdict in expected.items():
        finding = claims.RULES[name](*case(name, good, seeds_for))
        assert finding.verdict == verdict, (name, good, seeds_for, finding)
        assert finding.compared + finding.within_noise > 0
        assert finding.rule == claims.RULE_TEXTS[name] and "Noise floor" in finding.rule
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
    # Two activations of four where BN is better beyond noise, two where it is worse.
    grid = {
        "bn": (True, False),
        "activation": ("relu", "elu", "sigmoid", "tanh"),
        "lr": (0.01,),
        "seed": SEEDS,
    }
    wins = {"relu", "elu"}
    frame, curves = runs(
        grid,
        lambda row: (
            {
                metrics.TEST_ACCURACY: (0.95 if row["bn"] == (row["activation"] in wins) else 0.9)
                + 0.001 * row["seed"]
            },
            None,
        ),
    )
    finding = claims.RULES["better"](frame, curves, NO_TIMINGS)
    assert (finding.agree, finding.compared, finding.verdict) == (2, 4, claims.MIXED)


def test_differences_at_the_noise_floor_give_the_same_verdict_whatever_the_noise() -> None:
    # Batch and moving statistics that differ by 0 to 3 images of 256 at random, as two
    # machines would measure them: under a fixed threshold of 0.01 (2.56 images) the count
    # followed the draw; beyond the seeds' own interval, no draw is evidence either way.
    import numpy as np

    verdicts = set()
    for draw in range(20):
        noise = np.random.default_rng(draw)
        frame, curves = runs(
            {"model.bn_momentum": (0.9, 0.99), "activation": ("relu", "sigmoid"), "seed": SEEDS},
            lambda row, noise=noise: (
                {metrics.VAL_ACCURACY_BATCH_STATS: 0.94 + noise.integers(-3, 4) / 256},
                None,
            ),
        )
        verdicts.add(claims.RULES["train_vs_inference"](frame, curves, NO_TIMINGS).verdict)
    assert verdicts == {claims.WITHIN_NOISE}


def test_a_time_to_target_within_one_evaluation_interval_is_not_counted() -> None:
    # BN reaches 90 % at step 200, plain at 250 on seed 0 (one interval of 50: within the
    # resolution) and at 600 on the other seeds.
    frame, curves = runs(
        {"bn": (True, False), "activation": ("relu",), "lr": (0.01,), "seed": SEEDS},
        lambda row: ({}, 200 if row["bn"] else (250 if row["seed"] == 0 else 600)),
    )
    finding = claims.RULES["faster"](frame, curves, NO_TIMINGS)
    assert (finding.agree, finding.compared, finding.within_noise) == (2, 2, 1)
    assert finding.details["within_noise"] == 1


def test_a_claim_whose_runs_are_not_all_recorded_is_not_run() -> None:
    study = claim_suite.expand("placement", ["train.steps=20", "train.eval_every=10"])
    assert len(study.cells) == 12 and study.cells["identity"].nunique() == 12
    assert study.command.startswith("bnlab train -m +experiment=claims/placement")
    recorded = study.cells.head(11).assign(
        run_id=[f"run{i}" for i in range(11)],
        outcome=metrics.FINISHED,
        start_time=0,
        **{metrics.BEST_VAL_ACCURACY: 0.9},
    )
    no_curves = pd.DataFrame(columns=["run_id", "step", "value"])
    result = claim_suite.judge(study, recorded, no_curves)
    assert result.finding is None and result.recorded == 11
    full = pd.concat([recorded, study.cells.tail(1).assign(run_id="run11", outcome="finished")])
    result = claim_suite.judge(study, full, no_curves)
    assert result.finding is not None and result.recorded == 12


def test_a_claim_launches_nothing_only_when_its_runs_and_timings_would_all_be_reused() -> None:
    tiny = ["train.steps=20", "train.eval_every=10"]
    study = claim_suite.expand("no_bias", tiny)
    # Its own grid (placement's runs, which it does not use, are not in it).
    assert len(study.grid) == 12 and set(study.grid) <= set(study.cells["identity"])
    runs, timed = set(study.grid), {cell.identity for cell in study.timing}
    assert study.trains_nothing(runs, timed)
    assert not study.trains_nothing(runs - {study.grid[0]}, timed)
    assert not study.trains_nothing(runs, timed - {study.timing[0].identity})
    assert not claim_suite.expand("no_bias", [*tiny, "train.rerun=true"]).trains_nothing(
        runs, timed
    )
    # A study that measures the mechanism reuses only runs that measured it.
    ics = claim_suite.expand("ics", tiny)
    assert ics.claim.train.mechanism and not ics.timing
    assert required_metrics(ics.claim) == (metrics.MECHANISM_SECONDS,)
    assert required_metrics(study.claim) == ()
    assert ics.trains_nothing(set(ics.grid), set())


def test_the_store_says_which_runs_a_launch_would_reuse(store_uri: str) -> None:
    from mlflow import MlflowClient

    from bnlab.tracking import queries

    assert queries.recorded_identities(store_uri, "bn-trick") == (set(), set())
    client = MlflowClient(tracking_uri=store_uri)
    experiment = client.create_experiment("bn-trick")

    def record(tags: dict, status: str = "FINISHED", **values: float) -> None:
        run = client.create_run(experiment, tags=tags)
        for key, value in values.items():
            client.log_metric(run.info.run_id, key, value)
        client.set_terminated(run.info.run_id, status)

    job = {metrics.ROLE_TAG: "job", metrics.OUTCOME_TAG: metrics.FINISHED}
    record({**job, metrics.IDENTITY_TAG: "plain"})
    record({**job, metrics.IDENTITY_TAG: "measured"}, **{metrics.MECHANISM_SECONDS: 1.0})
    record({**job, metrics.IDENTITY_TAG: "killed"}, "KILLED")
    record({**job, metrics.IDENTITY_TAG: "failed", metrics.OUTCOME_TAG: metrics.FAILED})
    record({metrics.ROLE_TAG: "timing", metrics.TIMING_TAG: "timed"})
    assert queries.recorded_identities(store_uri, "bn-trick") == (
        {"plain", "measured"},
        {"timed"},
    )
    mechanism = queries.recorded_identities(store_uri, "bn-trick", (metrics.MECHANISM_SECONDS,))
    assert mechanism == ({"measured"}, {"timed"})


def test_no_bias_times_its_variants_side_by_side_and_is_not_run_until_they_are_timed() -> None:
    study = claim_suite.expand("no_bias", ["train.steps=20", "train.eval_every=10"])
    # One timed cell per activation (the first seed), each with and without bias.
    assert [cell.settings for cell in study.timing] == [
        {"activation": "relu"},
        {"activation": "sigmoid"},
    ]
    assert all(sorted(cell.variants) == ["false", "true"] for cell in study.timing)
    assert all(cell.variants["true"].model.bn_bias for cell in study.timing)
    assert len({cell.identity for cell in study.timing}) == 2
    assert study.command.startswith("python pipelines/study.py --claims=no_bias")
    # Longer bursts are another timing.
    longer = claim_suite.expand(
        "no_bias", ["train.steps=20", "train.eval_every=10", "claim.timing.rounds=9"]
    )
    assert {c.identity for c in longer.timing}.isdisjoint(c.identity for c in study.timing)

    recorded = study.cells.assign(
        run_id=[f"run{i}" for i in range(len(study.cells))],
        outcome=metrics.FINISHED,
        start_time=0,
        **{metrics.BEST_VAL_ACCURACY: 0.9, metrics.PARAMETERS: 1000.0},
    )
    no_curves = pd.DataFrame(columns=["run_id", "step", "value"])
    result = claim_suite.judge(study, recorded, no_curves, NO_TIMINGS)
    assert result.finding is None and result.recorded == len(study.cells) and not result.timed
    # One cell timed, twice (the newer counts); the other not yet.
    first = [
        timings(ratio).assign(timing=study.timing[0].identity, start_time=start)
        for ratio, start in ((1.5, 1), (0.9, 2))
    ]
    result = claim_suite.judge(study, recorded, no_curves, pd.concat(first))
    assert result.finding is None and not result.timed
    second = timings(0.95).assign(timing=study.timing[1].identity)
    result = claim_suite.judge(study, recorded, no_curves, pd.concat([*first, second]))
    assert result.finding is not None and result.timed
    details = result.finding.details
    assert details["step_time_without_over_with"] == pytest.approx(0.925)
    assert details["rounds_faster_without_bias"] == "14 of 14"
    low, high = details["step_time_ratio_ci95"]
    assert low < 0.925 < high


def test_no_bias_reports_the_side_by_side_step_time_not_the_runs_own() -> None:
    frame, curves, _ = case("no_bias", True)
    # The runs' own step times say the opposite; the timing decides what is shown.
    frame[metrics.STEPS_PER_SECOND] = frame["model.bn_bias"].map({True: 200.0, False: 100.0})
    details = claims.RULES["no_bias"](frame, curves, timings(1.1)).details
    assert details["step_time_without_over_with"] == pytest.approx(1.1)
    assert details["rounds_faster_without_bias"] == "0 of 7"


def test_faster_counts_seconds_with_the_side_by_side_step_times_not_the_runs_own() -> None:
    # BN reaches 90 % at step 200, plain at 400.
    grid = {"bn": (True, False), "activation": ("relu",), "lr": (0.01,), "seed": SEEDS}
    frame, curves = runs(grid, lambda row: ({}, 200 if row["bn"] else 400))
    # The runs' own step times (under another load) make a BN step 4x a plain one: BN
    # would be later (8 s against 4 s). Timed side by side it costs 1.2x (2.4 s against 4 s).
    frame[metrics.STEPS_PER_SECOND] = frame["bn"].map({True: 25.0, False: 100.0})
    timed = pd.DataFrame(
        [
            {"label": label, "round": number, "seconds": seconds, "activation": "relu"}
            | {"lr": 0.01, "timing": "cell", "start_time": 0}
            for number in range(7)
            for label, seconds in (("true", 0.012), ("false", 0.010))
        ]
    )
    finding = claims.RULES["faster"](frame, curves, timed)
    assert (finding.agree, finding.compared) == (3, 3)
    assert finding.details["bn_step_cost_ratio"] == pytest.approx(1.2)
    assert finding.details["step_time"] == "timed side by side"
    untimed = claims.RULES["faster"](frame, curves, NO_TIMINGS)
    assert (untimed.agree, untimed.compared) == (0, 3)
    assert untimed.details["step_time"] == "the runs' own"


def test_every_claim_study_is_data_with_three_seeds_and_a_known_rule() -> None:
    names = claim_suite.names()
    assert names[:2] == ["faster", "higher_lr"] and names[-1] == "normalizations"
    # A study whose runs another claim reads comes before it.
    assert names.index("ics") < names.index("noisy_bn")
    for name in names:
        study = claim_suite.expand(name, [])
        assert study.claim.claim.rule in claims.RULES
        assert sorted(study.cells["seed"].unique()) == [0, 1, 2]
        assert study.claim.train.internals is True
        for used in study.claim.claim.uses:
            # Its cells hold the used study's: the rule reads both.
            assert set(claim_suite.expand(used, []).cells["identity"]) <= set(
                study.cells["identity"]
            )
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
    # BN's advantage from batch 2 to 128, the learning rate scaled by Adam's rule.
    batch = claim_suite.expand("batch_size", [])
    assert sorted(batch.cells["train.batch_size"].unique()) == [2, 4, 8, 32, 128]
    assert batch.claim.train.lr_scaling == "sqrt" and batch.claim.train.lr_reference_batch == 32


def test_a_swept_override_replaces_a_studys_own_list_as_on_the_command_line() -> None:
    # `bnlab study --claims seed=3,4,5`: three other seeds for every claim (composition
    # alone refuses a sweep, with Hydra's "Ambiguous value"); the launch's multirun takes
    # it as it is, after the study's params.
    assert split_swept(["seed=3,4,5", "train.steps=20"]) == (
        ["train.steps=20"],
        ["seed=3,4,5"],
    )
    noisy = claim_suite.expand("noisy_bn", ["seed=3,4,5", "train.steps=20"])
    assert sorted(noisy.cells["seed"].unique()) == [3, 4, 5]  # its own and ics's cells
    assert noisy.overrides == ["seed=3,4,5", "train.steps=20"]
    # A key the study does not sweep becomes a sweep of it.
    placement = claim_suite.expand("placement", ["train.batch_size=16,32"])
    assert sorted(placement.cells["train.batch_size"].unique()) == [16, 32]
    assert len(placement.cells) == 2 * len(claim_suite.expand("placement", []).cells)


def test_the_learning_rate_follows_the_batch_size_by_the_chosen_rule() -> None:
    from bnlab.config import effective_learning_rate, validate
    from conftest import compose_config

    def rate(*overrides: str) -> float:
        return effective_learning_rate(validate(compose_config(["lr=0.001", *overrides])))

    assert rate("train.batch_size=8") == pytest.approx(0.001)
    assert rate("train.batch_size=8", "train.lr_scaling=sqrt") == pytest.approx(0.0005)
    assert rate("train.batch_size=128", "train.lr_scaling=linear") == pytest.approx(0.004)
    assert rate(
        "train.batch_size=16", "train.lr_scaling=linear", "train.lr_reference_batch=64"
    ) == pytest.approx(0.00025)


# The claims whose variants are timed side by side (`claim.timing`).
TIMED = ("faster", "no_bias")


@pytest.mark.slow
@pytest.mark.cpu_heavy
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
    assert f"Claim {len(claim_suite.names())}/{len(claim_suite.names())}: " in done.stdout
    folder = tmp_path / "reports" / "bn-trick" / "claims"
    entries = json.loads((folder / "claims.json").read_text())
    assert [entry["id"] for entry in entries] == claim_suite.names()
    for entry in entries:
        assert entry["verdict"] in (
            claims.SUPPORTED,
            claims.NOT_SUPPORTED,
            claims.MIXED,
            claims.WITHIN_NOISE,
        ), entry
        assert 0 <= entry["k"] <= entry["n"] and entry["n"] + entry["within_noise"] > 0
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

    # no_bias's variants, timed side by side after its sweep: one run per activation;
    # faster's BN and plain, one run per activation and learning rate.
    timed = client.search_runs([experiment], f"tags.{metrics.ROLE_TAG} = 'timing'")
    by_claim = {name: [r for r in timed if r.data.params["claim.id"] == name] for name in TIMED}
    assert sorted(run.data.params["activation"] for run in by_claim["no_bias"]) == [
        "relu",
        "sigmoid",
    ]
    assert len(by_claim["faster"]) == 6 and len(timed) == 8
    for run in timed:
        assert run.info.status == "FINISHED"
        for label in ("true", "false"):
            points = client.get_metric_history(run.info.run_id, metrics.TIMING_PREFIX + label)
            assert [point.step for point in points] == list(range(7))
            assert all(0 < point.value < 1 for point in points)
    [no_bias] = [entry for entry in entries if entry["id"] == "no_bias"]
    assert no_bias["details"]["rounds_faster_without_bias"].endswith(" of 14")
    assert no_bias["details"]["step_time_without_over_with"] > 0
    [faster] = [entry for entry in entries if entry["id"] == "faster"]
    assert faster["details"]["step_time"] == "timed side by side"

    # A second launch trains only what is missing: placement lost one run, no_bias one of
    # its timings (its sweep reuses every run; its timing times the lost cell again and
    # reuses the other). faster has everything recorded, so it launches nothing.
    [lost] = client.search_runs(
        [experiment],
        "params.`model.bn_position` = 'after' and params.activation = 'relu'",
        max_results=1,
    )
    client.delete_run(lost.info.run_id)
    client.delete_run(by_claim["no_bias"][0].info.run_id)
    again = subprocess.run(
        [*study, "--claims=placement,no_bias,faster", *tiny],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Claim 1/3: placement\n$ " in again.stdout
    assert "Claim 2/3: no_bias\n$ " in again.stdout
    assert "Claim 3/3: faster\n  its 12 runs are recorded: nothing to train" in again.stdout
    assert again.stdout.count("Sweep finished") == 2
    assert again.stderr.count("recorded already") == 1
    assert len(client.search_runs([experiment], f"tags.{metrics.ROLE_TAG} = 'timing'")) == 8
    [retrained] = client.search_runs(
        [experiment],
        "params.`model.bn_position` = 'after' and params.activation = 'relu'",
        max_results=1,
    )
    assert retrained.info.run_id != lost.info.run_id
    assert retrained.data.tags[metrics.IDENTITY_TAG] == lost.data.tags[metrics.IDENTITY_TAG]


def test_an_unknown_claim_or_bad_override_fails_before_any_study_runs(tmp_path) -> None:
    from conftest import ROOT, run_forked

    study = [str(ROOT / "pipelines" / "study.py")]
    for arguments, key in (
        (["--claims=faster,nope"], "--claims: no claim named nope"),
        (["--claims", "model.init_scale=-1"], "model.init_scale"),
        (["--claims=no_bias", "claim.timing.rounds=1"], "claim.timing.rounds"),
    ):
        done = run_forked([*study, *arguments], tmp_path)
        assert done.returncode == 2, done.stderr[-2000:]
        [line] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert key in line
        assert not (tmp_path / "mlflow.db").exists()


def test_a_bar_with_no_value_says_what_its_runs_did_instead() -> None:
    # The plain network never reaches the target: diverged on one seed, slow on two.
    def outcome(row):
        return {}, (200 if row["bn"] else None)

    frame, curves = runs({"bn": (True, False), "lr": (0.05,), "seed": SEEDS}, outcome)
    frame["outcome"] = [
        "diverged" if not bn and seed == 0 else "finished"
        for bn, seed in zip(frame["bn"], frame["seed"], strict=True)
    ]
    bars = claims.RULES["faster"](frame, curves, NO_TIMINGS).bars.set_index("side")
    plain, bn = bars.loc["no BN"], bars.loc["BN"]
    assert pd.isna(plain["value"]) and plain["points"] == []
    assert plain["note"] == "not reached 90% 2 of 3, diverged 1 of 3"
    assert bn["note"] == "" and len(bn["points"]) == 3 and bn["of"] == 3
    # Every seed reached it in 2 s: an interval of zero width, inside the measure's range.
    assert bn["low"] == bn["high"] == bn["value"] == pytest.approx(2.0)


def test_an_interval_stays_inside_its_measures_range() -> None:
    # Seeds at 0.2, 0.9 and 1.0: the t-interval of the mean runs past 1 and below 0.
    def outcome(row):
        return {metrics.TEST_ACCURACY: {0: 0.2, 1: 0.9, 2: 1.0}[row["seed"]]}, None

    frame, curves = runs({"bn": (True, False), "lr": (0.01,), "seed": SEEDS}, outcome)
    bars = claims.RULES["better"](frame, curves, NO_TIMINGS).bars
    assert (bars["low"] >= 0).all() and (bars["high"] <= 1).all()
    assert (bars["low"] == 0).all() and (bars["high"] == 1).all()


def test_the_bar_figure_marks_missing_bars_and_draws_each_seed() -> None:
    from bnlab.claims import figures

    bars = pd.DataFrame(
        [
            {"setting": "relu", "side": "BN", "value": 2.0, "low": 1.5, "high": 2.5,
             "points": [1.8, 2.0, 2.2], "of": 3, "note": ""},
            {"setting": "relu", "side": "no BN", "value": float("nan"), "low": float("nan"),
             "high": float("nan"), "points": [], "of": 3, "note": "not reached 90% 3 of 3"},
        ]
    )  # fmt: skip
    figure = figures.plot_bars(bars, "faster", "seconds")
    axis = figure.axes[0]
    assert [text.get_text().strip() for text in axis.texts] == ["not reached 90% 3 of 3"]
    dots = [line for line in axis.lines if line.get_marker() == "o"]
    assert [list(line.get_ydata()) for line in dots] == [[1.8, 2.0, 2.2]]
    assert any("95 % t-interval" in text.get_text() for text in figure.texts)


def test_the_every_claim_table_wraps_to_the_page() -> None:
    from bnlab.report import page

    table = pd.DataFrame([{"claim": "BN trains faster", "rule": "a long sentence " * 30}])
    html = page.render_html("t", [], {}, {"Every claim": table, "Runs": table}, [],
                            text_tables=("Every claim",))  # fmt: skip
    assert "<h2>Every claim</h2><div class='text'>" in html
    assert "<h2>Runs</h2><div class='scroll'>" in html
    assert ".text td,.text th{white-space:normal" in html


def test_sweeps_run_one_after_another_in_one_process_exit_as_their_commands_would(
    tmp_path,
) -> None:
    """`train_here`, which the suite runs each claim's sweep with: each launch exits as
    `bnlab train` would (bad input 2 with its one line), and Hydra's global state is
    cleared between launches, so the next one composes afresh."""
    from conftest import run_forked

    script = tmp_path / "two_launches.py"
    script.write_text(
        "import sys\n"
        "from bnlab.cli.train import train_here\n"
        "first = train_here(['-m', 'bn=true,false', 'train.steps=-5'])\n"
        "second = train_here(['-m', 'bn=true,false', 'model.init_scale=-1'])\n"
        "print('statuses', first, second)\n"
        "sys.exit(0 if (first, second) == (2, 2) else 1)\n"
    )
    done = run_forked([str(script)], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "statuses 2 2" in done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "train.steps" in errors[0] and "model.init_scale" in errors[1]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "mlflow.db").exists()  # nothing started before the check


def test_the_suite_stops_at_a_stopped_sweep_and_names_each_sweep_its_own_folder(
    capsys,
) -> None:
    tiny = ["train.steps=20", "train.eval_every=10"]
    studies = [claim_suite.expand(name, tiny) for name in ("placement", "train_vs_inference")]
    launched: list[list[str]] = []

    def sweep(arguments: list[str]) -> int:
        launched.append(arguments)
        return 130  # Ctrl-C during the first claim's sweep

    assert claim_suite.run(studies, None, sweep) == 130
    [arguments] = launched  # the second claim never starts
    assert arguments[:2] == ["-m", "+experiment=claims/placement"]
    [folder] = [a for a in arguments if a.startswith("hydra.sweep.dir=")]
    assert folder.endswith("-placement")
    assert "Claim 2/2" not in capsys.readouterr().out

    # A failed sweep does not stop the suite; a folder the user sets is kept.
    launched.clear()
    mine = [claim_suite.expand(name, [*tiny, "hydra.sweep.dir=mine"]) for name in ("placement",)]
    assert claim_suite.run([*mine, studies[1]], None, lambda a: launched.append(a) or 1) == 1
    assert len(launched) == 2
    assert [a for a in launched[0] if a.startswith("hydra.sweep.dir=")] == ["hydra.sweep.dir=mine"]
