"""What a report sets side by side: the sides of a variant, in each cell of two keys.

Named in config (`compare.*`; the BN study's are in the shipped `conf/config.yaml`),
recorded with every run, and read back from the runs by the report, so the store says
what was compared. Runs recorded before `compare` existed are read with the shipped
study's block.

A variant is a true/false key (two sides, named by the two `compare.labels`), or any key,
or several joined by `+` (`a+b`): then each value it takes is a side (`true x`, the keys'
values joined by a space), named by a `VALUE: LABEL` entry of `compare.labels`, and the
last named side is the reference the others are set against.
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


# Separates the keys of a variant made of several (`bn+model.norm`), and a side's value
# from its name in `compare.labels` (`true layer: LayerNorm`).
KEY_JOINER = "+"
LABEL_SEPARATOR = ": "


@dataclass(frozen=True)
class Comparison:
    # The key whose sides are compared (a true/false key, any key, or several joined by +).
    variant: str
    # The keys that make a cell: panel rows, then columns (the columns' key is the one
    # each side is also compared at its own best of, e.g. its best learning rate).
    row: str
    column: str
    # Two sides: how the page names the true side, then the false side. Several sides:
    # `VALUE: LABEL` per side, in the page's order, the reference last.
    labels: tuple[str, ...]
    implementation: Implementation = field(default_factory=Implementation)
    # Whether the variant has sides other than true and false (set from the runs).
    several: bool = False

    @property
    def cell(self) -> list[str]:
        return [self.row, self.column]

    @property
    def keys(self) -> list[str]:
        return [self.row, self.column, self.variant]

    @property
    def variant_keys(self) -> list[str]:
        """The recorded keys that make the variant: one, or several joined by +."""
        return self.variant.split(KEY_JOINER)

    @property
    def named(self) -> dict[str, str]:
        """Several sides: each named side's value and its name, in the page's order."""
        pairs = [label.split(LABEL_SEPARATOR, 1) for label in self.labels]
        return {value: name for value, name in (p for p in pairs if len(p) == 2)}

    def side(self, value: object) -> bool | str:
        """A run's side: true or false, or its value as text when there are several."""
        if self.several:
            return str(value)
        return str(value).lower() in {"true", "1"}

    def sides(self, present: object = ()) -> list:
        """The sides in the page's order: true then false; or the named sides, then the
        other values present (sorted), the reference last."""
        if not self.several:
            return [True, False]
        named = list(self.named)
        others = sorted({str(value) for value in present} - set(named))
        if not named:
            return others
        return [*named[:-1], *others, named[-1]]

    def reference(self, present: object = ()) -> bool | str:
        """The side the others are set against: the false side, or the last of several."""
        return self.sides(present)[-1] if self.several else False

    def label(self, side: bool | str) -> str:
        if not self.several:
            return self.labels[0] if side else self.labels[1]
        return self.named.get(str(side), f"{self.variant}={side}")

    @property
    def title(self) -> str:
        if not self.several:
            return f"{self.labels[0]} vs {self.labels[1]}"
        return " vs ".join(self.named.values()) or f"{self.variant} compared"


@cache
def shipped() -> Comparison:
    """The shipped study's comparison (`compare` in the packaged conf/config.yaml)."""
    block = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml").compare)
    return _from_block(block)


def _from_block(block: dict, several: bool | None = None) -> Comparison:
    row, column = block["cell"]
    implementation = block.get("implementation") or {}
    labels = tuple(str(label) for label in block["labels"])
    variant = str(block["variant"])
    if several is None:
        several = KEY_JOINER in variant or any(LABEL_SEPARATOR in label for label in labels)
    return Comparison(
        variant,
        str(row),
        str(column),
        labels,
        Implementation(
            str(implementation.get("key") or ""),
            str(implementation.get("unset") or ""),
            {str(k): str(v) for k, v in (implementation.get("names") or {}).items()},
        ),
        several,
    )


def side_values(runs: pd.DataFrame, comparison: Comparison) -> pd.Series:
    """Each run's value of the variant: its key's value, or its keys' values joined by a
    space (`true layer`); booleans in lower case, as the command line writes them."""

    def text(value: object) -> str:
        shown = str(value)
        return shown.lower() if shown.lower() in {"true", "false"} else shown

    columns = [runs[key].map(text) for key in comparison.variant_keys]
    joined = columns[0]
    for column in columns[1:]:
        joined = joined + " " + column
    return joined


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
    block = {
        "variant": variant,
        "cell": _as_list(cell),
        "labels": _as_list(labels) if labels else [f"{variant}=true", f"{variant}=false"],
        "implementation": {
            "key": recorded("compare.implementation.key"),
            "unset": recorded("compare.implementation.unset"),
            "names": names,
        },
    }
    compared = _from_block(block)
    keys = compared.variant_keys
    if not compared.several and all(key in runs for key in keys):
        # A single key whose recorded values are not all true or false has several sides.
        found = set(side_values(runs.dropna(subset=keys), compared))
        compared = replace(compared, several=not found <= {"true", "false"})
    if compared.several and not compared.named:
        compared = replace(compared, labels=())
    if "compare.implementation.key" not in runs and variant == shipped().variant:
        # Recorded before `compare.implementation` existed: the shipped study's.
        return replace(compared, implementation=shipped().implementation)
    return compared


def _as_list(text: str) -> list[str]:
    """A list param as MLflow keeps it (`['activation', 'lr']`)."""
    return [str(item) for item in ast.literal_eval(text)]
