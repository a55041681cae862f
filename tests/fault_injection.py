"""Failures injected by the tests, from outside the product.

A Hydra callback that the tests add on the command line; it makes the training of
the jobs whose config matches raise, in whatever process the job runs:

    PYTHONPATH=tests python src/train.py -m seed=0,1 \
        +hydra.callbacks.fault._target_=fault_injection.FailTraining \
        +hydra.callbacks.fault.key=train.seed +hydra.callbacks.fault.value=1
"""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


class InjectedFailure(RuntimeError):
    """The failure a test asked for."""


def failing_train_model(*args: Any, **kwargs: Any) -> Any:
    raise InjectedFailure("training failed on purpose (test fault injection)")


class FailTraining(Callback):
    """Makes the training of every job whose `key` equals `value` raise InjectedFailure."""

    def __init__(self, key: str, value: Any) -> None:
        self.key = key
        self.value = value
        self.original = None

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Imported here, as the job does, so the backend starts after its threads are pinned.
        import bnlab.experiment.training

        if self.original is None:
            self.original = bnlab.experiment.training.train_model
        matches = str(OmegaConf.select(config, self.key)) == str(self.value)
        bnlab.experiment.training.train_model = failing_train_model if matches else self.original


def fail_when(key: str, value: Any) -> list[str]:
    """The command-line overrides that install FailTraining for `key=value`."""
    return [
        "+hydra.callbacks.fault._target_=fault_injection.FailTraining",
        f"+hydra.callbacks.fault.key={key}",
        f"+hydra.callbacks.fault.value={value}",
    ]
