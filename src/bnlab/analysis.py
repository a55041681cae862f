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

from bnlab import metrics

CELL = ["activation", "lr"]
VARIANT = "bn"
# Parameters that define a grid cell, a variant or a repetition; the rest must match.
VARYING = {
    "bn",
    "lr",
    "activation",
    "seed",
    "model.bn",
    "optimizer.lr",
    "model.activation",
    "train.seed",
}
# Parameters that do not change what was trained.
IGNORED_PREFIXES = ("tracking.", "train.rerun", "search.")
# Best validation accuracy at or below this counts as "stayed at chance" (chance is 0.1).
CHANCE_CEILING = 0.2
# Best validation accuracy at or above this counts as "learned".
LEARNED_FLOOR = 0.5


@dataclass
class Selection:
    """The runs a report compares, with notes on what was left out and why."""

    runs: pd.DataFrame
    curves: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def _as_bool(value) -> bool:
    return str(value).lower() in {"true", "1"}


def select(runs: pd.DataFrame, curves: pd.DataFrame) -> Selection:
    """Keeps one comparable set of runs: the most common setting of everything not swept.

    Runs whose fixed parameters differ from that setting are dropped with a note.
    For each (cell, variant, seed), the newest complete run wins; a failed or
    killed run is kept only where no complete run exists, so it is drawn marked.
    """
    notes: list[str] = []
    if runs.empty:
        return Selection(runs, curves, notes)
    runs = runs.copy()
    runs["bn"] = runs["bn"].map(_as_bool)
    runs["lr"] = runs["lr"].astype(float)
    runs["seed"] = runs["seed"].astype(int)
    fixed = sorted(
        column
        for column in runs.columns
        if "." in column and column not in VARYING and not column.startswith(IGNORED_PREFIXES)
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
    runs = runs.drop_duplicates(subset=[*CELL, VARIANT, "seed"], keep="first")
    if len(runs) < before:
        notes.append(
            f"{before - len(runs)} older or superseded run(s) of the same setting left out"
        )
    curves = curves[curves["run_id"].isin(runs["run_id"])]
    curves = curves.merge(runs[["run_id", *CELL, VARIANT, "seed", "outcome"]], on="run_id")
    return Selection(runs.reset_index(drop=True), curves.sort_values("step"), notes)


def steps_to_target(curve: pd.DataFrame, target: float) -> float:
    """The first step whose validation accuracy reaches `target`, or NaN."""
    reached = curve.loc[curve["value"] >= target, "step"]
    return float(reached.min()) if not reached.empty else math.nan


def per_variant(selection: Selection, target: float) -> pd.DataFrame:
    """One row per (activation, lr, bn): means over seeds of the headline numbers."""
    rows = []
    for (activation, lr, bn), group in selection.runs.groupby([*CELL, VARIANT]):
        per_seed = []
        for _, run in group.iterrows():
            curve = selection.curves[selection.curves["run_id"] == run["run_id"]]
            values = curve["value"]
            per_seed.append(
                {
                    "final_val_accuracy": values.iloc[-1] if len(values) else math.nan,
                    "best_val_accuracy": values.max() if len(values) else math.nan,
                    "test_accuracy": run.get(metrics.TEST_ACCURACY, math.nan),
                    "steps_to_target": steps_to_target(curve, target),
                }
            )
        table = pd.DataFrame(per_seed)
        reached = table["steps_to_target"].notna().all()
        rows.append(
            {
                "activation": activation,
                "lr": lr,
                "bn": bn,
                "seeds": len(group),
                "final_val_accuracy": table["final_val_accuracy"].mean(),
                "best_val_accuracy": table["best_val_accuracy"].mean(),
                "test_accuracy": pd.to_numeric(table["test_accuracy"], errors="coerce").mean(),
                "steps_to_target": table["steps_to_target"].mean() if reached else math.nan,
                "diverged": int((group["outcome"] == metrics.DIVERGED).sum()),
                "failed": int(group["outcome"].isin([metrics.FAILED, metrics.KILLED]).sum()),
            }
        )
    return pd.DataFrame(rows)


SUMMARY_NUMBERS = ["final_val_accuracy", "best_val_accuracy", "test_accuracy", "steps_to_target"]


def summary_table(variants: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: each number for BN and no-BN side by side, and BN minus no-BN."""
    if variants.empty:
        return pd.DataFrame(columns=CELL)
    wide = variants.pivot_table(index=CELL, columns="bn", values=SUMMARY_NUMBERS, dropna=False)
    table = pd.DataFrame(index=wide.index)
    for number in SUMMARY_NUMBERS:
        bn = wide.get((number, True), np.nan)
        plain = wide.get((number, False), np.nan)
        table[f"{number} bn"] = bn
        table[f"{number} no_bn"] = plain
        table[f"{number} diff"] = bn - plain
    return table.reset_index().sort_values(CELL).reset_index(drop=True)


def best_learning_rates(variants: pd.DataFrame) -> pd.DataFrame:
    """Each variant at its own best learning rate, per activation."""
    if variants.empty:
        return pd.DataFrame(columns=["activation", "bn", "lr", "best_val_accuracy"])
    best = variants.loc[variants.groupby(["activation", "bn"])["best_val_accuracy"].idxmax()]
    return best[["activation", "bn", "lr", "best_val_accuracy", "steps_to_target"]].reset_index(
        drop=True
    )


def _number(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def claims(variants: pd.DataFrame, target: float) -> list[dict]:
    """Machine-readable facts per cell, for readers and for regression checks."""
    facts = []
    for (activation, lr), group in variants.groupby(CELL):
        sides = {bool(row["bn"]): row for _, row in group.iterrows()}
        bn, plain = sides.get(True), sides.get(False)
        fact = {
            "activation": activation,
            "lr": lr,
            "target": target,
            "chance_ceiling": CHANCE_CEILING,
            "learned_floor": LEARNED_FLOOR,
        }
        if plain is not None:
            fact["no_bn"] = {
                "best_val_accuracy": _number(plain["best_val_accuracy"]),
                "stayed_at_chance": bool(plain["best_val_accuracy"] <= CHANCE_CEILING),
                "diverged": bool(plain["diverged"] > 0),
                "steps_to_target": _number(plain["steps_to_target"]),
            }
        if bn is not None:
            fact["bn"] = {
                "best_val_accuracy": _number(bn["best_val_accuracy"]),
                "learned": bool(bn["best_val_accuracy"] >= LEARNED_FLOOR),
                "diverged": bool(bn["diverged"] > 0),
                "steps_to_target": _number(bn["steps_to_target"]),
            }
        if bn is not None and plain is not None:
            fact["first_to_target"], fact["steps_ahead"] = _race(
                bn["steps_to_target"], plain["steps_to_target"]
            )
        else:
            fact["first_to_target"], fact["steps_ahead"] = "missing", None
        facts.append(fact)
    return facts


def _race(bn_steps: float, plain_steps: float) -> tuple[str, float | None]:
    if pd.isna(bn_steps) and pd.isna(plain_steps):
        return "neither", None
    if pd.isna(plain_steps):
        return "bn", None
    if pd.isna(bn_steps):
        return "no_bn", None
    if bn_steps == plain_steps:
        return "tie", 0.0
    winner = "bn" if bn_steps < plain_steps else "no_bn"
    return winner, float(abs(bn_steps - plain_steps))


def plain_language(facts: list[dict], best: pd.DataFrame, target: float) -> list[str]:
    """A few sentences that say what the numbers say."""
    sentences = []
    rescued = [
        f
        for f in facts
        if f.get("no_bn", {}).get("stayed_at_chance") and f.get("bn", {}).get("learned")
    ]
    compared = [f for f in facts if "bn" in f and "no_bn" in f]
    if rescued:
        cells = ", ".join(f"{f['activation']} at lr={f['lr']:g}" for f in rescued)
        sentences.append(
            f"Without BN the network stayed at chance in {len(rescued)} of {len(compared)} "
            f"compared settings where the BN network learned: {cells}."
        )
    elif compared:
        sentences.append(
            f"In none of the {len(compared)} compared settings did the plain network stay at "
            "chance while the BN network learned."
        )
    bn_first = [f for f in compared if f["first_to_target"] == "bn"]
    if compared:
        ahead = [f["steps_ahead"] for f in bn_first if f["steps_ahead"] is not None]
        detail = (
            f", by a median of {np.median(ahead):.0f} steps where both got there" if ahead else ""
        )
        sentences.append(
            f"BN reached {target:.0%} validation accuracy first in {len(bn_first)} of "
            f"{len(compared)} settings{detail}."
        )
    for activation, group in best.groupby("activation"):
        sides = {bool(row["bn"]): row for _, row in group.iterrows()}
        if True in sides and False in sides:
            bn, plain = sides[True], sides[False]
            sentences.append(
                f"{activation}, each at its own best learning rate: BN "
                f"{bn['best_val_accuracy']:.3f} (lr={bn['lr']:g}) vs no BN "
                f"{plain['best_val_accuracy']:.3f} (lr={plain['lr']:g})."
            )
    return sentences
