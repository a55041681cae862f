"""The report stage and the study: from the tracking store to files, and back as artifacts."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bnlab import metrics, tracking
from bnlab.atomic import write_atomic
from bnlab.config import ConfigError
from bnlab.config.store_uri import check_tracking_uri, sqlite_path
from bnlab.report import comparison as comparisons
from bnlab.report import facts as cell_facts
from bnlab.report import figures as report
from bnlab.report import page, selection, statistics, tables
from bnlab.sweep import search
from bnlab.tracking import links, queries
from bnlab.values import shown_value

log = logging.getLogger(__name__)


class ReportError(RuntimeError):
    """The report cannot be made; the message is one line that says why."""


@dataclass
class ReportFiles:
    folder: Path
    run_id: str | None
    # Printed by the commands: how to open the experiment's runs in the MLflow UI.
    browse: list[str] = field(default_factory=list)


def check_store(uri: str) -> None:
    """Refuses a SQLite URI whose file does not exist, before anything opens it."""
    # Opening a SQLite URI creates the file: a mistyped path must not leave an empty store.
    database = sqlite_path(uri)
    if database is not None and not database.is_file():
        raise ReportError(f"no tracking store at {uri} (run a sweep first, or pass --tracking-uri)")


@dataclass
class Section:
    """Part of the report page: sentences, figures (PNG bytes), tables and notes."""

    sentences: list[str] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def build_report(
    uri: str,
    experiment: str,
    out: Path,
    parent_run_id: str | None = None,
    target: float = metrics.TARGET_ACCURACY,
    log_artifacts: bool = True,
    study: str | None = None,
    optuna_storage: str = "sqlite:///optuna.db",
    ui_url: str | None = None,
) -> ReportFiles:
    """Reads the runs from the store and writes the figures, tables, claims and page.

    Args:
        uri: Tracking URI.
        experiment: Experiment name.
        out: Folder for the report files (created).
        parent_run_id: Only the jobs of this sweep, and log the report to it.
        target: Validation accuracy whose first crossing is compared.
        log_artifacts: Also log the folder to MLflow.
        study: Also report this Optuna study (its trials are left out of the grid).
        optuna_storage: Where that study is stored.
        ui_url: Where the MLflow UI serves this store, for the page's links.
    """
    if not 0 < target < 1:
        raise ReportError(f"--target must be in (0, 1), got {target}")
    try:
        check_tracking_uri(uri, "--tracking-uri")
        if study is not None:
            check_tracking_uri(optuna_storage, "--optuna-storage", mlflow_store=False)
    except ConfigError as error:
        raise ReportError(str(error)) from error
    check_store(uri)
    try:
        runs, curves = queries.load_runs(uri, experiment, parent_run_id)
    except queries.StoreQueryError as error:
        raise ReportError(str(error)) from error
    grid_runs = runs[runs["study"].isna()] if not runs.empty else runs
    if grid_runs.empty and study is None:
        scope = f"sweep {parent_run_id}" if parent_run_id else f"experiment '{experiment}'"
        raise ReportError(f"no training runs in {scope}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        # A temporary file's name: one left by a kill here is removed with the others.
        probe = out / f".writable.{os.getpid()}.partial"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ReportError(f"--out: cannot write the report to {out} ({error.strerror})") from error
    # What a report killed mid-write left: its temporary files, never a report file.
    for stale in out.rglob(".*.partial"):
        stale.unlink(missing_ok=True)
    experiment_id = queries.experiment_id(uri, experiment)
    sections = []
    footer = page.Footer(runs_table=links.runs_table(uri, experiment_id, ui_url))
    # What the runs were recorded to compare (compare.* in their config).
    comparison = comparisons.from_runs(runs)
    if not grid_runs.empty:
        section, compared = _grid_section(grid_runs, curves, experiment, target, out, comparison)
        sections.append(section)
        footer = _footer(uri, compared, footer, ui_url, comparison)
    if study is not None:
        sections.append(_study_section(runs, study, optuna_storage, out, comparison))
    combined = Section()
    for section in sections:
        combined.sentences += section.sentences
        combined.images |= section.images
        combined.tables |= section.tables
        combined.notes += section.notes
    # The page last: once it is replaced, every file it describes is complete.
    write_atomic(
        out / "index.html",
        page.render_html(
            f"{comparison.title} report — {experiment}",
            combined.sentences,
            combined.images,
            combined.tables,
            combined.notes,
            footer,
        ),
    )
    run_id = tracking.log_report(uri, experiment, out, parent_run_id) if log_artifacts else None
    return ReportFiles(out, run_id, links.browse_lines(uri, experiment_id, ui_url))


def _footer(
    uri: str,
    runs: pd.DataFrame,
    footer: page.Footer,
    ui_url: str | None,
    comparison: comparisons.Comparison,
) -> page.Footer:
    """The commits and sweeps behind the compared runs, and a link to each."""

    def present(column: str) -> list[str]:
        if column not in runs:
            return []
        return sorted({str(value) for value in runs[column].dropna()})

    ordered = runs.sort_values([*comparison.keys, "seed"])
    footer.commits = present("commit")
    footer.sweeps = present("sweep_id")
    footer.runs = [
        (
            str(run["name"]),
            links.run_page(uri, str(run["experiment_id"]), str(run["run_id"]), ui_url),
        )
        for _, run in ordered.iterrows()
    ]
    return footer


def _grid_section(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    experiment: str,
    target: float,
    out: Path,
    comparison: comparisons.Comparison,
) -> tuple[Section, pd.DataFrame]:
    """The comparison (the variant's sides) per cell, and its runs."""
    chosen = selection.select(runs, curves, comparison)
    seeds = statistics.per_seed(chosen, target, comparison)
    variants = statistics.per_variant(seeds, comparison)
    table = statistics.summary_table(
        variants, statistics.paired_differences(seeds, comparison), comparison
    )
    best = statistics.best_learning_rates(variants, comparison)
    # Several sides are shown by name in the best-of table (`true layer` reads LayerNorm).
    best_shown = (
        best.assign(**{comparison.variant: best[comparison.variant].map(comparison.label)})
        if comparison.several
        else best
    )
    chance = cell_facts.chance_of(runs)
    facts = cell_facts.cell_facts(seeds, target, chance, comparison)
    row, column, variant = comparison.keys
    sides = comparison.sides(variants[variant].unique() if len(variants) else [])
    notes = list(chosen.notes)
    implementation = selection.implementation_note(chosen.runs, comparison)
    if implementation:
        notes.append(implementation)
    activations = sorted(chosen.runs[row].unique())
    lrs = sorted(chosen.runs[column].unique())
    present = set(zip(variants[row], variants[column], variants[variant], strict=True))
    missing = [
        f"{a}, {column}={shown_value(lr)}, {comparison.label(side)}"
        for a in activations
        for lr in lrs
        for side in sides
        if (a, lr, side) not in present
    ]
    if missing:
        notes.append(f"missing from the grid: {'; '.join(missing)}")
    counts = variants["seeds"]
    if comparison.several:
        paired = (
            f"differences from {comparison.label(comparison.reference(sides))} are paired by seed"
        )
    else:
        paired = f"{comparison.labels[0]} − {comparison.labels[1]} is paired by seed"
    notes.append(
        f"{len(chosen.runs)} runs compared, {_seed_range(counts)} seed(s) per setting; "
        + (report.BAND_CAPTION if counts.max() > 1 else report.ONE_SEED_CAPTION)
        + f". Intervals are 95 % Student-t intervals of the mean over seeds; {paired}."
    )
    images = {
        f"Validation accuracy against training step, {comparison.title}": (
            page.figure_png(
                report.plot_comparison_grid(
                    chosen.curves,
                    activations,
                    lrs,
                    title=f"{comparison.title} — {experiment}",
                    comparison=comparison,
                    chance=chance,
                )
            )
        ),
        "Learning-rate sensitivity": page.figure_png(
            report.plot_lr_sensitivity(variants, comparison, chance)
        ),
    }
    for name, png in zip(("comparison.png", "lr_sensitivity.png"), images.values(), strict=True):
        write_atomic(out / name, png)
    write_atomic(out / "per_seed.csv", seeds.to_csv(index=False))
    write_atomic(out / "summary.csv", table.to_csv(index=False))
    write_atomic(out / "best_lr.csv", best_shown.to_csv(index=False))
    write_atomic(
        out / "summary.md",
        f"# Summary (target validation accuracy {target})\n\n"
        + tables.markdown_table(statistics.display_table(table, comparison))
        + f"\n## {statistics.OWN_BEST_LR}\n\n"
        + tables.markdown_table(best_shown),
    )
    write_atomic(out / "claims.json", json.dumps(facts, indent=2))
    section = Section(
        cell_facts.plain_language(facts, best, target, comparison),
        images,
        {
            f"Per setting: mean ± 95 % interval over seeds (steps to {target:.0%} "
            "validation accuracy: mean where every seed got there)": statistics.display_table(
                table, comparison
            ),
            statistics.OWN_BEST_LR: best_shown,
        },
        notes,
    )
    return section, chosen.runs


def _seed_range(counts: pd.Series) -> str:
    low, high = int(counts.min()), int(counts.max())
    return str(low) if low == high else f"{low} to {high}"


def _study_section(
    runs: pd.DataFrame,
    study: str,
    storage: str,
    out: Path,
    comparison: comparisons.Comparison,
) -> Section:
    """An Optuna study: history, importances, and best accuracy against the cell's column
    key, by side."""
    try:
        trials = search.load_trials(storage, study)
    except ConfigError as error:
        raise ReportError(str(error)) from error
    importances = search.param_importances(storage, study)
    trial_runs = runs[runs["study"] == study] if not runs.empty else runs
    images = {
        f"Study {study}: optimization history": page.figure_png(
            report.plot_optimization_history(trials, study)
        ),
        f"Study {study}: parameter importances": page.figure_png(
            report.plot_param_importances(importances, study)
        ),
        f"Study {study}: best validation accuracy against learning rate": page.figure_png(
            report.plot_search_lr(trial_runs, study, comparison, cell_facts.chance_of(runs))
        ),
    }
    folder = out / f"study_{study}"
    folder.mkdir(parents=True, exist_ok=True)
    for name, png in zip(
        ("history.png", "importances.png", "lr_vs_accuracy.png"), images.values(), strict=True
    ):
        write_atomic(folder / name, png)
    write_atomic(folder / "trials.csv", trials.to_csv(index=False))
    states = trials["state"].value_counts().to_dict() if not trials.empty else {}
    sentences = [
        f"Study {study}: {len(trials)} trials ("
        + ", ".join(f"{count} {state.lower()}" for state, count in states.items())
        + ")."
    ]
    complete = trials[trials["state"] == "COMPLETE"] if not trials.empty else trials
    if not complete.empty:
        best = complete.loc[complete["value"].idxmax()]
        params = ", ".join(
            f"{c.removeprefix('params_')}={best[c]}"
            for c in trials.columns
            if c.startswith("params_")
        )
        sentences.append(f"Best trial {int(best['number'])}: {best['value']:.4f} with {params}.")
    notes = [] if importances else [f"study {study}: too few complete trials for importances"]
    return Section(sentences, images, {f"Study {study}: trials": trials}, notes)
