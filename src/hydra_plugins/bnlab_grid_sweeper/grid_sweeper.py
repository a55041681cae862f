"""A Hydra grid sweeper that launches every job of the grid without composing it again.

The project's default sweeper (`hydra/sweeper=bnlab_grid`, set in conf/config.yaml). It
expands the grid as Hydra's basic sweeper does (`bnlab.sweep.grid.grid_jobs`: the sweeper's
`params` first, the command line after them) and hands it to the configured launcher.
Hydra's basic sweeper composes every job's config in the launching process before it
launches them, and the launcher composes each again where the job runs; here every job
was already checked, faster, before the sweep's parent run was opened
(`bnlab.sweep.callback.ExperimentCallback` with `check_jobs`), so the launching process does not
compose them a second time. Where the launcher composes a job, a job that differs from the
first only in plain values is derived from the first's config
(`bnlab.sweep.launch_configs`).
"""

# No `from __future__ import annotations`: Hydra imports plugin modules without
# registering them in sys.modules, and dataclasses then cannot resolve string annotations.
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from bnlab.sweep import grid
from bnlab.sweep.launch_configs import DerivingConfigLoader

log = logging.getLogger(__name__)


@dataclass
class GridSweeperConf:
    _target_: str = "hydra_plugins.bnlab_grid_sweeper.grid_sweeper.GridSweeper"
    # The grid: parameter -> comma-separated values, as on the command line.
    params: dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(
    group="hydra/sweeper", name="bnlab_grid", node=GridSweeperConf, provider="bnlab"
)


class GridSweeper(Sweeper):
    """Launches the product of the swept values as one batch through the launcher."""

    # The launch callback checks the jobs and records the sweep's parent run (bnlab.sweep.callback).
    records_own_parent = False

    def __init__(self, params: Any = None) -> None:
        self.params = dict(params or {})
        self.config: DictConfig | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        # The launcher composes each job's config through this loader: a job that differs
        # from the first only in plain values is derived from it (bnlab.sweep.launch_configs).
        context = HydraContext(
            config_loader=DerivingConfigLoader(hydra_context.config_loader),
            callbacks=hydra_context.callbacks,
        )
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None
        jobs = grid.grid_jobs(self.config)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        results = self.launcher.launch(jobs, initial_job_idx=0)
        for result in results:
            # Reading a failed job's value raises its error, as Hydra's basic sweeper does.
            _ = result.return_value
        return [results]
