"""A search trial's reporter, made for a job only when the job belongs to a trial.

The job is handed `reporter` by the command that runs it, so the job layer never
imports the search (and Optuna) itself.
"""

from __future__ import annotations

from typing import Any


def reporter(search: Any) -> Any:
    """The reporter of the Optuna trial named by `search` (a `SearchConfig`), or None."""
    if search.trial is None:
        return None
    from bnlab.sweep.search import TrialReporter

    return TrialReporter(search)
