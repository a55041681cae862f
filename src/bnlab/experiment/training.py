"""Training on a step schedule, with validation every `eval_every` steps."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import keras
import numpy as np

from bnlab import interrupts, metrics
from bnlab.config import Config
from bnlab.experiment.compiled import compiled_model
from bnlab.experiment.data import Splits

# Samples materialised per fit call (about 100 MB of float32 MNIST images).
MAX_SAMPLES_PER_CALL = 32_000

# Called after each evaluation with (global step, metric name -> value);
# returning True stops training early (a pruned trial).
EvalHook = Callable[[int, dict[str, float]], bool]


@dataclass
class TrainResult:
    """What one training run produced, in the metric names of `bnlab.metrics`."""

    outcome: str
    history: list[dict[str, float]] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)
    model: keras.Model | None = None
    # Accuracy by guessing among the data's classes: a diverged run's objective.
    chance: float = 0.0

    @property
    def objective(self) -> float:
        """Best validation accuracy, or chance accuracy when the run diverged."""
        if self.outcome == metrics.DIVERGED:
            return self.chance
        return self.final.get(metrics.BEST_VAL_ACCURACY, self.chance)


def batch_indices(num_samples: int, batch_size: int, seed: int) -> Iterator[np.ndarray]:
    """Yields the sample indices of each step: a fresh shuffle every epoch, no sample twice."""
    if not 1 <= batch_size <= num_samples:
        # Config validation refuses this first; without the check the loop never yields.
        raise ValueError(f"train.batch_size: {batch_size} does not fit {num_samples} images")
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(num_samples)
        for start in range(0, num_samples - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def _is_finite(value: float) -> bool:
    return value is not None and math.isfinite(value)


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray, chunk: int = 1000) -> dict:
    """Loss and accuracy over (x, y), a few large batches at a time.

    `test_on_batch` reuses one compiled function; `evaluate` would rebuild its
    data pipeline on every call, which costs more than the evaluation itself
    on a 500-image validation set.
    """
    totals = {"loss": 0.0, "accuracy": 0.0}
    for start in range(0, len(x), chunk):
        logs = model.test_on_batch(
            x[start : start + chunk], y[start : start + chunk], return_dict=True
        )
        size = len(x[start : start + chunk])
        for key in totals:
            totals[key] += float(logs[key]) * size
    return {key: value / len(x) for key, value in totals.items()}


def steps_per_execution(config: Config) -> int:
    """The largest divisor of every interval length that is <= the configured value.

    Each compiled call then ends exactly on an evaluation step.
    """
    train = config.train
    common = math.gcd(train.eval_every, train.steps % train.eval_every or train.eval_every)
    return max(d for d in range(1, min(common, train.steps_per_execution) + 1) if common % d == 0)


class _Evaluator(keras.callbacks.Callback):
    """Evaluates at the end of every Keras epoch, which is one evaluation interval."""

    def __init__(
        self,
        data: Splits,
        on_eval: EvalHook | None,
        internals_batch: int | None = None,
        mechanism_batch: int | None = None,
    ) -> None:
        super().__init__()
        self.data = data
        self.on_eval = on_eval
        # The batch size the internals and the mechanism are measured with (None: not).
        self.internals_batch = internals_batch
        self.mechanism_batch = mechanism_batch
        self.probe = None
        self.landscape = None
        self.internals_seconds = 0.0
        self.mechanism_seconds = 0.0
        self.step = 0
        self.steps_in_interval = 0
        self.outcome = metrics.FINISHED
        self.history: list[dict[str, float]] = []
        # (steps, seconds) of each interval's training, evaluation and probes not counted.
        self.intervals: list[tuple[int, float]] = []
        self.interval_started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.interval_started = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.steps_in_interval = batch + 1
        # A Ctrl-C that a library callback swallowed still stops training here.
        interrupts.check()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self.step += self.steps_in_interval
        self.intervals.append((self.steps_in_interval, time.perf_counter() - self.interval_started))
        train_loss = float(logs.get("loss", math.nan))
        if not _is_finite(train_loss):
            self._stop(metrics.DIVERGED)
            return
        val = evaluate(self.model, self.data.x_val, self.data.y_val)
        point = {
            "step": self.step,
            metrics.TRAIN_LOSS: train_loss,
            metrics.TRAIN_ACCURACY: float(logs["accuracy"]),
            metrics.VAL_LOSS: val["loss"],
            metrics.VAL_ACCURACY: val["accuracy"],
        }
        if self.internals_batch:
            tic = time.perf_counter()
            point |= self.internals().measure()
            self.internals_seconds += time.perf_counter() - tic
        if self.mechanism_batch:
            tic = time.perf_counter()
            point |= self.mechanism().measure()
            self.mechanism_seconds += time.perf_counter() - tic
        self.history.append(point)
        if not _is_finite(point[metrics.VAL_LOSS]):
            self._stop(metrics.DIVERGED)
        elif self.on_eval is not None and self.on_eval(self.step, point):
            self._stop(metrics.PRUNED)

    def internals(self):
        if self.probe is None:
            from bnlab.experiment.internals import Internals

            data = self.data
            self.probe = Internals(
                self.model, data.x_train, data.y_train, data.x_val, data.y_val, self.internals_batch
            )
        return self.probe

    def mechanism(self):
        if self.landscape is None:
            from bnlab.experiment.mechanism import Mechanism

            self.landscape = Mechanism(
                self.model, self.data.x_train, self.data.y_train, self.mechanism_batch
            )
        return self.landscape

    def _stop(self, outcome: str) -> None:
        self.outcome = outcome
        self.model.stop_training = True


def _intervals(config: Config) -> list[tuple[int, int]]:
    """Groups the schedule into fit calls: (steps per interval, intervals in the call).

    A call holds at most MAX_SAMPLES_PER_CALL samples, so memory stays bounded on
    long schedules while tracing happens once per call, not once per interval.
    """
    train = config.train
    per_call = max(1, MAX_SAMPLES_PER_CALL // (train.eval_every * train.batch_size))
    full, remainder = divmod(train.steps, train.eval_every)
    calls = [(train.eval_every, min(per_call, full - done)) for done in range(0, full, per_call)]
    if remainder:
        calls.append((remainder, 1))
    return calls


def train_model(config: Config, data: Splits, on_eval: EvalHook | None = None) -> TrainResult:
    """Trains for `config.train.steps` steps, evaluating every `eval_every` steps.

    The schedule is fed to `model.fit` as consecutive batches of a seeded
    shuffle, one Keras epoch per evaluation interval, so the train metrics are
    the means over that interval. A non-finite loss stops the run as diverged.

    Args:
        config: The validated experiment config.
        data: Train, validation and test splits.
        on_eval: Optional hook called after every evaluation; True stops training.

    Returns:
        The outcome, the metric history and the final metrics.
    """
    train = config.train
    model = compiled_model(config, data, steps_per_execution(config))
    stream = batch_indices(len(data.x_train), train.batch_size, train.seed)
    evaluator = _Evaluator(
        data,
        on_eval,
        train.batch_size if train.internals else None,
        train.batch_size if train.mechanism else None,
    )
    callbacks = [evaluator, keras.callbacks.TerminateOnNaN()]
    started = time.perf_counter()
    for interval, count in _intervals(config):
        indices = np.concatenate([next(stream) for _ in range(interval * count)])
        model.fit(
            data.x_train[indices],
            data.y_train[indices],
            batch_size=train.batch_size,
            epochs=count,
            steps_per_epoch=interval,
            shuffle=False,
            verbose=0,
            callbacks=callbacks,
        )
        if model.stop_training:
            break
    # A fresh model traces its functions in its first interval, which a kept one
    # (compiled.py) skips: the step rate counts the later intervals where there are any.
    timed = evaluator.intervals[1:] or evaluator.intervals
    timed_steps = sum(steps for steps, _ in timed)
    fit_seconds = sum(seconds for _, seconds in timed) or math.nan
    test = evaluate(model, data.x_test, data.y_test)
    step = evaluator.step
    final = {
        metrics.TEST_LOSS: test["loss"],
        metrics.TEST_ACCURACY: test["accuracy"],
        metrics.BEST_VAL_ACCURACY: max(
            (point[metrics.VAL_ACCURACY] for point in evaluator.history), default=0.0
        ),
        metrics.SAMPLES_PER_SECOND: timed_steps * train.batch_size / fit_seconds,
        metrics.STEPS_PER_SECOND: timed_steps / fit_seconds,
        metrics.WALL_TIME: time.perf_counter() - started,
        metrics.PARAMETERS: float(model.count_params()),
    }
    if train.internals and evaluator.history:
        tic = time.perf_counter()
        final |= evaluator.internals().at_end()
        final[metrics.INTERNALS_SECONDS] = evaluator.internals_seconds + time.perf_counter() - tic
    if train.mechanism and evaluator.history:
        final[metrics.MECHANISM_SECONDS] = evaluator.mechanism_seconds
        for key in metrics.MECHANISM_KEYS:
            values = [point[key] for point in evaluator.history if key in point]
            if values:
                final[f"{key}{metrics.MEAN_SUFFIX}"] = float(np.mean(values))
    final = {key: value for key, value in final.items() if _is_finite(value)}
    final["steps"] = float(step)
    return TrainResult(
        evaluator.outcome,
        evaluator.history,
        final,
        model,
        chance=metrics.chance_accuracy(data.num_classes),
    )
