"""How values are written for people (pages, labels, overrides) and read as plain numbers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def format_value(value: Any) -> str:
    """A value as Hydra's command line writes it: booleans in lower case (`bn=true`)."""
    return str(value).lower() if isinstance(value, bool | np.bool_) else str(value)


def shown_value(value: Any) -> str:
    """A value as a page shows it: numbers compactly (0.05, 1e-05), the rest as text."""
    if isinstance(value, bool | np.bool_):
        return format_value(value)
    if isinstance(value, int | float | np.integer | np.floating):
        return f"{value:g}"
    return str(value)


def number(value: Any) -> float | None:
    """A finite number as a float, or None for a missing, NaN or infinite value."""
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) or math.isinf(value) else value
