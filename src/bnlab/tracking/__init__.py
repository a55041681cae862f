"""The tracking package: the only code that talks to MLflow, one concern a module.

- `store`: the store and experiment a command works in; starting and reusing runs.
- `scope`: the client, experiment and retry deadline a store's parts share.
- `writer`: one run's buffered writer, with retries and its offline journal.
- `values`: how values are written (rounding, param text) and which errors are the store's.
- `liveness`: heartbeats read back; runs of dead processes closed as KILLED.
- `sweeps`: a sweep's parent, its jobs read in one search, their counts.
- `replay`: runs that jobs kept offline, recorded by the next launch.
- `queries`: reading runs back, shared by jobs (a launch's parent) and the report.
- `publish`: a report folder logged as artifacts.
"""

import logging

from bnlab.tracking.publish import log_report
from bnlab.tracking.store import (
    CompletedRun,
    Store,
    StoreUnreachable,
    active_run_id_from_env,
    open_store,
    versions,
)
from bnlab.tracking.writer import ResultsLost, RunLogger

# MLflow's SQL store logs each database error with its whole traceback, then raises it.
# What it raises reaches the project's retries and spool, which say what happened in one
# line (with the traceback in the job's log file); the console is spared the pages.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

__all__ = [
    "CompletedRun",
    "ResultsLost",
    "RunLogger",
    "Store",
    "StoreUnreachable",
    "active_run_id_from_env",
    "log_report",
    "open_store",
    "versions",
]
