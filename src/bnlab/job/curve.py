"""A run's own learning-curve figure, saved with the run."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from bnlab import metrics


def history_frame(history: list[dict[str, float]]) -> pd.DataFrame:
    """One row per evaluation: `step` and the curve metrics."""
    return pd.DataFrame(history)


def plot_learning_curve(history: pd.DataFrame, title: str = "") -> Figure:
    """Loss and accuracy of one run against the global training step.

    Every job draws one, so its layout is fixed rather than computed (matplotlib's
    `tight_layout` and a legend placed "best" draw the figure an extra time): a third of
    the figure's cost.
    """
    figure = Figure(figsize=(9, 3.4), dpi=80)
    loss_axis, accuracy_axis = figure.subplots(1, 2)
    for name, style in ((metrics.TRAIN_LOSS, "--"), (metrics.VAL_LOSS, "-")):
        if name in history:
            loss_axis.plot(history["step"], history[name], style, label=name)
    for name, style in ((metrics.TRAIN_ACCURACY, "--"), (metrics.VAL_ACCURACY, "-")):
        if name in history:
            accuracy_axis.plot(history["step"], history[name], style, label=name)
    loss_axis.set(xlabel="training step", ylabel="loss")
    accuracy_axis.set(xlabel="training step", ylabel="accuracy", ylim=(0, 1))
    # Losses mostly fall and accuracies rise: those corners stay clear of the curves.
    for axis, corner in ((loss_axis, "upper right"), (accuracy_axis, "lower right")):
        axis.grid(alpha=0.3)
        axis.legend(loc=corner)
    figure.suptitle(title)
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.15, top=0.87, wspace=0.22)
    return figure
