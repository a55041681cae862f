"""The report stage and the study: from the tracking store to files, and back as artifacts."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bnlab import analysis, report, tracking

log = logging.getLogger(__name__)

TRAIN_SCRIPT = Path(__file__).resolve().parents[1] / "train.py"
STUDY_OVERRIDES = ["+experiment=blog"]


class ReportError(RuntimeError):
    """The report cannot be made; the message is one line that says why."""


@dataclass
class ReportFiles:
    folder: Path
    run_id: str | None


def _check_store(uri: str) -> None:
    # Opening a SQLite URI creates the file: a mistyped path must not leave an empty store.
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise ReportError(f"no tracking store at {uri} (run a sweep first, or pass --tracking-uri)")


def build_report(
    uri: str,
    experiment: str,
    out: Path,
    parent_run_id: str | None = None,
    target: float = 0.9,
    log_artifacts: bool = True,
) -> ReportFiles:
    """Reads the runs from the store and writes the figures, tables, claims and page.

    Args:
        uri: Tracking URI.
        experiment: Experiment name.
        out: Folder for the report files (created).
        parent_run_id: Only the jobs of this sweep, and log the report to it.
        target: Validation accuracy whose first crossing is compared.
        log_artifacts: Also log the folder to MLflow.
    """
    if not 0 < target < 1:
        raise ReportError(f"--target must be in (0, 1), got {target}")
    _check_store(uri)
    try:
        runs, curves = tracking.load_runs(uri, experiment, parent_run_id)
    except tracking.StoreQueryError as error:
        raise ReportError(str(error)) from error
    if runs.empty:
        scope = f"sweep {parent_run_id}" if parent_run_id else f"experiment '{experiment}'"
        raise ReportError(f"no training runs in {scope}")
    selection = analysis.select(runs, curves)
    variants = analysis.per_variant(selection, target)
    table = analysis.summary_table(variants)
    best = analysis.best_learning_rates(variants)
    facts = analysis.claims(variants, target)
    sentences = analysis.plain_language(facts, best, target)
    notes = list(selection.notes)
    activations = sorted(selection.runs["activation"].unique())
    lrs = sorted(selection.runs["lr"].unique())
    present = set(zip(variants["activation"], variants["lr"], variants["bn"], strict=True))
    missing = [
        f"{a}, lr={lr:g}, {'BN' if bn else 'no BN'}"
        for a in activations
        for lr in lrs
        for bn in (True, False)
        if (a, lr, bn) not in present
    ]
    if missing:
        notes.append(f"missing from the grid: {'; '.join(missing)}")
    seeds = int(selection.runs.groupby([*analysis.CELL, "bn"]).size().max())
    notes.append(
        f"{len(selection.runs)} runs compared, up to {seeds} seed(s) per setting; "
        f"{report.BAND_CAPTION}."
    )

    out.mkdir(parents=True, exist_ok=True)
    images = {
        "Validation accuracy against training step, BN vs no BN": report.figure_png(
            report.plot_comparison_grid(
                selection.curves, activations, lrs, title=f"BN vs no BN — {experiment}"
            )
        ),
        "Learning-rate sensitivity": report.figure_png(report.plot_lr_sensitivity(variants)),
    }
    for name, png in zip(("comparison.png", "lr_sensitivity.png"), images.values(), strict=True):
        (out / name).write_bytes(png)
    table.to_csv(out / "summary.csv", index=False)
    best.to_csv(out / "best_lr.csv", index=False)
    (out / "summary.md").write_text(
        f"# Summary (target validation accuracy {target})\n\n"
        + report.markdown_table(table)
        + "\n## Each variant at its own best learning rate\n\n"
        + report.markdown_table(best)
    )
    (out / "claims.json").write_text(json.dumps(facts, indent=2))
    (out / "index.html").write_text(
        report.render_html(
            f"Batch Normalization report — {experiment}",
            sentences,
            images,
            {
                f"Per setting (steps to {target:.0%} validation accuracy; "
                "diff = BN minus no BN)": table,
                "Each variant at its own best learning rate": best,
            },
            notes,
        )
    )
    run_id = tracking.log_report(uri, experiment, out, parent_run_id) if log_artifacts else None
    return ReportFiles(out, run_id)


def run_study(overrides: list[str], out: Path | None = None, target: float = 0.9) -> int:
    """Runs the saved blog study as one sweep, then the report on that sweep's parent.

    Re-running resumes the sweep (finished jobs are skipped) and refreshes the report.

    Returns:
        The exit status: the sweep's, or the report's if the sweep succeeded.
    """
    sweep_dir = Path("multirun") / "study" / _timestamp()
    command = [
        sys.executable,
        str(TRAIN_SCRIPT),
        "-m",
        *STUDY_OVERRIDES,
        *overrides,
        f"hydra.sweep.dir={sweep_dir}",
    ]
    print("$ " + " ".join(command[1:]), flush=True)
    status = subprocess.run(command).returncode
    record_path = sweep_dir / "sweep.json"
    if not record_path.is_file():
        return status or 1
    record = json.loads(record_path.read_text())
    if not record.get("parent_run_id"):
        print(
            "error: the study ran without tracking, so there is nothing to report", file=sys.stderr
        )
        return status or 2
    folder = out or Path("reports") / record["experiment"]
    files = build_report(
        record["tracking_uri"], record["experiment"], folder, record["parent_run_id"], target
    )
    print(f"Report: {(files.folder / 'index.html').resolve()}")
    print(f"Browse the runs: mlflow ui --backend-store-uri {record['tracking_uri']}")
    return status


def _timestamp() -> str:
    import datetime

    return datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
