"""Optuna searches: the search space in Hydra's sweep syntax, samplers, pruners, storage.

Used by the Hydra sweeper plugin (hydra_plugins/bnlab_optuna_sweeper) in the
launching process, and by each trial's job to report its validation curve.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
import pandas as pd
from hydra.utils import instantiate

from bnlab import metrics
from bnlab.config import ConfigError, SearchConfig, target_class
from bnlab.config.overrides import ChoiceSweep, IntervalSweep, RangeSweep, parse_one
from bnlab.values import format_value

log = logging.getLogger(__name__)

# The samplers and pruners the saved searches and the tests use; any other class of
# Optuna's (or of your own) is one `_target_` away.
SAMPLERS = (
    "optuna.samplers.TPESampler",
    "optuna.samplers.RandomSampler",
    "optuna.samplers.GridSampler",
    "optuna.samplers.CmaEsSampler",
)
PRUNERS = (
    "optuna.pruners.MedianPruner",
    "optuna.pruners.HyperbandPruner",
    "optuna.pruners.NopPruner",
)
# The study user attribute that holds its pruner's settings: Optuna keeps the pruner out
# of storage, and each trial's process rebuilds it from these.
PRUNER_ATTR = "pruner"
DIRECTIONS = ("maximize", "minimize")
# Trial user attributes a job writes: its outcome and its MLflow run.
OUTCOME_ATTR = "outcome"
RUN_ID_ATTR = "mlflow_run_id"


@dataclass
class Dimension:
    """One searched parameter: its name, Optuna distribution and the expression it came from."""

    name: str
    distribution: optuna.distributions.BaseDistribution
    expression: str

    def choices(self) -> list[Any]:
        """All values, for the grid sampler (discrete dimensions only)."""
        dist = self.distribution
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            return list(dist.choices)
        if isinstance(dist, optuna.distributions.IntDistribution):
            return list(range(dist.low, dist.high + 1, dist.step))
        raise ConfigError(
            f"hydra.sweeper.params.{self.name}: the grid sampler needs choice(...) or range(...),"
            f" not {self.expression}"
        )


def parse_space(params: dict[str, str]) -> list[Dimension]:
    """Parses `interval(...)`, `tag(log, interval(...))`, `choice(...)` and `range(...)`.

    Raises:
        ConfigError: An expression is not valid sweep syntax or not a searchable range.
    """
    dimensions = []
    for name, expression in params.items():
        key = f"hydra.sweeper.params.{name}"
        try:
            override = parse_one(f"{name}={expression}")
        except Exception as error:
            first = str(error).splitlines()[0]
            raise ConfigError(
                f"{key}: invalid search-space expression '{expression}' ({first})"
            ) from error
        value = override.value()
        if isinstance(value, IntervalSweep):
            low, high = float(value.start), float(value.end)
            log_scale = "log" in value.tags
            if not low < high or (log_scale and low <= 0):
                raise ConfigError(f"{key}: interval needs low < high (and low > 0 with log)")
            dist = optuna.distributions.FloatDistribution(low, high, log=log_scale)
        elif isinstance(value, RangeSweep):
            start, stop, step = value.start, value.stop, value.step or 1
            if all(float(v).is_integer() for v in (start, stop, step)):
                dist = optuna.distributions.IntDistribution(
                    int(start), int(stop) - 1, step=int(step)
                )
            else:
                high = start + step * math.floor((stop - start) / step - 1e-12)
                dist = optuna.distributions.FloatDistribution(start, high, step=step)
        elif isinstance(value, ChoiceSweep):
            dist = optuna.distributions.CategoricalDistribution([_plain(v) for v in value.list])
        else:
            raise ConfigError(
                f"{key}: '{expression}' is a fixed value; search with interval(...), "
                "tag(log, interval(...)), choice(...) or range(...)"
            )
        dimensions.append(Dimension(name, dist, expression))
    return dimensions


def _plain(value: Any) -> Any:
    """Choices must be plain values Optuna can store: bool, int, float or str."""
    return value if isinstance(value, (bool, int, float, str)) or value is None else str(value)


def suggest(trial: optuna.Trial, dimension: Dimension) -> Any:
    """Asks the trial for a value of one dimension."""
    dist = dimension.distribution
    if isinstance(dist, optuna.distributions.FloatDistribution):
        return trial.suggest_float(
            dimension.name, dist.low, dist.high, log=dist.log, step=dist.step
        )
    if isinstance(dist, optuna.distributions.IntDistribution):
        return trial.suggest_int(dimension.name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_categorical(dimension.name, list(dist.choices))


def override_for(name: str, value: Any) -> str:
    return f"{name}={format_value(value)}"


def settings(conf: Any) -> dict[str, Any]:
    """A sampler's or pruner's config as `_target_` plus the arguments it sets (no nulls)."""
    items = conf.items() if isinstance(conf, Mapping) else vars(conf).items()
    return {key: value for key, value in items if value is not None}


def _class(conf: Mapping[str, Any], key: str, base: type) -> type:
    """The class of `conf["_target_"]`, a subclass of `base` that takes every argument set;
    ConfigError naming `key` and the argument otherwise."""
    arguments = [argument for argument in conf if argument != "_target_"]
    return target_class(str(conf.get("_target_")), arguments, key, base)


def make_sampler(
    conf: Mapping[str, Any], dimensions: list[Dimension], seed_offset: int = 0
) -> optuna.samplers.BaseSampler:
    """Instantiates the sampler's `_target_`; a grid sampler gets the space's values.

    `seed_offset` moves the seed, so a resumed study does not replay its first draws.
    """
    conf = dict(conf)
    if conf.get("seed") is not None:
        conf["seed"] = int(conf["seed"]) + seed_offset
    sampler_class = _class(conf, "hydra.sweeper.sampler", optuna.samplers.BaseSampler)
    extra = {}
    if issubclass(sampler_class, optuna.samplers.GridSampler):
        extra["search_space"] = {dimension.name: dimension.choices() for dimension in dimensions}
    return instantiate(conf, **extra)


def make_pruner(conf: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    """Instantiates the pruner's `_target_` with the arguments it sets."""
    _class(conf, "hydra.sweeper.pruner", optuna.pruners.BasePruner)
    return instantiate(dict(conf))


def open_storage(
    url: str, heartbeat_seconds: int | None = None, stale_after_seconds: int | None = None
) -> optuna.storages.RDBStorage:
    """Connects to an Optuna storage, failing with one line when it cannot be reached.

    With `heartbeat_seconds`, trials prove they are alive through the storage,
    and `optuna.storages.fail_stale_trials` fails only those whose heartbeat
    stopped more than `stale_after_seconds` ago.
    """
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_seconds,
            grace_period=stale_after_seconds,
        )
    except Exception as error:
        reason = str(error).splitlines()[0][:200]
        raise ConfigError(f"hydra.sweeper.storage: cannot open '{url}' ({reason})") from error


class TrialReporter:
    """A trial's side in its job: report the validation curve, prune, record the outcome.

    The job finds its trial through the storage by study name and trial number, and
    works through Optuna's public storage and pruner API: intermediate values are
    stored with `set_trial_intermediate_value`, and the study's pruner (rebuilt from the
    settings the sweeper stored on the study) judges the stored trial with `prune`.
    """

    def __init__(self, config: SearchConfig) -> None:
        self.storage = open_storage(str(config.storage))
        self.study = optuna.load_study(study_name=config.study, storage=self.storage)
        self.pruner = make_pruner(
            self.study.user_attrs.get(PRUNER_ATTR) or {"_target_": "optuna.pruners.NopPruner"}
        )
        study_id = self.storage.get_study_id_from_name(str(config.study))
        self.trial_id = self.storage.get_trial_id_from_study_id_trial_number(
            study_id, int(config.trial)
        )

    def report(self, step: int, point: dict[str, float]) -> bool:
        """Reports validation accuracy at `step`; True when the pruner stops the trial."""
        self.storage.set_trial_intermediate_value(self.trial_id, step, point[metrics.VAL_ACCURACY])
        return bool(self.pruner.prune(self.study, self.storage.get_trial(self.trial_id)))

    def record(self, outcome: str, run_id: str | None) -> None:
        """Stores the job's outcome (and MLflow run) on the trial, for the sweeper to read."""
        self.storage.set_trial_user_attr(self.trial_id, OUTCOME_ATTR, outcome)
        if run_id:
            self.storage.set_trial_user_attr(self.trial_id, RUN_ID_ATTR, run_id)


def load_trials(storage_url: str, study_name: str) -> pd.DataFrame:
    """One row per trial: number, state, value and params (`params_<name>` columns)."""
    storage = open_storage(storage_url)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError as error:
        names = [summary.study_name for summary in optuna.get_all_study_summaries(storage)]
        raise ConfigError(
            f"unknown study '{study_name}' in {storage_url} (known: {', '.join(names) or 'none'})"
        ) from error
    return study.trials_dataframe(attrs=("number", "state", "value", "params"))


def param_importances(storage_url: str, study_name: str) -> dict[str, float]:
    """fANOVA importances of the searched params (empty with fewer than two finished trials)."""
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage_url))
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(finished) < 2:
        return {}
    try:
        return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError) as error:
        log.warning("No parameter importances: %s", error)
        return {}
