"""The claims suite: each claim's saved study, its runs found in the store, its verdict.

A claim is data: a saved study in `conf/experiment/claims/` whose `claim` node names the
article's words and the rule (`bnlab.claims`) that counts it. The suite composes each
study, expands its grid as a sweep would, and finds each grid point's run in the store
by its identity, so a run is counted wherever it was trained (the main job's runs
serve every claim whose grid holds them). A claim whose runs are not all recorded is
*not run*, with the command that runs it.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bnlab import claims, metrics
from bnlab.config import CONF_DIR, Config, register_configs
from bnlab.grid import grid_jobs, job_configs
from bnlab.identity import identity_hash
from bnlab.redaction import redact_text
from bnlab.tracking import queries

STUDIES = CONF_DIR / "experiment" / "claims"
# The values a rule reads, typed from each grid point's config.
SETTINGS = {
    "bn": lambda c: c.model.bn,
    "lr": lambda c: c.optimizer.learning_rate,
    "activation": lambda c: c.model.activation,
    "seed": lambda c: c.train.seed,
    "model.init_scale": lambda c: getattr(c.model, "init_scale", 1.0),
    "model.bn_bias": lambda c: getattr(c.model, "bn_bias", False),
    "model.bn_position": lambda c: getattr(c.model, "bn_position", "before"),
    "model.bn_momentum": lambda c: getattr(c.model, "bn_momentum", None),
}
# The final metrics a rule reads from each run.
READ = (
    metrics.BEST_VAL_ACCURACY,
    metrics.VAL_ACCURACY,
    metrics.TRAIN_ACCURACY,
    metrics.TEST_ACCURACY,
    metrics.STEPS_PER_SECOND,
    metrics.PARAMETERS,
    metrics.VAL_ACCURACY_BATCH_STATS,
    metrics.VAL_ACCURACY_MOVING_STATS,
)


@dataclass
class Study:
    """One claim's saved study, expanded: its claim, command and each grid point."""

    name: str
    claim: Config
    overrides: list[str]
    cells: pd.DataFrame  # one row per grid point: its settings and identity

    @property
    def command(self) -> str:
        extra = " ".join(self.overrides)
        return f"python src/train.py -m +experiment=claims/{self.name} {extra}".strip()


def names() -> list[str]:
    """Every claim's study, in the suite's order (a study whose runs others reuse first)."""
    found = sorted(path.stem for path in STUDIES.glob("*.yaml"))
    orders = {name: OmegaConf.load(STUDIES / f"{name}.yaml").claim.order for name in found}
    return sorted(found, key=lambda name: (orders[name], name))


def expand(name: str, overrides: list[str]) -> Study:
    """Composes a claim's study with `overrides` and lists its grid points' identities."""
    register_configs()
    arguments = [f"+experiment=claims/{name}", *overrides]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        config = compose("config", arguments, return_hydra_config=True)
        jobs = grid_jobs(config)
        configs = list(job_configs("config", jobs))
    rows = [
        {**{key: read(job) for key, read in SETTINGS.items()}, "identity": identity_hash(job)}
        for job in configs
    ]
    return Study(name, configs[0], overrides, pd.DataFrame(rows))


@dataclass
class Result:
    study: Study
    finding: claims.Finding | None  # None: not all its runs are recorded
    recorded: int
    runs: pd.DataFrame


def judge(study: Study, runs: pd.DataFrame, curves: pd.DataFrame) -> Result:
    """The study's verdict from the experiment's recorded runs (`queries.load_runs`)."""
    complete = runs[runs["outcome"].isin(metrics.COMPLETE_OUTCOMES)] if len(runs) else runs
    newest = (
        complete.sort_values("start_time", ascending=False).drop_duplicates("identity")
        if len(complete)
        else complete
    )
    columns = ["run_id", "identity", *[key for key in READ if key in newest]]
    found = study.cells.merge(newest[columns], on="identity", how="left")
    recorded = int(found["run_id"].notna().sum())
    if recorded < len(found):
        return Result(study, None, recorded, found)
    for key in READ:
        found[key] = pd.to_numeric(found[key], errors="coerce") if key in found else float("nan")
    rule = claims.RULES[study.claim.claim.rule]
    return Result(
        study, rule(found, curves[curves["run_id"].isin(found["run_id"])]), recorded, found
    )


def run(names_to_run: list[str], overrides: list[str]) -> int:
    """Runs each claim's study as one sweep (resuming: recorded runs are reused)."""
    status = 0
    for index, name in enumerate(names_to_run, start=1):
        command = [
            sys.executable,
            str(Path(__file__).resolve().parents[1] / "train.py"),
            "-m",
            f"+experiment=claims/{name}",
            *overrides,
        ]
        print(f"Claim {index}/{len(names_to_run)}: {name}", flush=True)
        print("$ " + redact_text(" ".join(command[1:])), flush=True)
        status = subprocess.run(command).returncode or status
    return status


def load(uri: str, experiment: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    try:
        return queries.load_runs(uri, experiment)
    except queries.StoreQueryError:
        empty = pd.DataFrame(columns=["run_id", "identity", "outcome", "start_time"])
        return empty, pd.DataFrame(columns=["run_id", "step", "value"])
