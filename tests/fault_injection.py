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
        matches = _matches(config, self.key, self.value)
        bnlab.experiment.training.train_model = failing_train_model if matches else self.original


def _matches(config: DictConfig, key: str, value: Any) -> bool:
    """Whether the job's `key` is `value` (as text, any case: `true` is True)."""
    return str(OmegaConf.select(config, key)).lower() == str(value).lower()


def fail_when(key: str, value: Any) -> list[str]:
    """The command-line overrides that install FailTraining for `key=value`."""
    return [
        "+hydra.callbacks.fault._target_=fault_injection.FailTraining",
        f"+hydra.callbacks.fault.key={key}",
        f"+hydra.callbacks.fault.value={value}",
    ]


class HoldAfterFirstEvaluation(Callback):
    """Holds every job (or only those whose `key` equals `value`) after its first
    evaluation (written to the store at once) until the file `gate` exists, so a test
    disrupts a job mid-run whatever its speed.

    Without it a test races the jobs: on the cached embedded data a 300-step job can end
    before the test sees it running. The hold gives up after `limit` seconds.
    """

    def __init__(
        self, gate: str, limit: float = 300.0, key: str | None = None, value: Any = None
    ) -> None:
        self.gate = gate
        self.limit = limit
        self.key = key
        self.value = value
        self.original = None

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        import os
        import time

        import bnlab.experiment.training

        if self.original is None:
            self.original = bnlab.experiment.training.train_model
        original, gate, limit = self.original, self.gate, self.limit
        if self.key is not None and not _matches(config, self.key, self.value):
            bnlab.experiment.training.train_model = original
            return

        def held_train_model(config: Any, data: Any, on_eval: Any = None) -> Any:
            evaluations = []

            def hook(step: int, point: dict) -> bool:
                stop = bool(on_eval(step, point)) if on_eval is not None else False
                if not evaluations:
                    evaluations.append(step)
                    deadline = time.monotonic() + limit
                    while not os.path.exists(gate) and time.monotonic() < deadline:
                        time.sleep(0.1)
                return stop

            return original(config, data, on_eval=hook)

        bnlab.experiment.training.train_model = held_train_model


def hold_until(gate: str, key: str | None = None, value: Any = None) -> list[str]:
    """The command-line overrides that install HoldAfterFirstEvaluation on `gate`, for
    every job or only those whose `key` equals `value`."""
    only = [f"+hydra.callbacks.hold.key={key}", f"+hydra.callbacks.hold.value={value}"]
    return [
        "+hydra.callbacks.hold._target_=fault_injection.HoldAfterFirstEvaluation",
        f"+hydra.callbacks.hold.gate={gate}",
        *(only if key is not None else []),
    ]


class HoldBeforeJob(Callback):
    """Holds every job before it opens its run until the file `gate` exists, so a test
    can take the store away between a sweep's start and its jobs' first write."""

    def __init__(self, gate: str, limit: float = 300.0) -> None:
        self.gate = gate
        self.limit = limit

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        import os
        import time

        deadline = time.monotonic() + self.limit
        while not os.path.exists(self.gate) and time.monotonic() < deadline:
            time.sleep(0.1)


def hold_jobs_until(gate: str) -> list[str]:
    """The command-line overrides that install HoldBeforeJob on `gate`."""
    return [
        "+hydra.callbacks.hold_job._target_=fault_injection.HoldBeforeJob",
        f"+hydra.callbacks.hold_job.gate={gate}",
    ]


class InterruptWhileClosing(Callback):
    """Sends this process a SIGINT from inside the sweep's close (while it writes the
    parent's description), as a Ctrl-C pressed just as the last job ends lands."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        import os
        import signal

        import bnlab.sweep.recorder

        original = bnlab.sweep.recorder.sweep_note

        def interrupting_note(*args: Any, **kwargs: Any) -> str:
            bnlab.sweep.recorder.sweep_note = original
            os.kill(os.getpid(), signal.SIGINT)
            return original(*args, **kwargs)

        bnlab.sweep.recorder.sweep_note = interrupting_note


INTERRUPT_WHILE_CLOSING = [
    "+hydra.callbacks.interrupt._target_=fault_injection.InterruptWhileClosing"
]
