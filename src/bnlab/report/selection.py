"""Which recorded runs a report compares: one identity scheme, settings that match."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from bnlab import metrics
from bnlab.config.keys import SHORTHANDS, is_trained
from bnlab.job.identity import SCHEME
from bnlab.report.comparison import Comparison, side_values

# Parameters that define a grid cell, a variant or a repetition (the shorthands and the
# group keys they set); every other trained parameter must match across compared runs.
VARYING = {*SHORTHANDS, *SHORTHANDS.values()}


@dataclass
class Selection:
    """The runs a report compares, with notes on what was left out and why."""

    runs: pd.DataFrame
    curves: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def select(runs: pd.DataFrame, curves: pd.DataFrame, comparison: Comparison) -> Selection:
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
    missing = [key for key in comparison.variant_keys if key not in runs]
    if missing:
        notes.append(f"no run recorded {', '.join(missing)}: nothing to compare")
        return Selection(runs.iloc[0:0], curves.iloc[0:0], notes)
    runs[comparison.variant] = side_values(runs, comparison).map(comparison.side)
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
        and column not in comparison.variant_keys
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


def implementation_note(runs: pd.DataFrame, comparison: Comparison) -> str | None:
    """How the compared runs' true side was computed (`compare.implementation`), as one
    sentence; None when the comparison names no such key or no run has that side."""
    implementation = comparison.implementation
    key = implementation.key
    if not key or comparison.several:
        return None
    sided = runs[runs[comparison.variant].map(comparison.side)] if not runs.empty else runs
    if sided.empty or (key not in sided and not implementation.unset):
        return None
    values = sided[key] if key in sided else pd.Series(index=sided.index, dtype=object)
    counts = values.fillna(implementation.unset).astype(str).value_counts()
    names = implementation.names
    parts = [f"{names.get(value, value)} in {count}" for value, count in counts.items()]
    side = comparison.labels[0]
    return f"{side} computed with {'; '.join(parts)} of {len(sided)} {side} run(s)"
