"""Per-cell facts counted over seeds (stayed at chance, learned, first to target), in prose."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bnlab import metrics, values
from bnlab.report.comparison import Comparison
from bnlab.report.statistics import best_of, mean_ci

# Best validation accuracy at or below this many times chance counts as "stayed at chance".
CHANCE_CEILING_FACTOR = 2.0


# Best validation accuracy at or above this counts as "learned".
LEARNED_FLOOR = metrics.LEARNED_ACCURACY


def _majority(count: int, total: int) -> bool:
    return total > 0 and count * 2 > total


def cell_facts(
    seeds: pd.DataFrame, target: float, chance: float | None, comparison: Comparison
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
        if comparison.several:
            # Each side's runs, named as the page names them (the rest is for two sides).
            fact["sides"] = {
                comparison.label(side): _side(cell[cell[comparison.variant] == side])
                for side in comparison.sides(cell[comparison.variant].unique())
                if (cell[comparison.variant] == side).any()
            }
            facts.append(fact)
            continue
        plain = cell[~cell[comparison.variant].astype(bool)]
        bn = cell[cell[comparison.variant].astype(bool)]
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


def _cell_name(fact: dict, comparison: Comparison) -> str:
    row, column = fact[comparison.row], fact[comparison.column]
    return f"{values.shown_value(row)} at {comparison.column}={values.shown_value(column)}"


def plain_language(
    facts: list[dict], best: pd.DataFrame, target: float, comparison: Comparison
) -> list[str]:
    """A few sentences that say what the numbers say, counted over seeds."""
    if comparison.several:
        return _several_sides(best, comparison)
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
                f"{values.shown_value(row_value)}, each at its own best {best_of(column)}: "
                f"{true_name} "
                f"{mean_ci(bn['best_val_accuracy'], bn['best_val_accuracy ci95'])} "
                f"({column}={values.shown_value(bn[column])}) vs {false_name} "
                f"{mean_ci(plain['best_val_accuracy'], plain['best_val_accuracy ci95'])} "
                f"({column}={values.shown_value(plain[column])})."
            )
    return sentences


def _several_sides(best: pd.DataFrame, comparison: Comparison) -> list[str]:
    """Per row value, every side at its own best column value (its best learning rate)."""
    column = comparison.column
    sentences = []
    for row_value, group in best.groupby(comparison.row):
        by_side = {row[comparison.variant]: row for _, row in group.iterrows()}
        parts = [
            f"{comparison.label(side)} "
            f"{mean_ci(row['best_val_accuracy'], row['best_val_accuracy ci95'])} "
            f"({column}={values.shown_value(row[column])})"
            for side in comparison.sides(by_side)
            if (row := by_side.get(side)) is not None
        ]
        sentences.append(
            f"{values.shown_value(row_value)}, each at its own best {best_of(column)}: "
            + "; ".join(parts)
            + "."
        )
    return sentences


def chance_of(runs: pd.DataFrame) -> float | None:
    """Chance accuracy of the runs' data, from the class count each run recorded; None
    when no run recorded it (runs made before the count was recorded)."""
    if "classes" not in runs:
        return None
    counts = runs["classes"].dropna()
    return metrics.chance_accuracy(int(counts.max())) if len(counts) else None
