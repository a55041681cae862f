"""The comparison's numbers, from DataFrames of recorded runs: tables and claims.

`runs` has one row per job run (params by dotted key, final metrics by name,
plus run_id, outcome, status, start_time); `curves` has one row per logged
point of validation accuracy (run_id, step, value).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from bnlab import metrics, values
from bnlab.config.keys import SHORTHANDS, is_trained
from bnlab.job.identity import SCHEME
from bnlab.report.comparison import DEFAULT, Comparison

# Parameters that define a grid cell, a variant or a repetition (the shorthands and the
# group keys they set); every other trained parameter must match across compared runs.
VARYING = {*SHORTHANDS, *SHORTHANDS.values()}
# Best validation accuracy at or below this many times chance counts as "stayed at chance".
CHANCE_CEILING_FACTOR = 2.0
# Best validation accuracy at or above this counts as "learned".
LEARNED_FLOOR = metrics.LEARNED_ACCURACY


@dataclass
class Selection:
    """The runs a report compares, with notes on what was left out and why."""

    runs: pd.DataFrame
    curves: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def _as_bool(value) -> bool:
    return str(value).lower() in {"true", "1"}


def select(runs: pd.DataFrame, curves: pd.DataFrame, comparison: Comparison = DEFAULT) -> Selection:
    """Keeps one comparable set of runs: the most common setting of everything not swept.

    Runs whose fixed parameters differ from that setting are dropped with a note.
    For each (cell, variant, seed), the newest complete run wins; a failed or
    killed run is kept only where no complete run exists, so it is drawn marked.
    """
    notes: list[str] = []
    if runs.empty:
        return Selection(runs, curves, notes)
    runs = runs.copy()
    if "identity_scheme" in runs:
        current = runs["identity_scheme"].astype(str) == str(SCHEME)
        if not current.all():
            notes.append(
                f"{int((~current).sum())} run(s) recorded under an older identity scheme left "
                f"out (they are not comparable with scheme {SCHEME}; retrain them to compare)"
            )
            runs = runs[current]
            if runs.empty:
                return Selection(runs, curves, notes)
    runs[comparison.variant] = runs[comparison.variant].map(_as_bool)
    for key in comparison.cell:
        numbers = pd.to_numeric(runs[key], errors="coerce")
        if numbers.notna().all():
            runs[key] = numbers
    runs["seed"] = runs["seed"].astype(int)
    fixed = sorted(
        column
        for column in runs.columns
        if "." in column
        and column not in VARYING
        and column not in comparison.keys
        and is_trained(column)
    )
    if fixed:
        signature = runs[fixed].astype(str).agg("|".join, axis=1)
        dominant = signature.value_counts().index[0]
        keep = signature == dominant
        if not keep.all():
            differing = sorted(
                column
                for column in fixed
                if runs.loc[~keep, column].astype(str).ne(runs.loc[keep, column].iloc[0]).any()
            )
            notes.append(
                f"{int((~keep).sum())} run(s) with other settings left out "
                f"(they differ in {', '.join(differing)})"
            )
            runs = runs[keep]
    runs["complete"] = runs["outcome"].isin(metrics.COMPLETE_OUTCOMES)
    runs = runs.sort_values(["complete", "start_time"], ascending=[False, False])
    before = len(runs)
    runs = runs.drop_duplicates(subset=[*comparison.keys, "seed"], keep="first")
    if len(runs) < before:
        notes.append(
            f"{before - len(runs)} older or superseded run(s) of the same setting left out"
        )
    curves = curves[curves["run_id"].isin(runs["run_id"])]
    curves = curves.merge(runs[["run_id", *comparison.keys, "seed", "outcome"]], on="run_id")
    return Selection(runs.reset_index(drop=True), curves.sort_values("step"), notes)


# How each BN implementation (`model.bn_impl`) is named on the report page.
BN_IMPL_NAMES = {
    "fused": "TensorFlow's fused kernel (model.bn_impl=fused)",
    "keras": "keras.layers.BatchNormalization (model.bn_impl=keras)",
}


def bn_implementation_note(runs: pd.DataFrame, comparison: Comparison = DEFAULT) -> str | None:
    """Which BN implementation produced the compared BN runs, as one sentence.

    Runs recorded before `model.bn_impl` existed used Keras's layer.
    """
    if "model.bn_impl" not in runs and comparison.variant != DEFAULT.variant:
        return None  # another experiment's comparison, with no BN implementation to name
    bn_runs = runs[runs[comparison.variant].map(_as_bool)] if not runs.empty else runs
    if bn_runs.empty:
        return None
    impls = (
        bn_runs["model.bn_impl"] if "model.bn_impl" in bn_runs else pd.Series(index=bn_runs.index)
    )
    counts = impls.fillna("keras").astype(str).value_counts()
    parts = [f"{BN_IMPL_NAMES.get(impl, impl)} in {count}" for impl, count in counts.items()]
    return f"BN computed with {'; '.join(parts)} of {len(bn_runs)} BN run(s)"


def steps_to_target(curve: pd.DataFrame, target: float) -> float:
    """The first step whose validation accuracy reaches `target`, or NaN."""
    reached = curve.loc[curve["value"] >= target, "step"]
    return float(reached.min()) if not reached.empty else math.nan


def per_seed(selection: Selection, target: float, comparison: Comparison = DEFAULT) -> pd.DataFrame:
    """One row per compared run: the headline numbers of each seed of each variant."""
    rows = []
    for _, run in selection.runs.iterrows():
        curve = selection.curves[selection.curves["run_id"] == run["run_id"]]
        values = curve["value"]
        rows.append(
            {
                comparison.row: run[comparison.row],
                comparison.column: run[comparison.column],
                comparison.variant: bool(run[comparison.variant]),
                "seed": int(run["seed"]),
                "outcome": run["outcome"],
                "final_val_accuracy": values.iloc[-1] if len(values) else math.nan,
                "best_val_accuracy": values.max() if len(values) else math.nan,
                "test_accuracy": pd.to_numeric(
                    pd.Series([run.get(metrics.TEST_ACCURACY, math.nan)]), errors="coerce"
                ).iloc[0],
                "steps_to_target": steps_to_target(curve, target),
            }
        )
    columns = [*comparison.keys, "seed", "outcome", *SUMMARY_NUMBERS]
    return pd.DataFrame(rows, columns=columns).sort_values([*comparison.keys, "seed"])


def interval(values) -> tuple[float, float, float, int]:
    """Mean, standard deviation, and half-width of the 95 % t-interval for the mean.

    Student's t, not a bootstrap: with three seeds a bootstrap interval is far too
    narrow (it can only resample three values), while t widens honestly for small n.
    The spread and the interval are NaN for fewer than two values.

    Returns:
        (mean, sd, ci95 half-width, n) over the finite values.
    """
    values = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    values = values[np.isfinite(values)]
    count = len(values)
    if count == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(values.mean())
    if count < 2:
        return mean, math.nan, math.nan, count
    sd = float(values.std(ddof=1))
    return mean, sd, float(stats.t.ppf(0.975, count - 1) * sd / math.sqrt(count)), count


# The numbers summarised per variant; the first two get a spread and an interval.
SUMMARY_NUMBERS = ["best_val_accuracy", "final_val_accuracy", "test_accuracy", "steps_to_target"]
SPREAD_NUMBERS = SUMMARY_NUMBERS[:2]


def per_variant(seeds: pd.DataFrame, comparison: Comparison = DEFAULT) -> pd.DataFrame:
    """One row per (row, column, variant) setting: mean, sd and 95 % interval over seeds."""
    rows = []
    for (row_value, column_value, side), group in seeds.groupby(comparison.keys):
        row = {
            comparison.row: row_value,
            comparison.column: column_value,
            comparison.variant: bool(side),
            "seeds": len(group),
        }
        for number in SPREAD_NUMBERS:
            mean, sd, ci95, _ = interval(group[number])
            row |= {number: mean, f"{number} sd": sd, f"{number} ci95": ci95}
        row["test_accuracy"] = interval(group["test_accuracy"])[0]
        # Steps to target is a mean only where every seed got there.
        reached = group["steps_to_target"]
        row["steps_to_target"] = reached.mean() if reached.notna().all() else math.nan
        row["diverged"] = int((group["outcome"] == metrics.DIVERGED).sum())
        row["failed"] = int(group["outcome"].isin([metrics.FAILED, metrics.KILLED]).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def paired_differences(seeds: pd.DataFrame, comparison: Comparison = DEFAULT) -> pd.DataFrame:
    """Per cell: true side minus false side over the seeds both have, with a 95 % t-interval."""
    rows = []
    for (row_value, column_value), cell in seeds.groupby(comparison.cell):
        wide = cell.pivot_table(index="seed", columns=comparison.variant, values=SPREAD_NUMBERS)
        row = {comparison.row: row_value, comparison.column: column_value}
        for number in SPREAD_NUMBERS:
            if (number, True) in wide and (number, False) in wide:
                diff = (wide[(number, True)] - wide[(number, False)]).dropna()
            else:
                diff = pd.Series(dtype=float)
            mean, sd, ci95, pairs = interval(diff)
            row |= {f"{number} diff": mean, f"{number} diff ci95": ci95, "pairs": pairs}
        rows.append(row)
    return pd.DataFrame(rows)


def summary_table(
    variants: pd.DataFrame, differences: pd.DataFrame, comparison: Comparison = DEFAULT
) -> pd.DataFrame:
    """One row per cell: both sides side by side (mean, sd, interval) and the paired diff.

    Columns name the true side `bn` and the false side `no_bn`, whatever the variant.
    """
    if variants.empty:
        return pd.DataFrame(columns=comparison.cell)
    table = differences.set_index(comparison.cell)
    for bn, side in ((True, "bn"), (False, "no_bn")):
        variant = variants[variants[comparison.variant] == bn].set_index(comparison.cell)
        table[f"seeds {side}"] = variant["seeds"]
        for number in SPREAD_NUMBERS:
            for suffix in ("", " sd", " ci95"):
                table[f"{number} {side}{suffix}"] = variant[number + suffix]
        for number in SUMMARY_NUMBERS[2:]:
            table[f"{number} {side}"] = variant[number]
    ordered = [
        *[c for c in table.columns if c.startswith("seeds")],
        "pairs",
        *[c for number in SUMMARY_NUMBERS for c in table.columns if c.startswith(number)],
    ]
    return table[ordered].reset_index().sort_values(comparison.cell).reset_index(drop=True)


def _mean_ci(mean: float, ci95: float) -> str:
    if pd.isna(mean):
        return "-"
    return f"{mean:.3f}" if pd.isna(ci95) else f"{mean:.3f} ± {ci95:.3f}"


def display_table(table: pd.DataFrame, comparison: Comparison = DEFAULT) -> pd.DataFrame:
    """The summary for reading: mean ± 95 % half-width, one column per variant and number."""
    true_name, false_name = comparison.labels
    shown = table[comparison.cell].copy()
    shown[f"seeds ({true_name} / {false_name})"] = [
        f"{_count(bn)} / {_count(plain)}"
        for bn, plain in zip(table["seeds bn"], table["seeds no_bn"], strict=True)
    ]
    for number, label in (("best_val_accuracy", "best val acc"), ("final_val_accuracy", "final")):
        for side, name in (("bn", true_name), ("no_bn", false_name)):
            shown[f"{label} {name}"] = [
                _mean_ci(m, c)
                for m, c in zip(
                    table[f"{number} {side}"], table[f"{number} {side} ci95"], strict=True
                )
            ]
        shown[f"{label} {true_name} − {false_name}"] = [
            _mean_ci(m, c)
            for m, c in zip(table[f"{number} diff"], table[f"{number} diff ci95"], strict=True)
        ]
    for side, name in (("bn", true_name), ("no_bn", false_name)):
        shown[f"steps to target {name}"] = [
            "-" if pd.isna(v) else f"{v:.0f}" for v in table[f"steps_to_target {side}"]
        ]
    return shown


def _count(value) -> str:
    return "0" if pd.isna(value) else str(int(value))


def best_learning_rates(variants: pd.DataFrame, comparison: Comparison = DEFAULT) -> pd.DataFrame:
    """Each side at its own best column value (its best learning rate), per row value."""
    sides = [comparison.row, comparison.variant]
    columns = [*sides, comparison.column, "seeds", "best_val_accuracy", "best_val_accuracy ci95"]
    if variants.empty:
        return pd.DataFrame(columns=[*columns, "steps_to_target"])
    best = variants.loc[variants.groupby(sides)["best_val_accuracy"].idxmax()]
    return best[[*columns, "steps_to_target"]].reset_index(drop=True)


def _best_of(column: str) -> str:
    return "learning rate" if column in ("lr", "optimizer.learning_rate") else column


def _majority(count: int, total: int) -> bool:
    return total > 0 and count * 2 > total


def cell_facts(
    seeds: pd.DataFrame, target: float, chance: float | None, comparison: Comparison = DEFAULT
) -> list[dict]:
    """Machine-readable facts per cell, counted over seeds, with each seed's values.

    A verdict (stayed at chance, learned, first to target) follows the majority
    of seeds; the counts say how many agreed.
    """
    facts = []
    # Unknown chance (no run recorded its class count): no run is said to stay at chance.
    chance_ceiling = CHANCE_CEILING_FACTOR * chance if chance is not None else -1.0
    for (row_value, column_value), cell in seeds.groupby(comparison.cell):
        fact = {
            comparison.row: _plain(row_value),
            comparison.column: _plain(column_value),
            "target": target,
            "chance_ceiling": chance_ceiling,
            "learned_floor": LEARNED_FLOOR,
        }
        plain = cell[~cell[comparison.variant]]
        bn = cell[cell[comparison.variant]]
        if not plain.empty:
            at_chance = int((plain["best_val_accuracy"] <= chance_ceiling).sum())
            fact["no_bn"] = _side(plain) | {
                "stayed_at_chance_seeds": at_chance,
                "stayed_at_chance": _majority(at_chance, len(plain)),
            }
        if not bn.empty:
            learned = int((bn["best_val_accuracy"] >= LEARNED_FLOOR).sum())
            fact["bn"] = _side(bn) | {
                "learned_seeds": learned,
                "learned": _majority(learned, len(bn)),
            }
        fact |= _race(cell, comparison.variant)
        facts.append(fact)
    return facts


def _side(runs: pd.DataFrame) -> dict:
    diverged = int((runs["outcome"] == metrics.DIVERGED).sum())
    return {
        "seeds": len(runs),
        "diverged_seeds": diverged,
        "diverged": _majority(diverged, len(runs)),
        "best_val_accuracy": values.number(runs["best_val_accuracy"].mean()),
        "per_seed": {
            str(int(run["seed"])): {
                "best_val_accuracy": values.number(run["best_val_accuracy"]),
                "final_val_accuracy": values.number(run["final_val_accuracy"]),
                "steps_to_target": values.number(run["steps_to_target"]),
                "outcome": run["outcome"],
            }
            for _, run in runs.iterrows()
        },
    }


def _race(cell: pd.DataFrame, variant: str) -> dict:
    """Which variant reached the target first, seed by seed, over the seeds both have."""
    steps = cell.pivot_table(index="seed", columns=variant, values="steps_to_target", dropna=False)
    if True not in steps or False not in steps:
        return {
            "first_to_target": "missing",
            "race_seeds": 0,
            "bn_first_seeds": 0,
            "steps_ahead": None,
            "per_seed_winner": {},
        }
    winners = {str(int(seed)): _winner(row[True], row[False]) for seed, row in steps.iterrows()}
    both = steps.dropna()
    ahead = (both[False] - both[True])[both[True] < both[False]]
    counts = pd.Series(list(winners.values())).value_counts()
    verdict = (
        counts.index[0] if len(counts) and _majority(int(counts.iloc[0]), len(winners)) else "split"
    )
    return {
        "first_to_target": verdict,
        "race_seeds": len(winners),
        "bn_first_seeds": int(counts.get("bn", 0)),
        "no_bn_first_seeds": int(counts.get("no_bn", 0)),
        # Median lead over the seeds where both got there and BN was first.
        "steps_ahead": values.number(ahead.median()) if len(ahead) else None,
        "per_seed_winner": winners,
    }


def _winner(bn_steps: float, plain_steps: float) -> str:
    if pd.isna(bn_steps) and pd.isna(plain_steps):
        return "neither"
    if pd.isna(plain_steps) or (not pd.isna(bn_steps) and bn_steps < plain_steps):
        return "bn"
    if pd.isna(bn_steps) or plain_steps < bn_steps:
        return "no_bn"
    return "tie"


def _plain(value):
    """A cell value as JSON writes it: a number as a float, anything else as text."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    return str(value)


def _cell_name(fact: dict, comparison: Comparison = DEFAULT) -> str:
    row, column = fact[comparison.row], fact[comparison.column]
    return f"{values.shown_value(row)} at {comparison.column}={values.shown_value(column)}"


def plain_language(
    facts: list[dict], best: pd.DataFrame, target: float, comparison: Comparison = DEFAULT
) -> list[str]:
    """A few sentences that say what the numbers say, counted over seeds."""
    true_name, false_name = comparison.labels
    sentences = []
    seeds = max(
        (f[side]["seeds"] for f in facts for side in ("bn", "no_bn") if side in f), default=0
    )
    if seeds == 1:
        sentences.append(
            "One seed per setting: every verdict below rests on a single run, with no spread "
            "or interval (run more seeds, e.g. seed=0,1,2)."
        )
    compared = [f for f in facts if "bn" in f and "no_bn" in f]
    for fact in compared:
        plain, bn = fact["no_bn"], fact["bn"]
        parts = [
            f"{false_name} stayed at chance in {plain['stayed_at_chance_seeds']} of "
            f"{plain['seeds']} seeds",
            f"{true_name} learned in {bn['learned_seeds']} of {bn['seeds']}",
        ]
        if fact["race_seeds"]:
            lead = (
                f", by a median of {fact['steps_ahead']:.0f} steps"
                if fact["steps_ahead"] is not None
                else ""
            )
            parts.append(
                f"{true_name} reached {target:.0%} first in {fact['bn_first_seeds']} of "
                f"{fact['race_seeds']}{lead}"
            )
        sentences.append(f"{_cell_name(fact, comparison)}: " + "; ".join(parts) + ".")
    rescued = [f for f in compared if f["no_bn"]["stayed_at_chance"] and f["bn"]["learned"]]
    if compared:
        cells = ", ".join(_cell_name(f, comparison) for f in rescued) if rescued else "none"
        sentences.append(
            f"By majority of seeds, {true_name} learned where {false_name} stayed at chance in "
            f"{len(rescued)} of {len(compared)} settings: {cells}."
        )
    column = comparison.column
    for row_value, group in best.groupby(comparison.row):
        sides = {bool(row[comparison.variant]): row for _, row in group.iterrows()}
        if True in sides and False in sides:
            bn, plain = sides[True], sides[False]
            sentences.append(
                f"{values.shown_value(row_value)}, each at its own best {_best_of(column)}: "
                f"{true_name} "
                f"{_mean_ci(bn['best_val_accuracy'], bn['best_val_accuracy ci95'])} "
                f"({column}={values.shown_value(bn[column])}) vs {false_name} "
                f"{_mean_ci(plain['best_val_accuracy'], plain['best_val_accuracy ci95'])} "
                f"({column}={values.shown_value(plain[column])})."
            )
    return sentences


def chance_of(runs: pd.DataFrame) -> float | None:
    """Chance accuracy of the runs' data, from the class count each run recorded; None
    when no run recorded it (runs made before the count was recorded)."""
    if "classes" not in runs:
        return None
    counts = runs["classes"].dropna()
    return metrics.chance_accuracy(int(counts.max())) if len(counts) else None
