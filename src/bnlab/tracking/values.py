"""How values are written to the store: rounding, param text, and which write errors
are the store's fault (so the job goes offline) rather than the value's.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from bnlab.tracking.retries import STORE_SIDE_CODES, StoreUnavailable

log = logging.getLogger(__name__)

# MLflow caps a param value at 6,000 characters; longer values are cut with a marker.
MAX_PARAM_LENGTH = 6000

METRIC_DIGITS = 6


def _store_side(error: BaseException) -> bool:
    """Whether a write failed because of the store, not because of what was written."""
    return isinstance(error, StoreUnavailable) or getattr(error, "error_code", None) in (
        STORE_SIDE_CODES
    )


def _rounded(value: float) -> float:
    value = float(value)
    return float(f"{value:.{METRIC_DIGITS}g}") if math.isfinite(value) else value


def _param_value(value: Any) -> str:
    text = "null" if value is None else str(value)
    if isinstance(value, bool):
        text = str(value).lower()
    if len(text) > MAX_PARAM_LENGTH:
        text = text[: MAX_PARAM_LENGTH - 20] + "...[truncated]"
    return text
