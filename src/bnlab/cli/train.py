"""`bnlab train`: one training job, or a Hydra multirun with `-m`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from bnlab import metrics
from bnlab.cli import hydra_app
from bnlab.config import CONFIG_PATH, register_configs
from bnlab.job import runner
from bnlab.sweep import trials


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
def task(cfg: DictConfig) -> float:
    """One job; returns its objective (best validation accuracy) for sweepers."""
    return runner.run(cfg, trial_reporter=trials.reporter)[metrics.OBJECTIVE]


def main() -> None:
    """Runs the Hydra app on `sys.argv` (set by the `bnlab` command)."""
    register_configs()
    hydra_app.run(task)
