"""The claims page: every claim of the article with its verdict over seeds, from the store.

Writes `index.html` (each claim in the article's words, its verdict, k of n, the rule
behind it and its figure, and what BN does inside the network) and `claims.json` (the
same, machine-readable) into one folder, each file whole or not at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bnlab import metrics
from bnlab.atomic import write_atomic
from bnlab.claims import figures as claim_figures
from bnlab.claims import rules as claims
from bnlab.claims import suite as claim_suite
from bnlab.report import page as report_page
from bnlab.report.build import check_store
from bnlab.tracking import queries

INTERNALS_KEYS = [metrics.PREACT_P15, metrics.PREACT_P50, metrics.PREACT_P85]


def build(
    uri: str,
    experiment: str,
    out: Path,
    overrides: list[str],
    names: list[str],
    expanded: list[claim_suite.Study] | None = None,
) -> Path:
    """Judges each claim on the experiment's runs and writes the page; returns its path.
    `expanded`: studies the caller composed already with the same overrides (the suite
    just ran them), which are not composed again."""
    check_store(uri)
    runs, curves, timings = claim_suite.load(uri, experiment)
    known = {study.name: study for study in expanded or []}
    results = [
        claim_suite.judge(
            known.get(name) or claim_suite.expand(name, overrides), runs, curves, timings
        )
        for name in names
    ]
    out.mkdir(parents=True, exist_ok=True)
    entries, sentences, images = [], [], {}
    for result in results:
        entry = _entry(result)
        entries.append(entry)
        sentences.append(_sentence(entry))
        finding = result.finding
        if finding is not None and finding.bars is not None and len(finding.bars):
            figure = claim_figures.plot_bars(finding.bars, entry["says"], finding.measure)
            images[f"{entry['says']}: {entry['verdict']}"] = report_page.figure_png(figure)
        if finding is not None and finding.curve_keys:
            over = _over_training(uri, finding, entry["says"])
            if over is not None:
                images[f"{entry['says']}: over training"] = over
    inside = _internals_figure(uri, results)
    if inside is not None:
        images[
            "Inside the network: BN against plain where the plain network learns and where "
            "it stays at chance"
        ] = inside
    table = pd.DataFrame(
        [
            {
                "claim (the article's words)": entry["says"],
                "verdict": entry["verdict"],
                "k of n": _count(entry),
                "measured": _measured(entry["details"]),
                "rule": entry["rule"],
            }
            for entry in entries
        ]
    )
    write_atomic(out / "claims.json", json.dumps(entries, indent=2))
    write_atomic(
        out / "index.html",
        report_page.render_html(
            f"The article's claims, tested over seeds — {experiment}",
            sentences,
            images,
            {"Every claim": table},
            [
                f"Verdicts: {claims.SUPPORTED} when at least two thirds of the comparisons "
                f"agree, {claims.NOT_SUPPORTED} when at most one third do, {claims.MIXED} in "
                f"between; {claims.WITHIN_NOISE} when no more comparisons are beyond their "
                f"noise floor than within it; {claims.NOT_RUN} until every run of the "
                "claim's study is recorded.",
                "A run learned when its best validation accuracy reached "
                f"{claims.LEARNED}. Each rule states its noise floor: comparisons of "
                "accuracies count per cell, seeds paired, only when the 95 % t-interval of "
                "the paired difference over seeds lies beyond zero.",
                claim_figures.BARS_CAPTION,
            ],
            text_tables=("Every claim",),
        ),
    )
    return out / "index.html"


def _entry(result: claim_suite.Result) -> dict:
    study, finding = result.study, result.finding
    claim = study.claim.claim
    entry = {
        "id": claim.id,
        "says": claim.says,
        "study": f"conf/experiment/claims/{study.name}.yaml",
        "command": study.command,
        "runs": len(study.cells),
        "recorded": result.recorded,
        "timed": result.timed,
    }
    if finding is None:
        return entry | {
            "verdict": claims.NOT_RUN,
            "k": 0,
            "n": 0,
            "within_noise": 0,
            "rule": claims.RULE_TEXTS[claim.rule],
            "details": {},
        }
    return entry | {
        "verdict": finding.verdict,
        "k": finding.agree,
        "n": finding.compared,
        "within_noise": finding.within_noise,
        "rule": finding.rule,
        "details": finding.details,
    }


def _measured(details: dict) -> str:
    """A finding's figures in a line: `step time without over with 0.982; ...`."""

    def shown(value) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        if isinstance(value, list):
            return "[" + ", ".join(shown(item) for item in value) + "]"
        if isinstance(value, dict):
            return ", ".join(f"{key} {shown(item)}" for key, item in value.items())
        return "-" if value is None else str(value)

    return "; ".join(f"{key.replace('_', ' ')} {shown(value)}" for key, value in details.items())


def _count(entry: dict) -> str:
    """`4 of 6`, with the comparisons within noise when there are any: `1 of 1, 3 within
    noise`."""
    shown = f"{entry['k']} of {entry['n']}" if entry["n"] else "0 counted"
    if entry.get("within_noise"):
        shown += f", {entry['within_noise']} within noise"
    return shown if entry["n"] or entry.get("within_noise") else "-"


def _sentence(entry: dict) -> str:
    if entry["verdict"] == claims.NOT_RUN:
        timing = "" if entry["timed"] else ", its side-by-side step timing not"
        return (
            f"{entry['says']}: not run ({entry['recorded']} of {entry['runs']} runs "
            f"recorded{timing}); run it with: {entry['command']}"
        )
    return f"{entry['says']}: {entry['verdict']} ({_count(entry)})."


def _over_training(uri: str, finding: claims.Finding, title: str) -> bytes | None:
    """The claim's measures over training, per side (`Finding.curve_keys`), from the store."""
    points = queries.histories(uri, list(finding.curve_sides), list(finding.curve_keys))
    if points.empty:
        return None
    figure = claim_figures.plot_curves(points, finding.curve_sides, finding.curve_keys, title)
    return report_page.figure_png(figure)


def _internals_figure(uri: str, results: list[claim_suite.Result]) -> bytes | None:
    """Seed 0 at one cell where the plain network learns and one where it stays at chance."""
    frames = [r.runs for r in results if r.finding is not None and "activation" in r.runs]
    if not frames:
        return None
    runs = pd.concat(frames).drop_duplicates("run_id")
    runs = runs[(runs["seed"] == 0) & runs["model.bn_position"].eq("before")]
    runs = runs[~runs["model.bn_bias"].astype(bool) & (runs["model.init_scale"] == 1.0)]
    plain = runs[~runs["bn"].astype(bool)]
    learned = plain[plain[metrics.BEST_VAL_ACCURACY] >= claims.LEARNED]
    at_chance = plain[plain[metrics.BEST_VAL_ACCURACY] <= 0.2]
    cells = []
    for chosen, what in ((learned, "plain learns"), (at_chance, "plain stays at chance")):
        for _, row in chosen.sort_values("lr").iterrows():
            pair = runs[(runs["activation"] == row["activation"]) & (runs["lr"] == row["lr"])]
            if pair["bn"].nunique() == 2:
                cells.append((pair, f"{row['activation']} lr={row['lr']:g}", what))
                break
    if not cells:
        return None
    ids = [run_id for pair, _, _ in cells for run_id in pair["run_id"]]
    points = queries.histories(uri, ids, INTERNALS_KEYS)
    norms = queries.grad_norm_keys(uri, ids)
    if norms:
        points = pd.concat([points, queries.histories(uri, ids, norms)])
    if points.empty:
        return None
    named = []
    for pair, name, _ in cells:
        sides = pair.set_index("run_id")["bn"].map({True: "BN", False: "no BN"})
        mine = points[points["run_id"].isin(sides.index)].copy()
        mine["cell"], mine["side"] = name, mine["run_id"].map(sides)
        named.append(mine)
    figure = claim_figures.plot_internals(
        pd.concat(named), [(name, what) for _, name, what in cells]
    )
    return report_page.figure_png(figure)
