"""What a report sets side by side: the two sides of one key, in each cell of two others.

Named in config (`compare.*`; the BN study's are in the shipped `conf/config.yaml`),
recorded with every run, and read back from the runs by the report, so the store says
what was compared. Runs recorded before `compare` existed are read with the shipped
study's block.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field, replace
from functools import cache

import pandas as pd
from omegaconf import OmegaConf

from bnlab.config.registry import CONF_DIR


@dataclass(frozen=True)
class Implementation:
    """A key saying how the true side was computed (`compare.implementation`): its value
    in runs that predate it, and how the page names each value; an empty key: none."""

    key: str = ""
    unset: str = ""
    names: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Comparison:
    # The key whose true and false sides are compared.
    variant: str
    # The keys that make a cell: panel rows, then columns (the columns' key is the one
    # each side is also compared at its own best of, e.g. its best learning rate).
    row: str
    column: str
    # How the page names the variant's true side, then its false side.
    labels: tuple[str, str]
    implementation: Implementation = field(default_factory=Implementation)

    @property
    def cell(self) -> list[str]:
        return [self.row, self.column]

    @property
    def keys(self) -> list[str]:
        return [self.row, self.column, self.variant]

    def label(self, side: bool) -> str:
        return self.labels[0] if side else self.labels[1]

    @property
    def title(self) -> str:
        return f"{self.labels[0]} vs {self.labels[1]}"


@cache
def shipped() -> Comparison:
    """The shipped study's comparison (`compare` in the packaged conf/config.yaml)."""
    block = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml").compare)
    return _from_block(block)


def _from_block(block: dict) -> Comparison:
    row, column = block["cell"]
    implementation = block.get("implementation") or {}
    return Comparison(
        str(block["variant"]),
        str(row),
        str(column),
        (str(block["labels"][0]), str(block["labels"][1])),
        Implementation(
            str(implementation.get("key") or ""),
            str(implementation.get("unset") or ""),
            {str(k): str(v) for k, v in (implementation.get("names") or {}).items()},
        ),
    )


def from_runs(runs: pd.DataFrame) -> Comparison:
    """The comparison the runs were recorded with (the most common), else the shipped one."""

    def recorded(key: str) -> str | None:
        if key not in runs or runs[key].dropna().empty:
            return None
        return str(runs[key].dropna().astype(str).value_counts().index[0])

    variant, cell = recorded("compare.variant"), recorded("compare.cell")
    if variant is None or cell is None:
        return shipped()
    labels = recorded("compare.labels")
    names = {
        key.removeprefix("compare.implementation.names."): value
        for key in runs.columns
        if key.startswith("compare.implementation.names.") and (value := recorded(key)) is not None
    }
    compared = _from_block(
        {
            "variant": variant,
            "cell": _as_list(cell),
            "labels": _as_list(labels) if labels else [f"{variant}=true", f"{variant}=false"],
            "implementation": {
                "key": recorded("compare.implementation.key"),
                "unset": recorded("compare.implementation.unset"),
                "names": names,
            },
        }
    )
    if "compare.implementation.key" not in runs and variant == shipped().variant:
        # Recorded before `compare.implementation` existed: the shipped study's.
        return replace(compared, implementation=shipped().implementation)
    return compared


def _as_list(text: str) -> list[str]:
    """A list param as MLflow keeps it (`['activation', 'lr']`)."""
    return [str(item) for item in ast.literal_eval(text)]
