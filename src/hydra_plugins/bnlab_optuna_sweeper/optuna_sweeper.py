"""The `bnlab_optuna` sweeper's config, registered when Hydra discovers its plug-ins.

Select it with `hydra/sweeper=bnlab_optuna` (the saved searches in conf/hparams_search
do). Hydra imports every plug-in module of every app in the environment at discovery, so
this module holds only the sweeper's config schema and a front class: the sweeper's work
(`bnlab.sweep.optuna_sweeper`, with Optuna, MLflow and pandas) is imported only when a
launch selects the sweeper (Hydra requires the class itself to live in `hydra_plugins`).
"""

# No `from __future__ import annotations`: Hydra imports plugin modules without
# registering them in sys.modules, and dataclasses then cannot resolve string annotations.
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper


@dataclass
class SamplerConf:
    """An Optuna sampler, built by hydra.utils.instantiate; null arguments keep Optuna's
    defaults, and an argument the class does not take is refused naming it."""

    # The sampler's class: TPESampler (default), RandomSampler, GridSampler (choice and
    # range dimensions only; the space is passed to it), CmaEsSampler, or any other.
    _target_: str = "optuna.samplers.TPESampler"
    # Seed of the sampler, so a search can be repeated.
    seed: int | None = 0
    # Random trials before TPE or CMA-ES start modelling.
    n_startup_trials: int | None = None
    # TPE: model the parameters jointly, and keep parallel trials apart.
    multivariate: bool | None = None
    constant_liar: bool | None = None
    # CMA-ES: initial step size.
    sigma0: float | None = None


@dataclass
class PrunerConf:
    """An Optuna pruner, built by hydra.utils.instantiate like the sampler. Each trial's
    process rebuilds it from these settings, which the study keeps."""

    # The pruner's class: MedianPruner (default), HyperbandPruner, NopPruner, or any other.
    _target_: str = "optuna.pruners.MedianPruner"
    # Trials that run to the end before the median pruner prunes anything.
    n_startup_trials: int | None = None
    # Evaluations of a trial before it can be pruned.
    n_warmup_steps: int | None = None
    # Evaluations between pruning checks.
    interval_steps: int | None = None
    # Hyperband's reduction factor and resources.
    reduction_factor: int | None = None
    min_resource: int | None = None
    max_resource: Any = None


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.bnlab_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    # The sweeper builds its sampler and pruner itself (search.make_sampler and
    # make_pruner), after checking their arguments: Hydra hands them over as configs.
    _recursive_: bool = False
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
    # The launching process stamps its running trials in the storage this often...
    heartbeat_seconds: int = 10
    # ...and a later launch fails only trials whose stamps stopped this long ago,
    # so it never touches the trials of a search that is still alive.
    stale_after_seconds: int = 60


ConfigStore.instance().store(
    group="hydra/sweeper", name="bnlab_optuna", node=OptunaSweeperConf, provider="bnlab"
)


class OptunaSweeper(Sweeper):
    """Hydra's handle on the Optuna sweeper; the work is `bnlab.sweep.optuna_sweeper`'s."""

    # The sweeper checks its own jobs and records its own parent run.
    records_own_parent = True

    def __init__(self, **settings: Any) -> None:
        from bnlab.sweep.optuna_sweeper import OptunaSweeper as Work

        self.work = Work(**settings)

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        self.work.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.work.sweep(arguments)
