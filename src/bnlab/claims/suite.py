"""The claims suite: each claim's saved study, its runs found in the store, its verdict.

A claim is data: a saved study in `conf/experiment/claims/` whose `claim` node names the
article's words and the rule (`bnlab.claims.rules`) that counts it. The suite composes each
study, expands its grid as a sweep would, and finds each grid point's run in the store
by its identity, so a run is counted wherever it was trained (the main job's runs
serve every claim whose grid holds them). A claim whose runs are not all recorded is
*not run*, with the command that runs it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, read_write

from bnlab import metrics
from bnlab.claims import rules as claims
from bnlab.config import CONF_DIR, Config, register_configs
from bnlab.config.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED
from bnlab.config.keys import SHORTHANDS, trained_values
from bnlab.config.overrides import parse, split_swept
from bnlab.job.identity import identity_hash, required_metrics
from bnlab.redaction import redact_text
from bnlab.sweep.command import TRAIN_COMMAND
from bnlab.sweep.grid import grid_jobs, job_configs
from bnlab.tracking import queries
from bnlab.values import format_value

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
    "train.batch_size": lambda c: c.train.batch_size,
    "model.bn_noise": lambda c: getattr(c.model, "bn_noise", 0.0),
    "model.norm": lambda c: getattr(c.model, "norm", "batch"),
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
    *(f"{key}{metrics.MEAN_SUFFIX}" for key in metrics.MECHANISM_KEYS),
)


@dataclass
class TimingCell:
    """The variants of one setting of a study timed side by side (`claim.timing`)."""

    settings: dict  # the study's other swept values (SETTINGS), the timed key and seed aside
    variants: dict[str, Config]  # by the timed key's value, as a label
    identity: str  # the variants' identities with the burst length and rounds

    @property
    def title(self) -> str:
        return " ".join(f"{key}={value}" for key, value in self.settings.items())


@dataclass
class Study:
    """One claim's saved study, expanded: its claim, command and each grid point."""

    name: str
    claim: Config
    overrides: list[str]
    cells: pd.DataFrame  # one row per grid point: its settings and identity
    timing: list[TimingCell] = field(default_factory=list)
    grid: list[str] = field(default_factory=list)  # the identities its own sweep trains

    def trains_nothing(self, reusable: set[str], timed: set[str]) -> bool:
        """Whether its sweep and timing would only reuse what is recorded (`reusable`: the
        identities of runs its jobs would reuse, `required_metrics` held; `timed`: the
        finished timings')."""
        if self.claim.train.rerun or not self.grid:
            return False
        return set(self.grid) <= reusable and {cell.identity for cell in self.timing} <= timed

    @property
    def command(self) -> str:
        extra = " ".join(self.overrides)
        if self.timing:  # its sweep, then its side-by-side timing
            return f"python pipelines/study.py --claims={self.name} {extra}".strip()
        return f"bnlab train -m +experiment=claims/{self.name} {extra}".strip()


def names() -> list[str]:
    """Every claim's study, in the suite's order (a study whose runs others reuse first)."""
    found = sorted(path.stem for path in STUDIES.glob("*.yaml"))
    orders = {name: OmegaConf.load(STUDIES / f"{name}.yaml").claim.order for name in found}
    return sorted(found, key=lambda name: (orders[name], name))


def expand(name: str, overrides: list[str]) -> Study:
    """Composes a claim's study with `overrides` and lists its grid points' identities.

    A swept override (`seed=0,1,2,3,4`) replaces the study's own list for that key, as
    on `bnlab train -m`."""
    register_configs()
    fixed, swept = split_swept(overrides)
    arguments = [f"+experiment=claims/{name}", *fixed]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        config = compose("config", arguments, return_hydra_config=True)
        # Where the launch's multirun has them: after the study's own params, so they win.
        with read_write(config.hydra.overrides):
            config.hydra.overrides.task = [*config.hydra.overrides.task, *swept]
        jobs = grid_jobs(config)
        configs = list(job_configs("config", jobs))
    rows = [
        {**{key: read(job) for key, read in SETTINGS.items()}, "identity": identity_hash(job)}
        for job in configs
    ]
    own = pd.DataFrame(rows)
    # The rule also reads the runs of the studies it uses: their grid points join its own.
    used = [expand(other, overrides).cells for other in configs[0].claim.uses]
    cells = pd.concat([own, *used], ignore_index=True).drop_duplicates("identity")
    timing = _timing_cells(configs, own)
    return Study(name, configs[0], overrides, cells, timing, list(own["identity"]))


def _plain(value: object) -> object:
    """A frame's value as Python's own type (numpy's bool and float print differently)."""
    return value.item() if hasattr(value, "item") else value


def _timing_cells(configs: list[Config], cells: pd.DataFrame) -> list[TimingCell]:
    """The grid points that differ only in the timed key, first seed only, by setting."""
    timing = configs[0].claim.timing
    if not timing.key:
        return []
    key = SHORTHANDS.get(timing.key, timing.key)
    aside = {key, "train.seed", *[s for s, k in SHORTHANDS.items() if k in (key, "train.seed")]}
    first_seed = min(config.train.seed for config in configs)
    groups: dict[str, dict[str, int]] = {}
    for index, config in enumerate(configs):
        if config.train.seed != first_seed:
            continue
        values = trained_values(config)
        rest = json.dumps({k: v for k, v in values.items() if k not in aside}, default=str)
        groups.setdefault(rest, {})[format_value(values[key])] = index
    setting_names = [name for name in SETTINGS if name not in aside and name != "seed"]
    varying = [name for name in setting_names if cells[name].astype(str).nunique() > 1]
    found = []
    for indices in groups.values():
        if len(indices) < 2:
            continue
        first = next(iter(indices.values()))
        identities = sorted((name, cells["identity"][index]) for name, index in indices.items())
        payload = json.dumps([identities, timing.steps, timing.rounds])
        found.append(
            TimingCell(
                {name: _plain(cells[name][first]) for name in varying},
                {name: configs[index] for name, index in indices.items()},
                hashlib.sha256(payload.encode()).hexdigest()[:16],
            )
        )
    return found


@dataclass
class Result:
    study: Study
    finding: claims.Finding | None  # None: not all its runs (or timings) are recorded
    recorded: int
    runs: pd.DataFrame
    timed: bool = True  # False: a cell of its side-by-side timing is not recorded


def judge(
    study: Study, runs: pd.DataFrame, curves: pd.DataFrame, timings: pd.DataFrame | None = None
) -> Result:
    """The study's verdict from the experiment's recorded runs (`queries.load_runs`) and
    side-by-side timings (`queries.load_timings`): *not run* while any is missing."""
    complete = runs[runs["outcome"].isin(metrics.COMPLETE_OUTCOMES)] if len(runs) else runs
    newest = (
        complete.sort_values("start_time", ascending=False).drop_duplicates("identity")
        if len(complete)
        else complete
    )
    columns = ["run_id", "identity", *[key for key in READ if key in newest]]
    found = study.cells.merge(newest[columns], on="identity", how="left")
    recorded = int(found["run_id"].notna().sum())
    timed = _timed(study, timings)
    if recorded < len(found) or timed is None:
        return Result(study, None, recorded, found, timed is not None)
    for key in READ:
        found[key] = pd.to_numeric(found[key], errors="coerce") if key in found else float("nan")
    rule = claims.RULES[study.claim.claim.rule]
    finding = rule(found, curves[curves["run_id"].isin(found["run_id"])], timed)
    return Result(study, finding, recorded, found)


TIMING_COLUMNS = ["timing", "label", "round", "seconds"]


def _timed(study: Study, timings: pd.DataFrame | None) -> pd.DataFrame | None:
    """The study's timed rounds with each cell's settings (typed); None while a cell of its
    timing is not recorded. Empty for a study that times nothing."""
    if not study.timing:
        return pd.DataFrame(columns=TIMING_COLUMNS)
    if timings is None or not len(timings):
        return None
    cells = pd.DataFrame([{"timing": cell.identity, **cell.settings} for cell in study.timing])
    newest = timings[timings["timing"].isin(cells["timing"])]
    newest = newest[newest["start_time"] == newest.groupby("timing")["start_time"].transform("max")]
    if newest["timing"].nunique() < len(cells):
        return None
    return newest[TIMING_COLUMNS].merge(cells, on="timing")


def run(
    studies: list[Study], store: tuple[str, str] | None, sweep: Callable[[list[str]], int]
) -> int:
    """Runs each claim's study as one sweep (resuming: recorded runs are reused), then its
    side-by-side timing. With `store` (its URI and experiment), a study whose every run and
    timing is recorded there launches nothing. `sweep(arguments)` runs `bnlab train
    ARGUMENTS` and returns its exit status (the command line's `train_here` runs each in
    this process, one after another); each timing runs in a process of its own, which pins
    its backend's threads before it starts. A stop (Ctrl-C) ends the suite with status 130.
    """
    status = 0
    for index, study in enumerate(studies, start=1):
        print(f"Claim {index}/{len(studies)}: {study.name}", flush=True)
        if store is not None and study.trains_nothing(
            *queries.recorded_identities(*store, required_metrics(study.claim))
        ):
            print(f"  its {len(study.grid)} runs are recorded: nothing to train", flush=True)
            continue
        arguments = ["-m", f"+experiment=claims/{study.name}", *_own_folder(study)]
        arguments += study.overrides
        print("$ " + redact_text(" ".join([*TRAIN_COMMAND[1:], *arguments])), flush=True)
        swept = sweep(arguments)
        if swept == EXIT_INTERRUPTED:
            return swept
        status = status or swept
        if swept != EXIT_BAD_INPUT and study.timing:
            # After the sweep, not beside it: the variants are timed on a quiet machine.
            command = [sys.executable, "-m", "bnlab.claims.timing", study.name, *study.overrides]
            print("$ " + redact_text(" ".join(command[1:])), flush=True)
            timed = subprocess.run(command).returncode
            if timed == EXIT_INTERRUPTED:
                return timed
            status = status or timed
    return status


def _own_folder(study: Study) -> list[str]:
    """Hydra's folder for the claim's sweep, named after the claim: sweeps launched in the
    same second in one process would share Hydra's default folder (the time to the second).
    A folder the overrides set wins."""
    if any(o.get_key_element().lstrip("+~") == "hydra.sweep.dir" for o in parse(study.overrides)):
        return []
    return [f"hydra.sweep.dir=multirun/{datetime.now():%Y-%m-%d/%H-%M-%S}-{study.name}"]


def load(uri: str, experiment: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The experiment's job runs, their validation curves and its side-by-side timings."""
    try:
        runs, curves = queries.load_runs(uri, experiment)
        return runs, curves, queries.load_timings(uri, experiment)
    except queries.StoreQueryError:
        empty = pd.DataFrame(columns=["run_id", "identity", "outcome", "start_time"])
        return (
            empty,
            pd.DataFrame(columns=["run_id", "step", "value"]),
            pd.DataFrame(columns=[*TIMING_COLUMNS, "start_time"]),
        )
