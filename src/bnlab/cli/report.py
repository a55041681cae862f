"""`bnlab report`: the comparison report (or the claims page) from the tracking store.

bnlab report
bnlab report --experiment NAME --tracking-uri URI --out DIR
bnlab report --claims [OVERRIDE ...]   # the claims page (overrides as for the suite)
"""

import argparse
import os
import sys
from pathlib import Path

from bnlab import metrics, names
from bnlab.config import TrackingConfig
from bnlab.report.build import ReportError, build_report


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description="Report the compared sides (compare.*) from the tracking store."
    )
    # The defaults are the tracking config's own (conf/tracking/sqlite.yaml's schema).
    defaults = TrackingConfig()
    parser.add_argument("--experiment", default=defaults.experiment)
    parser.add_argument(
        "--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", defaults.uri)
    )
    parser.add_argument("--out", type=Path, help="folder (default reports/<experiment>/)")
    parser.add_argument("--parent-run", help="only the jobs of this sweep's parent run")
    parser.add_argument(
        "--target",
        type=float,
        default=metrics.TARGET_ACCURACY,
        help="validation accuracy whose first crossing is compared",
    )
    parser.add_argument("--study", help="also report this Optuna study (e.g. lr_bn)")
    parser.add_argument(
        "--optuna-storage",
        default="sqlite:///optuna.db",
        help="storage of the study (default sqlite:///optuna.db)",
    )
    parser.add_argument("--no-log", action="store_true", help="do not log to MLflow")
    parser.add_argument(
        "--ui-url", help="where the MLflow UI serves this store (default http://127.0.0.1:5000)"
    )
    parser.add_argument(
        "--claims",
        nargs="*",
        metavar="OVERRIDE",
        help="write the claims page instead (the suite's Hydra overrides, if any)",
    )
    args = parser.parse_args(argv)
    refused = names.problem(args.experiment)
    if refused:
        print(f"error: --experiment: {refused}", file=sys.stderr)
        return 2
    if args.claims is not None:
        return claims_page(args)
    try:
        files = build_report(
            args.tracking_uri,
            args.experiment,
            args.out or Path("reports") / args.experiment,
            args.parent_run,
            args.target,
            log_artifacts=not args.no_log,
            study=args.study,
            optuna_storage=args.optuna_storage,
            ui_url=args.ui_url,
        )
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Report: {(files.folder / 'index.html').resolve()}")
    if files.run_id:
        print(f"Logged to MLflow run {files.run_id}")
    print("\n".join(files.browse))
    return 0


def claims_page(args: argparse.Namespace) -> int:
    from bnlab.claims import page as claims_report
    from bnlab.claims import suite as claim_suite
    from bnlab.config.errors import USER_ERRORS

    out = args.out or Path("reports") / args.experiment / "claims"
    try:
        page = claims_report.build(
            args.tracking_uri, args.experiment, out, args.claims, claim_suite.names()
        )
    except (*USER_ERRORS, ReportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Claims: {page.resolve()}")
    return 0
