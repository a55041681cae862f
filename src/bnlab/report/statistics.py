"""Numbers over seeds: per-seed values, intervals, per-variant tables, best learning rates.

`runs` has one row per job run (params by dotted key, final metrics by name); `curves` one
row per logged point of validation accuracy (run_id, step, value).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from bnlab import metrics
from bnlab.report.comparison import Comparison
from bnlab.report.selection import Selection


def steps_to_target(curve: pd.DataFrame, target: float) -> float:
    """The first step whose validation accuracy reaches `target`, or NaN."""
    reached = curve.loc[curve["value"] >= target, "step"]
    return float(reached.min()) if not reached.empty else math.nan


def per_seed(selection: Selection, target: float, comparison: Comparison) -> pd.DataFrame:
    """One row per compared run: the headline numbers of each seed of each variant."""
    rows = []
    for _, run in selection.runs.iterrows():
        curve = selection.curves[selection.curves["run_id"] == run["run_id"]]
        values = curve["value"]
        rows.append(
            {
                comparison.row: run[comparison.row],
                comparison.column: run[comparison.column],
                comparison.variant: comparison.side(run[comparison.variant]),
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


# How the report and the claims name a comparison of each side at its best learning rate.
OWN_BEST_LR = "Each variant at its own best learning rate"

# The numbers summarised per variant; the first two get a spread and an interval.
SUMMARY_NUMBERS = ["best_val_accuracy", "final_val_accuracy", "test_accuracy", "steps_to_target"]


SPREAD_NUMBERS = SUMMARY_NUMBERS[:2]


def per_variant(seeds: pd.DataFrame, comparison: Comparison) -> pd.DataFrame:
    """One row per (row, column, variant) setting: mean, sd and 95 % interval over seeds."""
    rows = []
    for (row_value, column_value, side), group in seeds.groupby(comparison.keys):
        row = {
            comparison.row: row_value,
            comparison.column: column_value,
            comparison.variant: comparison.side(side),
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


def paired_differences(seeds: pd.DataFrame, comparison: Comparison) -> pd.DataFrame:
    """Per cell: true side minus false side over the seeds both have, with a 95 % t-interval.

    With several sides: one row per cell and side, that side minus the reference side
    (`variant` names the side; the reference's own row has no difference).
    """
    rows = []
    present = seeds[comparison.variant].unique() if len(seeds) else []
    reference = comparison.reference(present)
    compared = [side for side in comparison.sides(present) if side != reference]
    for (row_value, column_value), cell in seeds.groupby(comparison.cell):
        wide = cell.pivot_table(index="seed", columns=comparison.variant, values=SPREAD_NUMBERS)
        for side in compared:
            row = {comparison.row: row_value, comparison.column: column_value}
            if comparison.several:
                row[comparison.variant] = side
            for number in SPREAD_NUMBERS:
                if (number, side) in wide and (number, reference) in wide:
                    diff = (wide[(number, side)] - wide[(number, reference)]).dropna()
                else:
                    diff = pd.Series(dtype=float)
                mean, sd, ci95, pairs = interval(diff)
                row |= {f"{number} diff": mean, f"{number} diff ci95": ci95, "pairs": pairs}
            rows.append(row)
    return pd.DataFrame(rows)


def summary_table(
    variants: pd.DataFrame, differences: pd.DataFrame, comparison: Comparison
) -> pd.DataFrame:
    """One row per cell: both sides side by side (mean, sd, interval) and the paired diff.

    Columns name the true side `bn` and the false side `no_bn`, whatever the variant. With
    several sides: one row per cell and side, with its difference from the reference.
    """
    if variants.empty:
        return pd.DataFrame(columns=comparison.cell)
    if comparison.several:
        keys = [*comparison.cell, comparison.variant]
        merged = variants.merge(differences, on=keys, how="left") if len(differences) else variants
        return merged.sort_values(keys).reset_index(drop=True)
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


def mean_ci(mean: float, ci95: float) -> str:
    if pd.isna(mean):
        return "-"
    return f"{mean:.3f}" if pd.isna(ci95) else f"{mean:.3f} ± {ci95:.3f}"


def display_table(table: pd.DataFrame, comparison: Comparison) -> pd.DataFrame:
    """The summary for reading: mean ± 95 % half-width, one column per variant and number
    (with several sides: one row per side, its difference from the reference beside it)."""
    if comparison.several:
        return _display_several(table, comparison)
    true_name, false_name = comparison.labels
    shown = table[comparison.cell].copy()
    shown[f"seeds ({true_name} / {false_name})"] = [
        f"{_count(bn)} / {_count(plain)}"
        for bn, plain in zip(table["seeds bn"], table["seeds no_bn"], strict=True)
    ]
    for number, label in (("best_val_accuracy", "best val acc"), ("final_val_accuracy", "final")):
        for side, name in (("bn", true_name), ("no_bn", false_name)):
            shown[f"{label} {name}"] = [
                mean_ci(m, c)
                for m, c in zip(
                    table[f"{number} {side}"], table[f"{number} {side} ci95"], strict=True
                )
            ]
        shown[f"{label} {true_name} − {false_name}"] = [
            mean_ci(m, c)
            for m, c in zip(table[f"{number} diff"], table[f"{number} diff ci95"], strict=True)
        ]
    for side, name in (("bn", true_name), ("no_bn", false_name)):
        shown[f"steps to target {name}"] = [
            "-" if pd.isna(v) else f"{v:.0f}" for v in table[f"steps_to_target {side}"]
        ]
    return shown


def _display_several(table: pd.DataFrame, comparison: Comparison) -> pd.DataFrame:
    present = table[comparison.variant].unique() if len(table) else []
    order = {side: index for index, side in enumerate(comparison.sides(present))}
    reference = comparison.label(comparison.reference(present))
    table = table.assign(_order=table[comparison.variant].map(order)).sort_values(
        [*comparison.cell, "_order"]
    )
    shown = table[comparison.cell].copy()
    shown["variant"] = [comparison.label(side) for side in table[comparison.variant]]
    shown["seeds"] = [_count(value) for value in table["seeds"]]
    for number, label in (("best_val_accuracy", "best val acc"), ("final_val_accuracy", "final")):
        shown[label] = [
            mean_ci(m, c) for m, c in zip(table[number], table[f"{number} ci95"], strict=True)
        ]
        if f"{number} diff" in table:
            shown[f"{label} − {reference}"] = [
                mean_ci(m, c)
                for m, c in zip(table[f"{number} diff"], table[f"{number} diff ci95"], strict=True)
            ]
    shown["steps to target"] = ["-" if pd.isna(v) else f"{v:.0f}" for v in table["steps_to_target"]]
    return shown.reset_index(drop=True)


def _count(value) -> str:
    return "0" if pd.isna(value) else str(int(value))


def best_learning_rates(variants: pd.DataFrame, comparison: Comparison) -> pd.DataFrame:
    """Each side at its own best column value (its best learning rate), per row value."""
    sides = [comparison.row, comparison.variant]
    columns = [*sides, comparison.column, "seeds", "best_val_accuracy", "best_val_accuracy ci95"]
    if variants.empty:
        return pd.DataFrame(columns=[*columns, "steps_to_target"])
    best = variants.loc[variants.groupby(sides)["best_val_accuracy"].idxmax()]
    return best[[*columns, "steps_to_target"]].reset_index(drop=True)


def best_of(column: str) -> str:
    return "learning rate" if column in ("lr", "optimizer.learning_rate") else column
