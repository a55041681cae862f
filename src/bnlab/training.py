"""Training on a step schedule, with validation every `eval_every` steps."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import keras
import numpy as np

from bnlab import metrics
from bnlab.config import Config
from bnlab.data import Splits
from bnlab.model import build_model, build_optimizer

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

    @property
    def objective(self) -> float:
        """Best validation accuracy, or chance accuracy when the run diverged."""
        if self.outcome == metrics.DIVERGED:
            return metrics.CHANCE_ACCURACY
        return self.final.get(metrics.BEST_VAL_ACCURACY, metrics.CHANCE_ACCURACY)


def batch_indices(num_samples: int, batch_size: int, seed: int) -> Iterator[np.ndarray]:
    """Yields the sample indices of each step: a fresh shuffle every epoch, no sample twice."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(num_samples)
        for start in range(0, num_samples - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def _is_finite(value: float) -> bool:
    return value is not None and math.isfinite(value)


def compile_model(config: Config) -> keras.Model:
    """Builds and compiles the model of `config`, seeded for reproducibility."""
    keras.utils.set_random_seed(config.train.seed)
    model = build_model(config.model)
    model.compile(
        optimizer=build_optimizer(config.optimizer),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=min(config.train.steps_per_execution, config.train.eval_every),
    )
    return model


def train_model(config: Config, data: Splits, on_eval: EvalHook | None = None) -> TrainResult:
    """Trains for `config.train.steps` steps, evaluating every `eval_every` steps.

    Each interval between evaluations is one `model.fit` call over the next
    `eval_every` batches of a seeded shuffle, so the train metrics are the means
    over that interval. A non-finite loss stops the run as diverged.

    Args:
        config: The validated experiment config.
        data: Train, validation and test splits.
        on_eval: Optional hook called after every evaluation; True stops training.

    Returns:
        The outcome, the metric history and the final metrics.
    """
    train = config.train
    model = compile_model(config)
    stream = batch_indices(len(data.x_train), train.batch_size, train.seed)
    result = TrainResult(outcome=metrics.FINISHED, model=model)
    best_val_accuracy = 0.0
    step = 0
    fit_seconds = 0.0
    started = time.perf_counter()
    while step < train.steps:
        interval = min(train.eval_every, train.steps - step)
        indices = np.concatenate([next(stream) for _ in range(interval)])
        tic = time.perf_counter()
        history = model.fit(
            data.x_train[indices],
            data.y_train[indices],
            batch_size=train.batch_size,
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=[keras.callbacks.TerminateOnNaN()],
        ).history
        fit_seconds += time.perf_counter() - tic
        step += interval
        train_loss = float(history["loss"][-1])
        if not _is_finite(train_loss):
            result.outcome = metrics.DIVERGED
            break
        val = model.evaluate(data.x_val, data.y_val, batch_size=256, verbose=0, return_dict=True)
        point = {
            "step": step,
            metrics.TRAIN_LOSS: train_loss,
            metrics.TRAIN_ACCURACY: float(history["accuracy"][-1]),
            metrics.VAL_LOSS: float(val["loss"]),
            metrics.VAL_ACCURACY: float(val["accuracy"]),
        }
        result.history.append(point)
        best_val_accuracy = max(best_val_accuracy, point[metrics.VAL_ACCURACY])
        if not _is_finite(point[metrics.VAL_LOSS]):
            result.outcome = metrics.DIVERGED
            break
        if on_eval is not None and on_eval(step, point):
            result.outcome = metrics.PRUNED
            break
    test = model.evaluate(data.x_test, data.y_test, batch_size=256, verbose=0, return_dict=True)
    wall = time.perf_counter() - started
    samples = step * train.batch_size
    result.final = {
        metrics.TEST_LOSS: float(test["loss"]),
        metrics.TEST_ACCURACY: float(test["accuracy"]),
        metrics.BEST_VAL_ACCURACY: best_val_accuracy,
        metrics.SAMPLES_PER_SECOND: samples / fit_seconds if fit_seconds else 0.0,
        metrics.STEPS_PER_SECOND: step / fit_seconds if fit_seconds else 0.0,
        metrics.WALL_TIME: wall,
    }
    result.final = {key: value for key, value in result.final.items() if _is_finite(value)}
    result.final["steps"] = float(step)
    return result
