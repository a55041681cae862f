"""`bnlab sync`: record the runs that jobs kept offline (when their store stopped taking writes).

bnlab sync                      # ./unsent into $MLFLOW_TRACKING_URI or ./mlflow.db
bnlab sync DIR --tracking-uri URI --experiment NAME

A launch from the folder that holds `unsent/` does the same before its jobs start.
"""

import argparse
import os
import sys
from pathlib import Path

import bnlab  # noqa: F401  (telemetry off before mlflow is used)
from bnlab import tracking
from bnlab.config import TrackingConfig
from bnlab.config.errors import ConfigError
from bnlab.config.store_uri import check_tracking_uri
from bnlab.tracking import spool


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Record runs kept offline in a spool folder.")
    parser.add_argument("folder", type=Path, nargs="?", default=Path("unsent"))
    parser.add_argument(
        "--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    )
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(f"error: {args.folder}: no such folder", file=sys.stderr)
        return 2
    try:
        check_tracking_uri(args.tracking_uri, "--tracking-uri")
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    experiments = sorted({saved.journal.experiment for saved in spool.pending(args.folder)})
    recorded = 0
    try:
        for experiment in experiments:
            store = tracking.open_store(
                TrackingConfig(uri=args.tracking_uri, experiment=experiment)
            )
            recorded += store.spool.record_pending(args.folder)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    left = len(spool.pending(args.folder))
    print(f"Recorded {recorded} run(s); {left} left in {args.folder} (kept for another store)")
    return 0
