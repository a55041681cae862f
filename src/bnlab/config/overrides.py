"""Command-line overrides parsed as Hydra parses them, in one place.

Hydra's override grammar (`hydra.core.override_parser`) is what its own sweepers use,
but it is not part of Hydra's documented application API: it may change in a minor
release. Every module that reads an override's key, value or sweep goes through here,
so such a change is met in this one module.
"""

from __future__ import annotations

from collections.abc import Iterable

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep

__all__ = [
    "ChoiceSweep",
    "IntervalSweep",
    "Override",
    "RangeSweep",
    "parse",
    "parse_one",
    "split_swept",
]


def parse(overrides: Iterable[str]) -> list[Override]:
    """Each override as Hydra reads it (raises Hydra's OverrideParseException when bad)."""
    return OverridesParser.create().parse_overrides(list(overrides))


def parse_one(override: str) -> Override:
    """One override as Hydra reads it."""
    return OverridesParser.create().parse_override(override)


def split_swept(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(the overrides a single composition takes, the swept ones: `seed=3,4,5`, which
    composition refuses and a multirun expands)."""
    fixed: list[str] = []
    swept: list[str] = []
    for text, override in zip(overrides, parse(overrides), strict=True):
        (swept if override.is_sweep_override() else fixed).append(text)
    return fixed, swept
