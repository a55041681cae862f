"""`bnlab train`: one training job, or a Hydra multirun with `-m`."""

from __future__ import annotations

import sys
import traceback

import hydra
from omegaconf import DictConfig

from bnlab import interrupts, metrics
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


def train_here(arguments: list[str]) -> int:
    """Runs `bnlab train ARGUMENTS` in this process, as the command would; returns the exit
    status the command would have had.

    A suite of sweeps run one after another in one process starts the interpreter, its
    imports and a local launcher's worker processes (joblib's, reused while they idle)
    once, where a command per sweep started them all anew. Hydra clears its global state
    after each launch, and the sweep closes its parent run before it returns.
    """
    saved = sys.argv
    sys.argv = ["bnlab train", *arguments]
    try:
        main()
        return 0
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            return done.code or 0
        print(done.code, file=sys.stderr)  # what the interpreter prints for exit("...")
        return 1
    except Exception:
        # The command would end on this traceback; the suite goes on with its next sweep.
        traceback.print_exc()
        return 1
    finally:
        sys.argv = saved
        # The launch's workers are gone: a stop no longer waits for them (`interrupts.grace`).
        interrupts.grace(None)
