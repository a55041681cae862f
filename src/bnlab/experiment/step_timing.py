"""Step times of a few model variants, measured side by side in one process.

Runs recorded at different times ran under different loads: on a shared machine their
step times differ by more than a bias term costs. Here each variant is built, compiled
and warmed up by one untimed burst (its functions traced), then the variants take turns
training bursts of the same batches, the order reversed every round, so a change of load
falls on all of them alike. Each burst's seconds per step is one sample; rounds pair the
variants.
"""

from __future__ import annotations

import time

import numpy as np

from bnlab import interrupts
from bnlab.config import Config
from bnlab.experiment import graph_options
from bnlab.experiment.compiled import compile_model
from bnlab.experiment.data import Splits
from bnlab.experiment.training import batch_indices, steps_per_execution


def _burst(model, x: np.ndarray, y: np.ndarray, batch_size: int, steps: int) -> float:
    """Seconds one fit of `steps` steps takes."""
    tic = time.perf_counter()
    model.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=1,
        steps_per_epoch=steps,
        shuffle=False,
        verbose=0,
    )
    return time.perf_counter() - tic


def time_side_by_side(
    variants: dict[str, Config], data: Splits, steps: int, rounds: int
) -> dict[str, list[float]]:
    """Seconds per training step of each variant, one value per round.

    Args:
        variants: Each variant's config, by the label its values are returned under.
        data: The splits every variant trains on.
        steps: Steps per timed burst.
        rounds: Bursts per variant; the variants alternate, in reverse order every round.
    """
    models, feeds = {}, {}
    for label, config in variants.items():
        graph_options.apply(config.model)
        train = config.train
        models[label] = compile_model(config, data, steps_per_execution(config))  # as jobs do
        stream = batch_indices(len(data.x_train), train.batch_size, train.seed)
        indices = np.concatenate([next(stream) for _ in range(steps)])
        feeds[label] = (data.x_train[indices], data.y_train[indices], train.batch_size)
        _burst(models[label], *feeds[label], steps)  # traces: untimed
    found: dict[str, list[float]] = {label: [] for label in variants}
    order = list(variants)
    for number in range(rounds):
        for label in order if number % 2 == 0 else reversed(order):
            interrupts.check()
            found[label].append(_burst(models[label], *feeds[label], steps) / steps)
    return found
