"""Synthetic runs with the shape of the real experiment, logged without training.

A development tool, not part of the installed package (which never imports it):
the report's tests and its speed benchmark use it to exercise the store, the
query and the report exactly as real runs do, in seconds.
"""

from __future__ import annotations

import math

from bnlab import metrics, tracking
from bnlab.job.identity import SCHEME

CHANCE = metrics.chance_accuracy(10)


def curve(
    bn: bool, lr: float, activation: str, seed: int, points: int, eval_every: int
) -> tuple[list[dict[str, float]], str]:
    """A deterministic validation curve and its outcome.

    BN learns everywhere, fast; the plain network learns slowly at small
    learning rates, stays at chance with sigmoid at lr >= 0.01, and diverges
    with relu at lr >= 0.05.
    """
    if bn:
        rate, ceiling = 12.0, 0.985
    elif lr >= 0.05 and activation == "relu" or lr >= 0.01 and activation == "sigmoid":
        rate, ceiling = 0.0, CHANCE
    else:
        rate, ceiling = 4.0, 0.97
    diverges = not bn and activation == "relu" and lr >= 0.05
    history = []
    for index in range(1, points + 1):
        if diverges and index > points // 5:
            return history, metrics.DIVERGED
        progress = index / points
        accuracy = CHANCE + (ceiling - CHANCE) * (1 - math.exp(-rate * progress))
        accuracy += 0.002 * ((seed * 7 + index * 3) % 5 - 2)
        history.append(
            {
                "step": index * eval_every,
                metrics.VAL_ACCURACY: min(accuracy, 1.0),
                metrics.VAL_LOSS: 2.3 * (1 - accuracy) + 0.05,
                metrics.TRAIN_ACCURACY: min(accuracy + 0.01, 1.0),
                metrics.TRAIN_LOSS: 2.3 * (1 - accuracy),
            }
        )
    return history, metrics.FINISHED


def log_run(
    store: tracking.Store,
    *,
    bn: bool,
    lr: float,
    activation: str,
    seed: int,
    points: int = 20,
    eval_every: int = 50,
    parent_run_id: str | None = None,
    extra_params: dict | None = None,
    outcome: str | None = None,
) -> str:
    """Logs one synthetic job run the way a real job does; returns its run id."""
    history, natural = curve(bn, lr, activation, seed, points, eval_every)
    outcome = outcome or natural
    name = f"bn={str(bn).lower()} lr={lr:g} activation={activation} seed={seed}"
    run = store.start_run(
        name,
        {
            metrics.ROLE_TAG: "job",
            metrics.OUTCOME_TAG: "running",
            metrics.IDENTITY_SCHEME_TAG: str(SCHEME),
            metrics.CLASSES_TAG: "10",
        },
        parent_run_id,
    )
    params = {
        "bn": bn,
        "lr": lr,
        "activation": activation,
        "seed": seed,
        "model.bn": bn,
        "optimizer.learning_rate": lr,
        "model.activation": activation,
        "train.seed": seed,
        "optimizer._target_": "keras.optimizers.Adam",
        "train.steps": points * eval_every,
        "train.eval_every": eval_every,
        "data._target_": "bnlab.plugins.mnist.load_mnist_small",
        **(extra_params or {}),
    }
    run.log_params(params)
    for point in history:
        run.log_metrics({k: v for k, v in point.items() if k != "step"}, int(point["step"]))
    run.flush()
    if history and outcome != metrics.FAILED:
        best = max(point[metrics.VAL_ACCURACY] for point in history)
        run.log_metrics(
            {
                metrics.TEST_ACCURACY: history[-1][metrics.VAL_ACCURACY] - 0.005,
                metrics.BEST_VAL_ACCURACY: best,
            },
            history[-1]["step"],
        )
    run.end(outcome)
    return run.run_id
