"""Plots and tables from DataFrames of recorded runs; nothing here trains or queries MLflow."""

from __future__ import annotations

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy import stats  # noqa: E402

from bnlab import metrics  # noqa: E402
from bnlab.report.comparison import Comparison, side_values  # noqa: E402
from bnlab.values import shown_value  # noqa: E402

# The variant's true side (BN in the BN study) and its false side; labels come from
# the comparison.
VARIANT_STYLE = {
    True: {"color": "tab:blue", "linestyle": "-"},
    False: {"color": "tab:orange", "linestyle": "--"},
}
# Several sides: one colour each; the reference (the last side) is styled as the false side.
PALETTE = ["tab:blue", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:cyan"]


def variant_style(comparison: Comparison, side: bool | str, sides: list) -> dict:
    """How a side is drawn: the true side blue, the false side (and the reference of several)
    dashed orange, every other side a colour of its own."""
    if not comparison.several:
        return VARIANT_STYLE[bool(side)]
    if side == sides[-1]:
        return VARIANT_STYLE[False]
    return {"color": PALETTE[sides.index(side) % len(PALETTE)], "linestyle": "-"}


BAND_CAPTION = (
    "thick line: mean over seeds; faint lines: each seed; band: 95 % t-interval of the mean"
)
ONE_SEED_CAPTION = "one seed per setting: each line is a single run, so no band is drawn"
TROUBLE = (metrics.DIVERGED, metrics.FAILED, metrics.KILLED)


def _draw_variant(axis, curves: pd.DataFrame, style: dict, label: str) -> None:
    """Draws one variant's curves in a panel: each seed faintly, the mean, and its interval."""
    table = curves.pivot_table(index="step", columns="seed", values="value")
    steps = table.index.to_numpy()
    if table.shape[1] > 1:
        for seed in table.columns:
            axis.plot(steps, table[seed], color=style["color"], linewidth=0.7, alpha=0.35, zorder=1)
    mean = table.mean(axis=1).to_numpy()
    axis.plot(
        steps,
        mean,
        color=style["color"],
        linestyle=style["linestyle"],
        linewidth=1.8,
        label=label,
        zorder=3,
    )
    counts = table.count(axis=1).to_numpy()
    if table.shape[1] > 1:
        # Steps where only one seed is left (the others diverged) get no band.
        half = (
            stats.t.ppf(0.975, np.maximum(counts - 1, 1))
            * table.std(axis=1, ddof=1)
            / np.sqrt(counts)
        )
        half = np.where(counts > 1, half, np.nan)
        axis.fill_between(
            steps,
            np.clip(mean - half, 0, 1),
            np.clip(mean + half, 0, 1),
            color=style["color"],
            alpha=0.18,
            linewidth=0,
            zorder=2,
        )
    for _, run in curves.groupby("run_id"):
        if run["outcome"].iloc[0] in TROUBLE:
            last = run.iloc[-1]
            axis.plot(
                last["step"],
                last["value"],
                marker="X",
                markersize=9,
                color=style["color"],
                linestyle="none",
            )
            axis.annotate(
                run["outcome"].iloc[0],
                (last["step"], last["value"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
                color=style["color"],
            )


def plot_comparison_grid(
    curves: pd.DataFrame,
    activations: list,
    lrs: list,
    comparison: Comparison,
    title: str = "",
    chance: float | None = None,
) -> Figure:
    """The headline figure: validation accuracy against step, one side against the other, per cell.

    Args:
        curves: One row per point: the comparison's row, column and variant keys (activation,
            lr, bn), seed, run_id, outcome, step, value.
        activations: Panel rows (values of the row key), in order.
        lrs: Panel columns (values of the column key), in order.
        title: Figure title.
        comparison: Which keys are rows, columns and the variant, and its labels.
    """
    rows, columns = max(len(activations), 1), max(len(lrs), 1)
    seeds = int(curves.groupby(comparison.keys)["seed"].nunique().max()) if len(curves) else 0
    sides = comparison.sides(curves[comparison.variant].unique() if len(curves) else [])
    figure, axes = plt.subplots(
        rows, columns, figsize=(4.2 * columns, 3.3 * rows), sharex=True, sharey=True, squeeze=False
    )
    for row, activation in enumerate(activations):
        for column, lr in enumerate(lrs):
            axis = axes[row][column]
            cell = curves[
                (curves[comparison.row] == activation) & (curves[comparison.column] == lr)
            ]
            for index, side in enumerate(sides):
                variant = cell[cell[comparison.variant] == side]
                if variant.empty:
                    axis.text(
                        0.5,
                        0.5 - 0.1 * index,
                        f"{comparison.label(side)}: no runs",
                        transform=axis.transAxes,
                        ha="center",
                        color="grey",
                    )
                else:
                    style = variant_style(comparison, side, sides)
                    _draw_variant(axis, variant, style, comparison.label(side))
            _chance_line(axis, chance)
            axis.set_title(f"{activation}, {comparison.column}={shown_value(lr)}", fontsize=11)
            axis.set_ylim(0, 1.02)
            axis.grid(alpha=0.3)
            if row == rows - 1:
                axis.set_xlabel("training step")
            if column == 0:
                axis.set_ylabel("validation accuracy")
    handles, labels = [], []
    for axis in figure.axes:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        figure.legend(handles, labels, loc="upper right", fontsize=11)
    figure.suptitle(title or f"Validation accuracy, {comparison.title}", fontsize=13)
    figure.text(
        0.01,
        0.005,
        f"{BAND_CAPTION if seeds > 1 else ONE_SEED_CAPTION}; dotted: chance; "
        "X: run diverged/failed/killed",
        fontsize=8,
        color="dimgrey",
    )
    figure.tight_layout(rect=(0, 0.02, 0.92, 0.96))
    return figure


def plot_lr_sensitivity(
    variants: pd.DataFrame, comparison: Comparison, chance: float | None = None
) -> Figure:
    """Best validation accuracy against the column key (the learning rate), every side, one
    panel per row value (activation)."""
    activations = sorted(variants[comparison.row].unique()) or ["(none)"]
    sides = comparison.sides(variants[comparison.variant].unique() if len(variants) else [])
    column = comparison.column
    numeric = pd.api.types.is_numeric_dtype(variants[column])
    figure, axes = plt.subplots(
        1, len(activations), figsize=(4.5 * len(activations), 3.6), sharey=True, squeeze=False
    )
    for axis, activation in zip(axes[0], activations, strict=True):
        subset = variants[variants[comparison.row] == activation]
        for side in sides:
            line = subset[subset[comparison.variant] == side].sort_values(column)
            if not line.empty:
                style = variant_style(comparison, side, sides)
                interval = line.get("best_val_accuracy ci95")
                axis.errorbar(
                    line[column] if numeric else line[column].astype(str),
                    line["best_val_accuracy"],
                    yerr=None if interval is None or interval.isna().all() else interval,
                    marker="o",
                    capsize=3,
                    color=style["color"],
                    linestyle=style["linestyle"],
                    label=comparison.label(side),
                )
        _chance_line(axis, chance)
        if numeric:
            _tick_learning_rates(axis, sorted(subset[column].unique()))
        xlabel = "learning rate" if column in ("lr", "optimizer.learning_rate") else column
        axis.set(title=activation, xlabel=xlabel, ylim=(0, 1.02))
        axis.grid(alpha=0.3, which="both")
        axis.legend()
    axes[0][0].set_ylabel("best validation accuracy")
    figure.suptitle("Learning-rate sensitivity (mean over seeds, bars: 95 % t-interval)")
    figure.tight_layout()
    return figure


def _tick_learning_rates(axis, lrs: list[float]) -> None:
    """A log axis ticked at exactly the learning rates swept, written as typed (0.05)."""
    axis.set_xscale("log")
    if lrs:
        axis.set_xticks(lrs, [f"{lr:g}" for lr in lrs])
        axis.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def plot_optimization_history(trials: pd.DataFrame, study: str) -> Figure:
    """Objective of every trial by number, coloured by state, with the best so far."""
    figure, axis = plt.subplots(figsize=(7, 3.8))
    colours = {"COMPLETE": "tab:blue", "PRUNED": "tab:grey", "FAIL": "tab:red"}
    for state, group in trials.groupby("state") if not trials.empty else []:
        axis.scatter(
            group["number"],
            group["value"],
            label=state.lower(),
            color=colours.get(state, "black"),
            s=25,
        )
    complete = trials[trials["state"] == "COMPLETE"] if not trials.empty else trials
    if not complete.empty:
        axis.step(
            complete["number"],
            complete["value"].cummax(),
            where="post",
            color="tab:green",
            label="best so far",
        )
    axis.set(
        xlabel="trial",
        ylabel="objective (best validation accuracy)",
        title=f"Optimization history — {study}",
    )
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return figure


def plot_param_importances(importances: dict[str, float], study: str) -> Figure:
    """fANOVA importance of each searched parameter, as horizontal bars."""
    figure, axis = plt.subplots(figsize=(6, 0.6 * max(len(importances), 2) + 1.2))
    if importances:
        names = list(importances)[::-1]
        axis.barh(names, [importances[name] for name in names], color="tab:blue")
    else:
        axis.text(0.5, 0.5, "too few complete trials", ha="center", transform=axis.transAxes)
    axis.set(xlabel="importance (fANOVA)", title=f"Parameter importances — {study}")
    figure.tight_layout()
    return figure


def plot_search_lr(
    runs: pd.DataFrame,
    study: str,
    comparison: Comparison,
    chance: float | None = None,
) -> Figure:
    """Each trial's best validation accuracy against its learning rate, coloured by side (the
    comparison's column key and variant)."""
    figure, axis = plt.subplots(figsize=(7, 3.8))
    if not runs.empty:
        runs = runs.assign(
            side_flag=side_values(runs, comparison).map(comparison.side),
            lr_value=runs[comparison.column].astype(float),
        )
        sides = comparison.sides(runs["side_flag"].unique())
        for bn in sides:
            group = runs[runs["side_flag"] == bn]
            style = variant_style(comparison, bn, sides)
            pruned = group["outcome"] == metrics.PRUNED
            axis.scatter(
                group.loc[~pruned, "lr_value"],
                group.loc[~pruned, metrics.BEST_VAL_ACCURACY],
                color=style["color"],
                label=comparison.label(bn),
                s=30,
            )
            axis.scatter(
                group.loc[pruned, "lr_value"],
                group.loc[pruned, metrics.BEST_VAL_ACCURACY],
                facecolors="none",
                edgecolors=style["color"],
                s=30,
                label=f"{comparison.label(bn)} (pruned)",
            )
    _chance_line(axis, chance)
    axis.set_xscale("log")
    axis.set(
        xlabel="learning rate",
        ylabel="best validation accuracy",
        ylim=(0, 1.02),
        title=f"Best validation accuracy against learning rate — {study}",
    )
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def _chance_line(axis, chance: float | None) -> None:
    """Chance accuracy, dotted, when the runs' class count is known."""
    if chance is not None:
        axis.axhline(chance, color="grey", linewidth=0.8, linestyle=":")
