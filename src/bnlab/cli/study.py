"""`bnlab study`: a saved study (by default the main job) as one sweep, then its report;
or the claims suite, then the claims page."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bnlab import metrics
from bnlab.claims import page as claims_report
from bnlab.claims import suite as claim_suite
from bnlab.cli.train import train_here
from bnlab.config import CONFIG_PATH
from bnlab.config.errors import EXIT_INTERRUPTED, USER_ERRORS, exit_on_user_error
from bnlab.config.registry import new_sweep_id
from bnlab.redaction import redact_text
from bnlab.report.build import build_report
from bnlab.sweep.command import TRAIN_COMMAND
from bnlab.tracking import queries

# The main job: the article's grid, three seeds per cell (conf/experiment/study.yaml).
STUDY_OVERRIDES = ["+experiment=study"]


def _study_tracking(overrides: list[str]) -> tuple[str, str, bool, str | None]:
    """The tracking URI, experiment, switch and UI address of a study with these overrides."""
    from hydra import compose, initialize_config_module

    from bnlab.config import register_configs
    from bnlab.config.overrides import parse

    register_configs()
    tracking_overrides = [
        override.input_line
        for override in parse(overrides)
        if override.get_key_element().lstrip("+~").startswith(("tracking", "experiment"))
    ]
    with initialize_config_module(CONFIG_PATH.removeprefix("pkg://"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=tracking_overrides)
    tracking = cfg.tracking
    return tracking.uri, tracking.experiment, tracking.enabled, tracking.ui_url


def run_study(
    overrides: list[str], out: Path | None = None, target: float = metrics.TARGET_ACCURACY
) -> int:
    """Runs a saved study (by default the blog's grid x 3 seeds) as one sweep, then its report.

    Re-running resumes the sweep (complete jobs are skipped) and refreshes the
    report. The sweep's parent run is found in the store by the sweep id this
    function hands the launch.

    Returns:
        The exit status: the sweep's, or the report's if the sweep succeeded.
    """
    # A saved study on the command line (+experiment=digits) replaces the main job's.
    if not any(override.lstrip("+").startswith("experiment=") for override in overrides):
        overrides = [*STUDY_OVERRIDES, *overrides]
    uri, experiment, enabled, ui_url = _study_tracking(overrides)
    sweep_id = new_sweep_id()
    command = [
        *TRAIN_COMMAND,
        "-m",
        *overrides,
        f"tracking.sweep_id={sweep_id}",
    ]
    print("$ " + redact_text(" ".join(command[1:])), flush=True)
    status = subprocess.run(command).returncode
    if not enabled:
        print(
            "error: the study ran without tracking, so there is nothing to report", file=sys.stderr
        )
        return status or 2
    parent_run_id = queries.find_sweep_parent(uri, experiment, sweep_id)
    if parent_run_id is None:
        print(
            f"error: sweep {sweep_id} left no parent run in {redact_text(uri)} "
            f"(experiment '{experiment}'), so there is nothing to report",
            file=sys.stderr,
        )
        return status or 1
    folder = out or Path("reports") / experiment
    files = build_report(uri, experiment, folder, parent_run_id, target, ui_url=ui_url)
    print(f"Report: {(files.folder / 'index.html').resolve()}")
    print("\n".join(files.browse))
    return status


def run_claims(names: list[str] | None, overrides: list[str]) -> int:
    """Runs the claims suite (every claim's study, or those named), then the claims page.

    Each study is one sweep into the main job's experiment, so runs whose settings match
    are reused, and a second launch resumes. Bad input fails before any study runs.

    Returns:
        The exit status: 2 on bad input, else the first failed sweep's, else 0.
    """
    every = claim_suite.names()
    chosen = names or every
    unknown = [name for name in chosen if name not in every]
    if unknown:
        print(
            f"error: --claims: no claim named {', '.join(unknown)} (known: {', '.join(every)})",
            file=sys.stderr,
        )
        return 2
    try:
        # Every grid point, checked before any run.
        studies = [claim_suite.expand(name, overrides) for name in chosen]
    except USER_ERRORS as error:
        exit_on_user_error(error)
    uri, experiment, enabled, _ = _study_tracking(overrides)
    status = claim_suite.run(studies, (uri, experiment) if enabled else None, train_here)
    if status == EXIT_INTERRUPTED:
        return status  # stopped: the page waits for the next launch
    if not enabled:
        print(
            "error: the suite ran without tracking, so there is nothing to judge", file=sys.stderr
        )
        return status or 2
    page = claims_report.build(
        uri, experiment, Path("reports") / experiment / "claims", overrides, every, studies
    )
    print(f"Claims: {page.resolve()}")
    return status


STUDY_HELP = """usage: bnlab study [--user-dir DIR] [--claims[=NAME,...]] [OVERRIDE ...]

Runs a saved study (default: the main job, +experiment=study) as one sweep, then writes
its report; a second launch resumes it. With --claims, runs the claims suite (every
claim, or those named) and writes the claims page. Overrides are those of bnlab train."""


def main(argv: list[str]) -> int:
    """`bnlab study`: parses `--claims` and `--help`; the rest are Hydra overrides."""
    if argv and argv[0] in ("-h", "--help"):
        print(STUDY_HELP)
        return 0
    if argv and argv[0].startswith("--claims"):
        flag, equals, names = argv[0].partition("=")
        if flag != "--claims":
            print(f"error: bnlab study: unknown flag {flag}", file=sys.stderr)
            return 2
        chosen = [name for name in names.split(",") if name]
        if equals and not chosen:
            print("error: --claims=: names no claim (drop '=' to run them all)", file=sys.stderr)
            return 2
        return run_claims(chosen, argv[1:])
    return run_study(argv)
