"""A run's own learning-curve figure, saved with the run."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from bnlab import metrics  # noqa: E402


def history_frame(history: list[dict[str, float]]) -> pd.DataFrame:
    """One row per evaluation: `step` and the curve metrics."""
    return pd.DataFrame(history)


def plot_learning_curve(history: pd.DataFrame, title: str = "") -> Figure:
    """Loss and accuracy of one run against the global training step."""
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=80)
    for name, style in ((metrics.TRAIN_LOSS, "--"), (metrics.VAL_LOSS, "-")):
        if name in history:
            loss_axis.plot(history["step"], history[name], style, label=name)
    for name, style in ((metrics.TRAIN_ACCURACY, "--"), (metrics.VAL_ACCURACY, "-")):
        if name in history:
            accuracy_axis.plot(history["step"], history[name], style, label=name)
    loss_axis.set(xlabel="training step", ylabel="loss")
    accuracy_axis.set(xlabel="training step", ylabel="accuracy", ylim=(0, 1))
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    return figure
