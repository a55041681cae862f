"""What a report sets side by side: the two sides of one key, in each cell of two others.

Named in config (`compare.variant`, `compare.cell`, `compare.labels`; the BN study's
defaults are `bn`, `[activation, lr]` and `[BN, no BN]`), recorded with every run, and
read back from the runs by the report, so the store says what was compared.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Comparison:
    # The key whose true and false sides are compared.
    variant: str = "bn"
    # The keys that make a cell: panel rows, then columns (the columns' key is the one
    # each side is also compared at its own best of, e.g. its best learning rate).
    row: str = "activation"
    column: str = "lr"
    # How the page names the variant's true side, then its false side.
    labels: tuple[str, str] = ("BN", "no BN")

    @property
    def cell(self) -> list[str]:
        return [self.row, self.column]

    @property
    def keys(self) -> list[str]:
        return [self.row, self.column, self.variant]

    def label(self, side: bool) -> str:
        return self.labels[0] if side else self.labels[1]


DEFAULT = Comparison()


def from_runs(runs: pd.DataFrame) -> Comparison:
    """The comparison the runs were recorded with (the most common), else the BN study's."""

    def recorded(key: str) -> str | None:
        if key not in runs or runs[key].dropna().empty:
            return None
        return str(runs[key].dropna().astype(str).value_counts().index[0])

    variant, cell, labels = (
        recorded("compare.variant"),
        recorded("compare.cell"),
        recorded("compare.labels"),
    )
    if variant is None or cell is None:
        return DEFAULT
    row, column = _as_list(cell)
    shown = _as_list(labels) if labels else list(DEFAULT.labels)
    return Comparison(variant, row, column, (shown[0], shown[1]))


def _as_list(text: str) -> list[str]:
    """A list param as MLflow keeps it (`['activation', 'lr']`)."""
    return [str(item) for item in ast.literal_eval(text)]
