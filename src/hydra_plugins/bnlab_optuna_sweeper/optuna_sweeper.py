"""A Hydra sweeper that runs an Optuna (>= 4) study, trials launched by any Hydra launcher.

Select it with `hydra/sweeper=bnlab_optuna` (the saved searches in conf/hparams_search
do). The search space uses Hydra's sweep syntax: interval(...), tag(log, interval(...)),
choice(...) and range(...).
"""

# No `from __future__ import annotations`: Hydra imports plugin modules without
# registering them in sys.modules, and dataclasses then cannot resolve string annotations.
import json
import logging
import math
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from bnlab import metrics, provenance, search, tracking
from bnlab.config import ConfigError
from bnlab.sweep import JOB_FILE, SWEEP_FILE, check_jobs, write_sweep_file

log = logging.getLogger(__name__)

FINISHED_STATES = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.FAIL,
)


@dataclass
class SamplerConf:
    # tpe (default), random, grid (choice/range dimensions only) or cmaes.
    name: str = "tpe"
    # Seed of the sampler, so a search can be repeated.
    seed: int | None = 0
    # Random trials before TPE or CMA-ES start modelling.
    n_startup_trials: int = 5


@dataclass
class PrunerConf:
    # median (default), hyperband or none.
    name: str = "median"
    # Trials that run to the end before the median pruner prunes anything.
    n_startup_trials: int = 3
    # Evaluations of a trial before it can be pruned.
    n_warmup_steps: int = 0
    # Hyperband's reduction factor.
    reduction_factor: int = 3


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.bnlab_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    # Study name; the same name and storage resume the study.
    study_name: str = "bnlab"
    # Optuna storage URL (optuna-dashboard opens it too).
    storage: str = "sqlite:///optuna.db"
    # maximize the objective (best validation accuracy) or minimize it.
    direction: str = "maximize"
    # Trials the study should hold when done, counting finished trials of earlier launches.
    n_trials: int = 20
    # Trials asked for and launched together, through the configured Hydra launcher.
    n_jobs: int = 1
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerConf = field(default_factory=PrunerConf)
    # The search space: parameter -> sweep expression.
    params: dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(
    group="hydra/sweeper", name="bnlab_optuna", node=OptunaSweeperConf, provider="bnlab"
)


class OptunaSweeper(Sweeper):
    """Asks Optuna for `n_jobs` trials at a time and launches them as Hydra jobs."""

    def __init__(
        self,
        study_name: str,
        storage: str,
        direction: str,
        n_trials: int,
        n_jobs: int,
        sampler: Any,
        pruner: Any,
        params: Any,
    ) -> None:
        self.study_name = study_name
        self.storage_url = storage
        self.direction = direction
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.sampler_conf = sampler
        self.pruner_conf = pruner
        self.params = dict(params or {})
        self.config: DictConfig | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def _split_arguments(self, arguments: list[str]) -> tuple[dict[str, str], list[str]]:
        """Command-line sweep expressions join the space; plain overrides apply to every trial.

        A plain override of a searched parameter (e.g. `bn=true`) pins it: it leaves
        the space.
        """
        space = dict(self.params)
        fixed = []
        for argument, override in zip(
            arguments, OverridesParser.create().parse_overrides(arguments), strict=True
        ):
            key = override.get_key_element()
            if override.is_sweep_override():
                space[key] = argument.split("=", 1)[1]
            else:
                space.pop(key, None)
                fixed.append(argument)
        return space, fixed

    def _check(self, dimensions: list[search.Dimension], fixed: list[str]) -> None:
        """Every bound and choice of every dimension must make a valid job config."""
        if self.direction not in search.DIRECTIONS:
            raise ConfigError(
                f"hydra.sweeper.direction: '{self.direction}' "
                f"(accepted: {', '.join(search.DIRECTIONS)})"
            )
        if self.n_trials < 1 or self.n_jobs < 1:
            raise ConfigError("hydra.sweeper.n_trials and hydra.sweeper.n_jobs must be >= 1")
        if not dimensions:
            raise ConfigError("hydra.sweeper.params: the search space is empty")
        jobs = []
        for dimension in dimensions:
            dist = dimension.distribution
            values = list(dist.choices) if hasattr(dist, "choices") else [dist.low, dist.high]
            base = [
                search.override_for(d.name, _first(d)) for d in dimensions if d is not dimension
            ]
            jobs += [[*fixed, *base, search.override_for(dimension.name, v)] for v in values]
        check_jobs(self.config.hydra.job.config_name, jobs)

    def sweep(self, arguments: list[str]) -> None:
        assert self.config is not None
        space, fixed = self._split_arguments(arguments)
        dimensions = search.parse_space(space)
        self._check(dimensions, fixed)
        sampler = search.make_sampler(
            self.sampler_conf.name,
            self.sampler_conf.seed,
            dimensions,
            self.sampler_conf.n_startup_trials,
        )
        pruner = search.make_pruner(
            self.pruner_conf.name,
            self.pruner_conf.n_startup_trials,
            self.pruner_conf.n_warmup_steps,
            self.pruner_conf.reduction_factor,
        )
        storage = search.open_storage(self.storage_url)
        try:
            study = optuna.create_study(
                study_name=self.study_name,
                storage=storage,
                sampler=sampler,
                pruner=pruner,
                direction=self.direction,
                load_if_exists=True,
            )
        except Exception as error:
            raise ConfigError(f"hydra.sweeper.storage: {str(error).splitlines()[0]}") from error
        if study.trials and self.sampler_conf.seed is not None:
            # A resumed study must not replay the first launch's random draws.
            study.sampler = search.make_sampler(
                self.sampler_conf.name,
                self.sampler_conf.seed + len(study.trials),
                dimensions,
                self.sampler_conf.n_startup_trials,
            )
        _fail_stale_trials(study)
        parent = self._open_parent(space)
        try:
            self._optimize(study, dimensions, fixed, parent)
        except BaseException:
            self._close_parent(study, parent, interrupted=True)
            raise
        self._close_parent(study, parent, interrupted=False)

    def _open_parent(self, space: dict[str, str]) -> tracking.RunLogger | None:
        config = self.config
        sweep_dir = Path(config.hydra.sweep.dir)
        # Keep the id the experiment callback gave this multirun: jobs report under it.
        previous = sweep_dir / SWEEP_FILE
        sweep_id = (
            json.loads(previous.read_text())["sweep_id"]
            if previous.is_file()
            else uuid.uuid4().hex[:12]
        )
        record = {
            "sweep_id": sweep_id,
            "parent_run_id": None,
            "tracking_uri": config.tracking.uri,
            "experiment": config.tracking.experiment,
            "study": self.study_name,
            "storage": self.storage_url,
        }
        parent = None
        if config.tracking.enabled:
            self.store = tracking.open_store(OmegaConf.to_object(config.tracking))
            tags = {
                tracking.ROLE_TAG: "search",
                "study": self.study_name,
                "optuna_storage": self.storage_url,
                tracking.SWEEP_ID_TAG: record["sweep_id"],
                **provenance.git_tags(config.hydra.runtime.cwd),
            }
            existing = self.store.find_run(
                {
                    tracking.ROLE_TAG: "search",
                    "study": self.study_name,
                    "optuna_storage": self.storage_url,
                }
            )
            adopted = tracking.active_run_id_from_env()
            if adopted:
                parent = self.store.adopt_run(adopted, tags, name=f"search {self.study_name}")
            elif existing:
                parent = self.store.reopen_run(existing)
                parent.set_tags({tracking.SWEEP_ID_TAG: record["sweep_id"]})
            else:
                parent = self.store.start_run(f"search {self.study_name}", tags)
            parent.log_params(
                {
                    **{f"search.{name}": expression for name, expression in space.items()},
                    "sampler": self.sampler_conf.name,
                    "sampler.seed": self.sampler_conf.seed,
                    "pruner": self.pruner_conf.name,
                    "direction": self.direction,
                    "study_name": self.study_name,
                    "storage": self.storage_url,
                }
            )
            record["parent_run_id"] = parent.run_id
            log.info(
                "Study '%s' in %s, MLflow parent run %s",
                self.study_name,
                self.storage_url,
                parent.run_id,
            )
        write_sweep_file(sweep_dir, record)
        return parent

    def _optimize(
        self,
        study: optuna.Study,
        dimensions: list[search.Dimension],
        fixed: list[str],
        parent: tracking.RunLogger | None,
    ) -> None:
        finished = _count_finished(study)
        if finished >= self.n_trials:
            log.info("Study '%s' already has %d finished trials", self.study_name, finished)
        job_index = len(study.trials)
        while finished < self.n_trials:
            batch = min(self.n_jobs, self.n_trials - finished)
            trials = [study.ask() for _ in range(batch)]
            overrides = []
            for trial in trials:
                values = [search.override_for(d.name, search.suggest(trial, d)) for d in dimensions]
                overrides.append(
                    [
                        *fixed,
                        *values,
                        f"search.study={self.study_name}",
                        f"search.storage={self.storage_url}",
                        f"search.trial={trial.number}",
                        f"search.trial_id={trial._trial_id}",
                        *self._pruner_overrides(),
                    ]
                )
            results = self.launcher.launch(overrides, initial_job_idx=job_index)
            exhausted = False
            for trial, result in zip(trials, results, strict=True):
                exhausted |= _tell(study, trial, result)
            finished += batch
            job_index += batch
            if parent is not None:
                _log_progress(study, parent, finished)
            if exhausted:
                log.info("The grid of study '%s' is exhausted", self.study_name)
                break

    def _pruner_overrides(self) -> list[str]:
        conf = self.pruner_conf
        return [
            f"search.pruner={conf.name}",
            f"search.pruner_startup_trials={conf.n_startup_trials}",
            f"search.pruner_warmup_steps={conf.n_warmup_steps}",
            f"search.pruner_reduction_factor={conf.reduction_factor}",
        ]

    def _close_parent(
        self, study: optuna.Study, parent: tracking.RunLogger | None, interrupted: bool
    ) -> None:
        if interrupted:
            _fail_stale_trials(study)
        if parent is None:
            return
        states = [trial.state.name.lower() for trial in study.trials]
        counts = {"launched": len(states)}
        counts |= {state: states.count(state) for state in ("complete", "pruned", "fail")}
        status = "KILLED" if interrupted else "FINISHED"
        jobs = [
            {"trial": t.number, "state": t.state.name, "value": t.value, "params": t.params}
            for t in study.trials
        ]
        self.store.end_sweep(parent.run_id, counts, jobs, status, terminate=parent.owned)


def _first(dimension: search.Dimension) -> Any:
    dist = dimension.distribution
    return dist.choices[0] if hasattr(dist, "choices") else dist.low


def _count_finished(study: optuna.Study) -> int:
    return sum(trial.state in FINISHED_STATES for trial in study.trials)


def _fail_stale_trials(study: optuna.Study) -> None:
    """Trials left RUNNING by a killed launch are failed, so a resumed study asks anew."""
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.RUNNING:
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


def _job_outcome(result: JobReturn) -> str | None:
    try:
        folder = Path(result.hydra_cfg.hydra.runtime.output_dir)
        return json.loads((folder / JOB_FILE).read_text())["outcome"]
    except (AttributeError, OSError, KeyError, ValueError):
        return None


def _tell(study: optuna.Study, trial: optuna.Trial, result: JobReturn) -> bool:
    """Records a finished job in the study: value, PRUNED or FAIL.

    Returns:
        True when the sampler has nothing left to ask (an exhausted grid).
    """
    outcome = _job_outcome(result)
    value = result._return_value if result.status == JobStatus.COMPLETED else math.nan
    try:
        if outcome == metrics.PRUNED:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif outcome == metrics.FAILED or not isinstance(value, float) or not math.isfinite(value):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, value)
    except RuntimeError as error:
        # GridSampler calls study.stop() once every point is used; outside
        # study.optimize that raises, after the trial's state has been stored.
        if "Study.stop" not in str(error):
            raise
        return True
    return False


def _log_progress(study: optuna.Study, parent: tracking.RunLogger, finished: int) -> None:
    """Best value and params so far, on the study's parent run."""
    try:
        best = study.best_trial
    except ValueError:
        return  # no completed trial yet
    parent.log_metrics({"search/best_value": best.value, "search/trials": finished}, finished)
    parent.flush()
    parent.set_tags(
        {
            "best.trial": best.number,
            "best.value": best.value,
            **{f"best.{name}": search.format_value(value) for name, value in best.params.items()},
        }
    )
