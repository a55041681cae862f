"""The article's claims as rules: each counts, over seeds, the comparisons that bear it out.

A rule takes one row per run of its claim's study (the study's swept values, typed, and
the run's final metrics), the runs' validation curves and the study's side-by-side step
timings (one row per variant and round; empty unless the study has `claim.timing`), and
returns how many of how many comparisons agree with the claim, with the one sentence that
says what it counted.
The verdict follows the count: *supported* when at least two thirds agree, *not
supported* when at most one third do, *mixed* in between; *within noise* when no more
comparisons are beyond their noise floor than within it; *not run* when the study has not
recorded all its runs.

Noise floors. Rules that compare accuracies pair the two sides seed by seed within a
cell and count the cell, not each seed: the cell's 95 % t-interval of the paired
difference over seeds is its noise floor, measured from the seeds' own spread. A cell
whose interval lies beyond zero counts; one whose interval straddles zero is within noise
and is not counted as evidence either way (for a claim that one side is *not worse*, it
counts for the claim: nothing worse was measured). Rules that count whether a run learned
compare outcomes 0.4 of accuracy apart (0.5 against chance's 0.1), far above any seed
spread; the speed rule counts a pair only when the two times differ by more than one
evaluation interval's worth of steps, the resolution of a time to target, and takes each
variant's step time from its side-by-side timing, never from the runs' own (which follow
the machine's load).

Which study feeds which rule is data (`conf/experiment/claims/*.yaml`: `claim.rule`); the
rules are here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bnlab import metrics
from bnlab.report.statistics import OWN_BEST_LR, interval, steps_to_target
from bnlab.values import number

SUPPORTED, NOT_SUPPORTED, MIXED, NOT_RUN = "supported", "not supported", "mixed", "not run"
WITHIN_NOISE = "within noise"
# A run "learned" when its best validation accuracy reached this (chance is 0.1).
LEARNED = metrics.LEARNED_ACCURACY
# The resolution of an accuracy measured on the batch-statistics images: one image.
ONE_IMAGE = 1 / metrics.BATCH_STATS_IMAGES
# Validation accuracy the "faster" claim races to.
TARGET = metrics.TARGET_ACCURACY


@dataclass
class Finding:
    """What a rule counted: `agree` of `compared` comparisons bear the claim out."""

    agree: int
    compared: int
    rule: str
    details: dict = field(default_factory=dict)
    # What the claim's figure draws: one bar per (setting, side), see `_bars`, and the
    # value's name.
    bars: pd.DataFrame | None = None
    measure: str = ""

    # Comparisons within their noise floor, not counted in `compared`.
    within_noise: int = 0
    # What the claim's figure over training draws: metric keys, and each run's side.
    curve_keys: tuple[str, ...] = ()
    curve_sides: dict[str, str] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        # A verdict needs most comparisons beyond their noise floor: a count made of the
        # few that noise alone put beyond it would follow the draw.
        if self.within_noise and self.within_noise >= self.compared:
            return WITHIN_NOISE
        return verdict(self.agree, self.compared)


def verdict(agree: int, compared: int) -> str:
    """Supported at two thirds or more, not supported at one third or less, else mixed."""
    if compared == 0:
        return NOT_RUN
    if 3 * agree >= 2 * compared:
        return SUPPORTED
    if 3 * agree <= compared:
        return NOT_SUPPORTED
    return MIXED


Rule = Callable[[pd.DataFrame, pd.DataFrame, pd.DataFrame], "Finding"]
RULES: dict[str, Rule] = {}
# Each rule's sentence: what it counts, said the same on the page whether or not it ran.
RULE_TEXTS: dict[str, str] = {}

FASTER_RULE = (
    f"Per cell and seed where either variant reached {TARGET:.0%} validation accuracy, "
    "BN agrees when it got there in fewer seconds: steps to target times the step time "
    "of its variant, BN and plain timed side by side in one process. Noise floor: a pair "
    "whose times differ by less than one evaluation interval's worth of steps is not "
    "counted."
)

HIGHER_LR_RULE = (
    f"Per activation and seed, BN agrees when the largest learning rate at which it "
    f"learned (best validation accuracy >= {LEARNED}) is above the plain network's. "
    f"Noise floor: learned or not is {LEARNED - 0.1:.1f} of accuracy apart, far above "
    "the seeds' spread."
)

# How the paired rules measure their noise floor, said once on each of them.
PAIRED_FLOOR = (
    "Noise floor: the 95 % t-interval over seeds of the paired difference; a cell whose "
    "interval straddles zero is within noise."
)

INIT_RULE = (
    "Per initial scale other than Keras's default, BN agrees when its best validation "
    "accuracy beats the plain network's, seed by seed, beyond noise; it disagrees when "
    f"the plain network's beats it beyond noise. {PAIRED_FLOOR}"
)

ACTIVATIONS_RULE = (
    "Per learning rate and seed, BN agrees when more activations learned with it "
    f"(best validation accuracy >= {LEARNED}) than without. Noise floor: learned or not "
    f"is {LEARNED - 0.1:.1f} of accuracy apart, far above the seeds' spread."
)

BETTER_RULE = (
    f"{OWN_BEST_LR} per activation; per activation, BN "
    "agrees when its test accuracy is higher beyond noise and disagrees when it is lower "
    f"beyond noise. {PAIRED_FLOOR}"
)

NOT_REGULARIZER_RULE = (
    f"{OWN_BEST_LR}; per activation, the claim holds unless "
    "BN's gap between final train and validation accuracy is smaller than the plain "
    f"network's beyond noise (a regularizer would shrink it). {PAIRED_FLOOR}"
)

NO_BIAS_RULE = (
    "Per cell, the claim holds unless the layers without bias reach a lower best "
    "validation accuracy than the biased ones beyond noise; the saving is counted in "
    "parameters and in step time, timed side by side in one process (the two variants "
    "alternating, burst by burst), not in the runs' own step times, which ran under "
    f"other loads. {PAIRED_FLOOR}"
)

PLACEMENT_RULE = (
    "Per cell, the claim holds unless BN before the activation reaches a lower best "
    f"validation accuracy than BN after it beyond noise. {PAIRED_FLOOR}"
)

TRAIN_VS_INFERENCE_RULE = (
    "Per BN momentum and activation, the claim holds when final validation accuracy "
    "with BN's moving statistics and with each batch's own statistics differ beyond "
    "noise, and fails when the whole interval is within one image "
    f"(1/{metrics.BATCH_STATS_IMAGES}) of no difference. {PAIRED_FLOOR}"
)


# The batch size BN's advantage at small batches is measured against: the article's.
REFERENCE_BATCH = 32

BATCH_SIZE_RULE = (
    "Per batch size below the article's 32, BN's advantage (its best validation accuracy "
    "minus the plain network's, seed by seed) agrees when it is smaller than at batch 32 "
    "beyond noise, and disagrees when it is larger beyond noise; the learning rate "
    f"follows the batch size by the study's rule (train.lr_scaling). {PAIRED_FLOOR}"
)


ICS_RULE = (
    "Per cell, BN agrees when its internal covariate shift, as Santurkar et al. define it "
    "(how much a layer's gradient changes when the layers before it take a step; mean over "
    "the run), is smaller than the plain network's beyond noise: a smaller l2 change and a "
    f"larger cosine are two comparisons. {PAIRED_FLOOR}"
)

SMOOTHNESS_RULE = (
    "Per cell, BN agrees for each of three measures along the gradient (the loss's "
    "variation, the gradient's change, the effective beta-smoothness; means over the run) "
    f"that is smaller than the plain network's beyond noise. {PAIRED_FLOOR}"
)

NOISY_BN_RULE = (
    "Per cell, two comparisons: Noisy BN's best validation accuracy is not lower than "
    "BN's beyond noise, and the input of its last hidden activation shifts more from one "
    "evaluation to the next than the plain network's (mean over the run) beyond noise. "
    f"{PAIRED_FLOOR}"
)

NORMALIZATIONS_RULE = (
    "Per cell of the article's grid and per normalization other than BN, two comparisons: "
    "its best validation accuracy is higher than the plain network's beyond noise, and "
    f"not lower than BN's beyond noise. {PAIRED_FLOOR}"
)
# How the page names each normalization the switch can insert.
NORM_NAMES = {"batch": "BN", "layer": "LayerNorm", "group": "GroupNorm"}

SMOOTHNESS_KEYS = (
    metrics.MECHANISM_LOSS_VARIATION,
    metrics.MECHANISM_GRADIENT_CHANGE,
    metrics.MECHANISM_BETA_SMOOTHNESS,
)


def rule(name: str, text: str) -> Callable[[Callable], Rule]:
    """Registers a rule: a function of (runs, curves, timings) returning a Finding."""

    def register(function: Callable) -> Rule:
        RULES[name] = function
        RULE_TEXTS[name] = text
        return function

    return register


def _learned(runs: pd.DataFrame) -> pd.Series:
    return runs[metrics.BEST_VAL_ACCURACY].fillna(0) >= LEARNED


def _paired(runs: pd.DataFrame, keys: list[str], side: str) -> pd.DataFrame:
    """One row per `keys` value with each side's run side by side (columns suffixed)."""
    return _side_by_side(runs[runs[side]].set_index(keys), runs[~runs[side]].set_index(keys))


def _side_by_side(first: pd.DataFrame, second: pd.DataFrame) -> pd.DataFrame:
    """Two sides' runs (indexed by the pairing keys) joined row by row, `_t` and `_f`."""
    return first.join(second, lsuffix="_t", rsuffix="_f", how="inner").reset_index()


def _best_column(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Each variant at its best learning rate (by mean best validation accuracy)."""
    means = runs.groupby([*keys, "bn", "lr"])[metrics.BEST_VAL_ACCURACY].mean().reset_index()
    best = means.loc[means.groupby([*keys, "bn"])[metrics.BEST_VAL_ACCURACY].idxmax()]
    chosen = best[[*keys, "bn", "lr"]]
    return runs.merge(chosen, on=[*keys, "bn", "lr"])


# The range of each kind of measure: an interval over seeds is drawn inside it.
FRACTION = (0.0, 1.0)
DIFFERENCE = (-1.0, 1.0)
NON_NEGATIVE = (0.0, math.inf)
BAR_COLUMNS = ["setting", "side", "value", "low", "high", "points", "of", "note"]


def _bars(
    runs: pd.DataFrame,
    setting: list[str],
    side: pd.Series,
    value: pd.Series,
    bounds: tuple[float, float] = FRACTION,
    missing: pd.Series | None = None,
) -> pd.DataFrame:
    """One bar per setting and side: what the claim's figure draws.

    Columns: `value`, the mean over seeds of the runs' finite values; `low` and `high`, its
    95 % t-interval, kept inside `bounds` (the measure's range); `points`, each seed's
    value; `of`, the seeds run; `note`, what the runs without a value did instead, from
    `missing` (e.g. "not reached 90%", "diverged"), counted: "not reached 90% 3 of 3".
    """
    frame = runs[setting].astype(str).agg(" ".join, axis=1).to_frame("setting")
    frame["side"] = side.to_numpy()
    frame["value"] = pd.to_numeric(pd.Series(value.to_numpy()), errors="coerce").to_numpy()
    frame["missing"] = "no value" if missing is None else missing.to_numpy()
    rows = []
    for (name, which), group in frame.groupby(["setting", "side"], sort=False):
        finite = group[np.isfinite(group["value"])]
        mean, _, ci95, _ = interval(finite["value"])
        spread = 0.0 if math.isnan(ci95) else ci95
        absent = group.loc[~np.isfinite(group["value"]), "missing"].value_counts()
        rows.append(
            {
                "setting": name,
                "side": which,
                "value": mean,
                "low": max(mean - spread, bounds[0]) if math.isfinite(mean) else math.nan,
                "high": min(mean + spread, bounds[1]) if math.isfinite(mean) else math.nan,
                "points": [float(point) for point in finite["value"]],
                "of": len(group),
                "note": ", ".join(
                    f"{label} {count} of {len(group)}" for label, count in absent.items()
                ),
            }
        )
    return pd.DataFrame(rows, columns=BAR_COLUMNS)


def _variant(runs: pd.DataFrame) -> pd.Series:
    return runs["bn"].map({True: "BN", False: "no BN"})


def _count(pairs: pd.DataFrame, agrees: pd.Series) -> tuple[int, int]:
    return int(agrees.sum()), len(pairs)


def _cells(pairs: pd.DataFrame, keys: list[str], difference: pd.Series) -> pd.DataFrame:
    """Per cell (`keys`, seeds pooled): the paired difference's mean over seeds and its 95 %
    t-interval, `low` to `high` (unbounded with one seed: nothing is beyond its noise)."""
    frame = pairs[keys].copy()
    frame["difference"] = difference.to_numpy()
    rows = []
    for cell, group in frame.groupby(keys, sort=False):
        mean, _, ci95, count = interval(group["difference"])
        spread = ci95 if count >= 2 else math.inf
        rows.append({"cell": cell, "mean": mean, "low": mean - spread, "high": mean + spread})
    return pd.DataFrame(rows, columns=["cell", "mean", "low", "high"])


def _beyond_noise(cells: pd.DataFrame) -> tuple[int, int, int]:
    """(cells above zero beyond noise, cells below zero beyond noise, cells within noise)."""
    above = int((cells["low"] > 0).sum())
    below = int((cells["high"] < 0).sum())
    return above, below, len(cells) - above - below


def _floor(cells: pd.DataFrame) -> float | None:
    """The median half-width of the cells' intervals: the noise floor the rule measured."""
    finite = (cells["high"] - cells["low"])[np.isfinite(cells["high"] - cells["low"])]
    return number(float(finite.median()) / 2) if len(finite) else None


def _better(cells: pd.DataFrame) -> dict:
    """A claim that one side is higher: cells beyond noise either way count; the rest not."""
    above, below, within = _beyond_noise(cells)
    return {"agree": above, "compared": above + below, "within_noise": within}


def _not_worse(cells: pd.DataFrame) -> dict:
    """A claim that one side is not lower: only a cell lower beyond noise counts against."""
    _, below, within = _beyond_noise(cells)
    return {"agree": len(cells) - below, "compared": len(cells), "within_noise": 0}


@rule("faster", FASTER_RULE)
def faster(runs: pd.DataFrame, curves: pd.DataFrame, timings: pd.DataFrame) -> Finding:
    runs = runs.copy()
    runs["steps_to_target"] = [
        steps_to_target(curves[curves["run_id"] == run_id], TARGET) for run_id in runs["run_id"]
    ]
    # The runs' own step times ran under whatever else the machine did (two jobs at once,
    # other studies' runs reused): the step time of each variant comes from the side-by-side
    # timing of its setting when there is one, so the count does not follow the load.
    timed = _timed_step_seconds(timings, "bn", ["activation", "lr"])
    if timed is None:
        runs["seconds_per_step"] = 1 / runs[metrics.STEPS_PER_SECOND]
    else:
        runs = runs.merge(timed, on=["activation", "lr", "bn"], how="left")
    runs["seconds_to_target"] = runs["steps_to_target"] * runs["seconds_per_step"]
    # The resolution of a time to target: one evaluation interval of the run's steps.
    spacing = curves.groupby("run_id")["step"].apply(lambda steps: steps.sort_values().diff().min())
    runs["resolution"] = runs["run_id"].map(spacing).fillna(0) * runs["seconds_per_step"]
    pairs = _paired(runs, ["activation", "lr", "seed"], "bn")
    reached = pairs[pairs["steps_to_target_t"].notna() | pairs["steps_to_target_f"].notna()]
    gap = reached["seconds_to_target_f"].fillna(math.inf) - reached["seconds_to_target_t"].fillna(
        math.inf
    )
    floor = reached[["resolution_t", "resolution_f"]].max(axis=1)
    within, never = int((gap.abs() <= floor).sum()), len(pairs) - len(reached)
    reached, gap = reached[gap.abs() > floor], gap[gap.abs() > floor]
    seconds = gap > 0
    steps = reached["steps_to_target_t"].fillna(math.inf) < reached["steps_to_target_f"].fillna(
        math.inf
    )
    agree, compared = _count(reached, seconds)
    cost = (pairs["seconds_per_step_t"] / pairs["seconds_per_step_f"]).median()
    return Finding(
        agree,
        compared,
        FASTER_RULE,
        {
            "fewer_steps": int(steps.sum()),
            "bn_step_cost_ratio": number(cost),
            "step_time": "the runs' own" if timed is None else "timed side by side",
            "never_reached": never,
            "within_noise": within,
        },
        _bars(
            runs,
            ["activation", "lr"],
            _variant(runs),
            runs["seconds_to_target"],
            NON_NEGATIVE,
            _why_not_reached(runs),
        ),
        f"seconds to {TARGET:.0%} validation accuracy",
        within,
    )


def _timed_step_seconds(
    timings: pd.DataFrame, key: str, settings: list[str]
) -> pd.DataFrame | None:
    """Each setting's seconds per step for each value of the boolean `key`, the median over
    the rounds of its side-by-side timing; None without timings."""
    if timings is None or not len(timings) or not set(settings) <= set(timings.columns):
        return None
    found = timings.groupby([*settings, "label"])["seconds"].median().reset_index()
    found[key] = found.pop("label").map({"true": True, "false": False})
    return found.rename(columns={"seconds": "seconds_per_step"})


def _why_not_reached(runs: pd.DataFrame) -> pd.Series:
    """What a run that never reached the target did instead: diverged, or not reached."""
    diverged = runs["outcome"].eq(metrics.DIVERGED) if "outcome" in runs else False
    return pd.Series(np.where(diverged, "diverged", f"not reached {TARGET:.0%}"), index=runs.index)


@rule("higher_lr", HIGHER_LR_RULE)
def higher_lr(runs: pd.DataFrame, curves: pd.DataFrame, timings: pd.DataFrame) -> Finding:
    runs = runs.assign(learned=_learned(runs))
    fraction = runs.groupby(["activation", "bn", "lr"])["learned"].mean()
    largest = {}
    for (activation, bn), rates in fraction.groupby(level=["activation", "bn"]):
        mostly = [lr for (_, _, lr), share in rates.items() if share > 0.5]
        largest[f"{activation} {'BN' if bn else 'no BN'}"] = max(mostly) if mostly else None
    per_seed = (
        runs[runs["learned"]]
        .groupby(["activation", "seed", "bn"])["lr"]
        .max()
        .unstack("bn")
        .reindex(columns=[True, False])
    )
    per_seed = per_seed.reindex(
        pd.MultiIndex.from_frame(runs[["activation", "seed"]].drop_duplicates())
    ).fillna(0)
    agree, compared = int((per_seed[True] > per_seed[False]).sum()), len(per_seed)
    return Finding(
        agree,
        compared,
        HIGHER_LR_RULE,
        {
            "fraction_learned": {
                f"{activation} {'BN' if bn else 'no BN'} lr={lr:g}": float(share)
                for (activation, bn, lr), share in fraction.items()
            },
            "largest_rate_most_seeds_learned": largest,
        },
        _bars(runs, ["activation", "lr"], _variant(runs), runs["learned"].astype(float)),
        "fraction of seeds that learned",
    )


@rule("init", INIT_RULE)
def init(runs: pd.DataFrame, curves: pd.DataFrame, timings: pd.DataFrame) -> Finding:
    pairs = _paired(runs, ["model.init_scale", "seed"], "bn")
    away = pairs[pairs["model.init_scale"] != 1.0]
    cells = _cells(
        away,
        ["model.init_scale"],
        away[f"{metrics.BEST_VAL_ACCURACY}_t"] - away[f"{metrics.BEST_VAL_ACCURACY}_f"],
    )
    counted = _better(cells)
    learned = runs.assign(learned=_learned(runs)).groupby(["model.init_scale", "bn"])["learned"]
    return Finding(
        counted["agree"],
        counted["compared"],
        INIT_RULE,
        {
            "fraction_learned": {
                f"scale={scale:g} {'BN' if bn else 'no BN'}": float(share)
                for (scale, bn), share in learned.mean().items()
            },
            "noise_floor": _floor(cells),
            "within_noise": counted["within_noise"],
        },
        _bars(runs, ["model.init_scale"], _variant(runs), runs[metrics.BEST_VAL_ACCURACY]),
        "best validation accuracy",
        counted["within_noise"],
    )


@rule("activations", ACTIVATIONS_RULE)
def activations(runs: pd.DataFrame, curves: pd.DataFrame, timings: pd.DataFrame) -> Finding:
    runs = runs.assign(learned=_learned(runs))
    viable = runs.groupby(["lr", "seed", "bn"])["learned"].sum().unstack("bn")
    agree, compared = int((viable[True] > viable[False]).sum()), len(viable)
    per_activation = runs.groupby(["activation", "bn"])["learned"].mean()
    return Finding(
        agree,
        compared,
        ACTIVATIONS_RULE,
        {
            "fraction_learned": {
                f"{activation} {'BN' if bn else 'no BN'}": float(share)
                for (activation, bn), share in per_activation.items()
            }
        },
        _bars(runs, ["activation"], _variant(runs), runs["learned"].astype(float)),
        "fraction of runs that learned (both learning rates)",
    )


@rule("better", BETTER_RULE)
def better(runs: pd.DataFrame, curves: pd.DataFrame, timings: pd.DataFrame) -> Finding:
    best = _best_column(runs, ["activation"])
    pairs = _paired(best, ["activation", "seed"], "bn")
    difference = pairs[f"{metrics.TEST_ACCURACY}_t"] - pairs[f"{metrics.TEST_ACCURACY}_f"]
    cells = _cells(pairs, ["activation"], difference)
    counted = _better(cells)
    mean, _, ci95, _ = interval(difference)
    return Finding(
        counted["agree"],
        counted["compared"],
        BETTER_RULE,
        {
            "test_accuracy_difference": number(mean),
            "difference_ci95": number(ci95),
            "noise_floor": _floor(cells),
            "within_noise": counted["within_noise"],
        },
        _bars(best, ["activation"], _variant(best), best[metrics.TEST_ACCURACY]),
        "test accuracy at the variant's best learning rate",
        counted["within_noise"],
    )


@rule("not_regularizer", NOT_REGULARIZER_RULE)
def not_regularizer(runs: pd.DataFrame, curves: pd.DataFrame, timings: pd.DataFrame) -> Finding:
    best = _best_column(runs, ["activation"])
    best = best.assign(gap=best[metrics.TRAIN_ACCURACY] - best[metrics.VAL_ACCURACY])
    pairs = _paired(best, ["activation", "seed"], "bn")
    cells = _cells(pairs, ["activation"], pairs["gap_t"] - pairs["gap_f"])
    counted = _not_worse(cells)
    return Finding(
        counted["agree"],
        counted["compared"],
        NOT_REGULARIZER_RULE,
        {
            "mean_gap_bn": number(pairs["gap_t"].mean()),
            "mean_gap_no_bn": number(pairs["gap_f"].mean()),
            "noise_floor": _floor(cells),
        },
        _bars(best, ["activation"], _variant(best), best["gap"], DIFFERENCE),
        "final train minus validation accuracy",
    )


@rule("no_bias", NO_BIAS_RULE)
def no_bias(runs: pd.DataFrame, curves: pd.DataFrame, timings: pd.DataFrame) -> Finding:
    runs = runs.assign(without=~runs["model.bn_bias"])
    pairs = _paired(runs, ["activation", "lr", "seed"], "without")
    cells = _cells(
        pairs,
        ["activation", "lr"],
        pairs[f"{metrics.BEST_VAL_ACCURACY}_t"] - pairs[f"{metrics.BEST_VAL_ACCURACY}_f"],
    )
    counted = _not_worse(cells)
    agree, compared = counted["agree"], counted["compared"]
    # Each round of each timed cell: the step time without bias over the one with it.
    rounds = timings.pivot_table(index=["timing", "round"], columns="label", values="seconds")
    paired = {"true", "false"} <= set(rounds)
    ratio = rounds["false"] / rounds["true"] if paired else pd.Series(dtype=float)
    mean, _, ci95, _ = interval(ratio)
    return Finding(
        agree,
        compared,
        NO_BIAS_RULE,
        {
            "parameters_without_bias": _median(pairs, f"{metrics.PARAMETERS}_t"),
            "parameters_with_bias": _median(pairs, f"{metrics.PARAMETERS}_f"),
            "step_time_without_over_with": number(ratio.median()),
            "step_time_ratio_ci95": [number(mean - ci95), number(mean + ci95)],
            "rounds_faster_without_bias": f"{int((ratio < 1).sum())} of {len(ratio)}",
            "noise_floor": _floor(cells),
            "best_val_accuracy_difference": number(
                (
                    pairs[f"{metrics.BEST_VAL_ACCURACY}_t"]
                    - pairs[f"{metrics.BEST_VAL_ACCURACY}_f"]
                ).mean()
            ),
        },
        _bars(
            runs,
            ["activation"],
            runs["model.bn_bias"].map({True: "with bias", False: "without bias"}),
            runs[metrics.BEST_VAL_ACCURACY],
        ),
        "best validation accuracy",
    )


@rule("placement", PLACEMENT_RULE)
def placement(runs: pd.DataFrame, curves: pd.DataFrame, timings: pd.DataFrame) -> Finding:
    runs = runs.assign(before=runs["model.bn_position"] == "before")
    pairs = _paired(runs, ["activation", "lr", "seed"], "before")
    difference = pairs[f"{metrics.BEST_VAL_ACCURACY}_t"] - pairs[f"{metrics.BEST_VAL_ACCURACY}_f"]
    cells = _cells(pairs, ["activation", "lr"], difference)
    counted = _not_worse(cells)
    return Finding(
        counted["agree"],
        counted["compared"],
        PLACEMENT_RULE,
        {
            "mean_difference_before_minus_after": number(difference.mean()),
            "noise_floor": _floor(cells),
        },
        _bars(
            runs,
            ["activation"],
            "BN " + runs["model.bn_position"] + " the activation",
            runs[metrics.BEST_VAL_ACCURACY],
        ),
        "best validation accuracy",
    )


@rule("train_vs_inference", TRAIN_VS_INFERENCE_RULE)
def train_vs_inference(runs: pd.DataFrame, curves: pd.DataFrame, timings: pd.DataFrame) -> Finding:
    measured = runs.dropna(subset=[metrics.VAL_ACCURACY_BATCH_STATS])
    # The same images in both modes: the moving-statistics accuracy logged beside the
    # batch-statistics one, or (runs that logged only the latter, on the whole validation
    # split) the final validation accuracy.
    moving = measured[metrics.VAL_ACCURACY]
    if metrics.VAL_ACCURACY_MOVING_STATS in measured:
        moving = measured[metrics.VAL_ACCURACY_MOVING_STATS].fillna(moving)
    signed = moving - measured[metrics.VAL_ACCURACY_BATCH_STATS]
    cells = _cells(measured, ["model.bn_momentum", "activation"], signed)
    beyond = (cells["low"] > 0) | (cells["high"] < 0)
    # No difference: the whole interval within one image of zero, a measured absence of
    # difference rather than noise.
    same = ~beyond & (cells["low"] >= -ONE_IMAGE) & (cells["high"] <= ONE_IMAGE)
    agree, compared = int(beyond.sum()), int(beyond.sum() + same.sum())
    within = int((~beyond & ~same).sum())
    by_momentum = signed.abs().groupby(measured["model.bn_momentum"]).mean()
    return Finding(
        agree,
        compared,
        TRAIN_VS_INFERENCE_RULE,
        {
            "mean_abs_difference": {f"momentum={m:g}": number(v) for m, v in by_momentum.items()},
            "without_the_measure": len(runs) - len(measured),
            "noise_floor": _floor(cells),
            "within_noise": within,
        },
        pd.concat(
            [
                _bars(
                    measured,
                    ["model.bn_momentum"],
                    pd.Series(["moving statistics"] * len(measured)),
                    moving,
                ),
                _bars(
                    measured,
                    ["model.bn_momentum"],
                    pd.Series(["batch statistics"] * len(measured)),
                    measured[metrics.VAL_ACCURACY_BATCH_STATS],
                ),
            ]
        ),
        "final validation accuracy (setting: BN momentum)",
        within,
    )


def _median(frame: pd.DataFrame, column: str) -> float | None:
    return number(frame[column].median()) if column in frame else None


@rule("batch_size", BATCH_SIZE_RULE)
def batch_size(runs: pd.DataFrame, curves: pd.DataFrame, timings: pd.DataFrame) -> Finding:
    pairs = _paired(runs, ["train.batch_size", "seed"], "bn")
    pairs["advantage"] = (
        pairs[f"{metrics.BEST_VAL_ACCURACY}_t"] - pairs[f"{metrics.BEST_VAL_ACCURACY}_f"]
    )
    sizes = sorted(pairs["train.batch_size"].unique())
    reference = REFERENCE_BATCH if REFERENCE_BATCH in sizes else max(sizes)
    at_reference = pairs[pairs["train.batch_size"] == reference].set_index("seed")["advantage"]
    small = pairs[pairs["train.batch_size"] < reference].copy()
    # How much smaller the advantage is at this batch size than at the reference.
    shrink = small["seed"].map(at_reference) - small["advantage"]
    cells = _cells(small, ["train.batch_size"], shrink)
    counted = _better(cells)
    by_size = pairs.groupby("train.batch_size")["advantage"].mean()
    return Finding(
        counted["agree"],
        counted["compared"],
        BATCH_SIZE_RULE,
        {
            "bn_advantage": {f"batch={int(size)}": number(v) for size, v in by_size.items()},
            "reference_batch": int(reference),
            "noise_floor": _floor(cells),
            "within_noise": counted["within_noise"],
        },
        _bars(runs, ["train.batch_size"], _variant(runs), runs[metrics.BEST_VAL_ACCURACY]),
        "best validation accuracy (setting: batch size)",
        counted["within_noise"],
    )


def _mean_of(key: str) -> str:
    return f"{key}{metrics.MEAN_SUFFIX}"


def _sides(runs: pd.DataFrame) -> dict[str, str]:
    """Each run's side for the figures over training: BN, Noisy BN or no BN."""
    noise = runs["model.bn_noise"] if "model.bn_noise" in runs else pd.Series(0.0, runs.index)
    labels = np.where(~runs["bn"].astype(bool), "no BN", np.where(noise > 0, "Noisy BN", "BN"))
    return dict(zip(runs["run_id"], labels, strict=True))


@rule("ics", ICS_RULE)
def ics(runs: pd.DataFrame, curves: pd.DataFrame, timings: pd.DataFrame) -> Finding:
    keys = ["activation", "lr"]
    pairs = _paired(runs, [*keys, "seed"], "bn")
    l2, cosine = _mean_of(metrics.MECHANISM_ICS_L2), _mean_of(metrics.MECHANISM_ICS_COSINE)
    cells = pd.concat(
        [
            _cells(pairs, keys, pairs[f"{l2}_f"] - pairs[f"{l2}_t"]),
            _cells(pairs, keys, pairs[f"{cosine}_t"] - pairs[f"{cosine}_f"]),
        ],
        ignore_index=True,
    )
    counted = _better(cells)
    return Finding(
        counted["agree"],
        counted["compared"],
        ICS_RULE,
        {
            "ics_l2_bn": number(pairs[f"{l2}_t"].mean()),
            "ics_l2_no_bn": number(pairs[f"{l2}_f"].mean()),
            "ics_cosine_bn": number(pairs[f"{cosine}_t"].mean()),
            "ics_cosine_no_bn": number(pairs[f"{cosine}_f"].mean()),
            "noise_floor": _floor(cells),
            "within_noise": counted["within_noise"],
        },
        _bars(runs, ["activation"], _variant(runs), runs[l2], NON_NEGATIVE),
        "internal covariate shift, l2 (mean over the run)",
        counted["within_noise"],
        (metrics.MECHANISM_ICS_L2, metrics.MECHANISM_ICS_COSINE),
        _sides(runs),
    )


@rule("smoothness", SMOOTHNESS_RULE)
def smoothness(runs: pd.DataFrame, curves: pd.DataFrame, timings: pd.DataFrame) -> Finding:
    keys = ["activation", "lr"]
    pairs = _paired(runs, [*keys, "seed"], "bn")
    frames, details = [], {}
    for key in SMOOTHNESS_KEYS:
        column, name = _mean_of(key), key.split("/")[-1]
        frames.append(_cells(pairs, keys, pairs[f"{column}_f"] - pairs[f"{column}_t"]))
        details[f"{name}_bn"] = number(pairs[f"{column}_t"].mean())
        details[f"{name}_no_bn"] = number(pairs[f"{column}_f"].mean())
    cells = pd.concat(frames, ignore_index=True)
    counted = _better(cells)
    gradient = _mean_of(metrics.MECHANISM_GRADIENT_CHANGE)
    return Finding(
        counted["agree"],
        counted["compared"],
        SMOOTHNESS_RULE,
        details | {"noise_floor": _floor(cells), "within_noise": counted["within_noise"]},
        _bars(runs, ["activation"], _variant(runs), runs[gradient], NON_NEGATIVE),
        "gradient change along the step (mean over the run)",
        counted["within_noise"],
        SMOOTHNESS_KEYS,
        _sides(runs),
    )


@rule("noisy_bn", NOISY_BN_RULE)
def noisy_bn(runs: pd.DataFrame, curves: pd.DataFrame, timings: pd.DataFrame) -> Finding:
    keys = ["activation", "lr", "seed"]
    side = pd.Series(_sides(runs)).reindex(runs["run_id"]).to_numpy()
    by_side = {name: runs[side == name].set_index(keys) for name in ("BN", "Noisy BN", "no BN")}
    noisy, bn, plain = by_side["Noisy BN"], by_side["BN"], by_side["no BN"]
    accuracy = _side_by_side(noisy, bn)
    shift = _mean_of(metrics.MECHANISM_INPUT_SHIFT)
    shifts = _side_by_side(noisy, plain)
    as_well = _not_worse(
        _cells(
            accuracy,
            ["activation", "lr"],
            accuracy[f"{metrics.BEST_VAL_ACCURACY}_t"] - accuracy[f"{metrics.BEST_VAL_ACCURACY}_f"],
        )
    )
    shift_cells = _cells(shifts, ["activation", "lr"], shifts[f"{shift}_t"] - shifts[f"{shift}_f"])
    shifts_more = _better(shift_cells)
    return Finding(
        as_well["agree"] + shifts_more["agree"],
        as_well["compared"] + shifts_more["compared"],
        NOISY_BN_RULE,
        {
            "best_val_accuracy_noisy_minus_bn": number(
                (
                    accuracy[f"{metrics.BEST_VAL_ACCURACY}_t"]
                    - accuracy[f"{metrics.BEST_VAL_ACCURACY}_f"]
                ).mean()
            ),
            "input_shift": {
                name: number(frame[shift].mean()) if shift in frame else None
                for name, frame in by_side.items()
            },
            "noise_floor": _floor(shift_cells),
            "within_noise": shifts_more["within_noise"],
        },
        _bars(runs, ["activation"], pd.Series(side), runs[metrics.BEST_VAL_ACCURACY]),
        "best validation accuracy",
        shifts_more["within_noise"],
        (metrics.MECHANISM_INPUT_SHIFT, metrics.VAL_ACCURACY),
        _sides(runs),
    )


@rule("normalizations", NORMALIZATIONS_RULE)
def normalizations(runs: pd.DataFrame, curves: pd.DataFrame, timings: pd.DataFrame) -> Finding:
    keys = ["activation", "lr", "seed"]
    norm = runs["model.norm"] if "model.norm" in runs else pd.Series("batch", index=runs.index)
    side = np.where(runs["bn"].astype(bool), norm.map(NORM_NAMES).fillna(norm), "no BN")
    frames = {name: runs[side == name].set_index(keys) for name in dict.fromkeys(side)}
    best = metrics.BEST_VAL_ACCURACY
    agree = compared = within = 0
    details: dict = {}
    floors = []
    for name, frame in frames.items():
        if name in ("BN", "no BN"):
            continue
        for other, judge in (("no BN", _better), ("BN", _not_worse)):
            if other not in frames:
                continue
            pairs = _side_by_side(frame, frames[other])
            cells = _cells(pairs, ["activation", "lr"], pairs[f"{best}_t"] - pairs[f"{best}_f"])
            counted = judge(cells)
            agree += counted["agree"]
            compared += counted["compared"]
            within += counted["within_noise"]
            floors.append(cells)
            details[f"{name}_minus_{other.replace(' ', '_')}"] = number(
                (pairs[f"{best}_t"] - pairs[f"{best}_f"]).mean()
            )
    all_cells = (
        pd.concat(floors, ignore_index=True)
        if floors
        else pd.DataFrame(columns=["cell", "mean", "low", "high"])
    )
    return Finding(
        agree,
        compared,
        NORMALIZATIONS_RULE,
        details | {"noise_floor": _floor(all_cells), "within_noise": within},
        _bars(runs, ["activation", "lr"], pd.Series(side), runs[best]),
        "best validation accuracy",
        within,
    )
