"""The claims page's figures: DataFrames in, matplotlib Figures out (no store, no training)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from bnlab import metrics  # noqa: E402

SIDE_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red")


# Seeds are drawn as points over their bar up to this many.
MAX_POINTS = 10
BARS_CAPTION = (
    "Bars: mean over seeds; whiskers: 95 % t-interval of that mean (inside the measure's "
    "range); dots: each seed. A missing bar says what its runs did instead."
)


def plot_bars(bars: pd.DataFrame, title: str, measure: str) -> Figure:
    """One group of bars per setting, one bar per side (see `rules._bars` for the columns).

    A bar with no value is marked with what its runs did instead ("not reached 90% 3 of
    3", "diverged 3 of 3"), a bar missing some seeds with that count, so an empty slot is
    never read as zero.
    """
    settings = list(dict.fromkeys(bars["setting"]))
    sides = list(dict.fromkeys(bars["side"]))
    width = 0.8 / max(len(sides), 1)
    # Wide enough for the bars, narrow enough that the page does not shrink the text.
    width_inches = min(12.0, max(5.0, 0.45 * len(settings) * len(sides) + 2))
    figure, axis = plt.subplots(figsize=(width_inches, 4.2))
    positions = np.arange(len(settings))
    finite = bars["value"].to_numpy(dtype=float)
    top = np.nanmax(bars["high"].to_numpy(dtype=float)) if np.isfinite(finite).any() else 1.0
    for index, side in enumerate(sides):
        shown = bars[bars["side"] == side].set_index("setting").reindex(settings)
        where = positions + (index - (len(sides) - 1) / 2) * width
        values = shown["value"].to_numpy(dtype=float)
        low = np.where(np.isfinite(shown["low"]), values - shown["low"], 0)
        high = np.where(np.isfinite(shown["high"]), shown["high"] - values, 0)
        axis.bar(
            where,
            np.nan_to_num(values),
            width,
            yerr=np.vstack([low, high]),
            capsize=3,
            color=SIDE_COLOURS[index % len(SIDE_COLOURS)],
            label=str(side),
        )
        for x, (_, row) in zip(where, shown.iterrows(), strict=True):
            points = row["points"] if isinstance(row["points"], list) else []
            if 0 < len(points) <= MAX_POINTS:
                spread = np.linspace(-width / 5, width / 5, len(points)) if len(points) > 1 else [0]
                axis.plot(x + np.asarray(spread), points, "o", color="black", markersize=2.5)
            note = row["note"] if isinstance(row["note"], str) else ""
            if note:
                # Up from the axis: in the empty slot, or inside a bar that lacks some seeds.
                axis.text(x, 0, " " + note, rotation=90, ha="center", va="bottom", fontsize=7)
    axis.set_xticks(
        positions, settings, rotation=35 if len(settings) > 6 else 0, ha="right", fontsize=8
    )
    axis.set(ylabel=measure, title=title)
    if np.isfinite(top) and top > 0:
        axis.set_ylim(top=top * 1.1)
    axis.grid(alpha=0.3, axis="y")
    axis.legend(fontsize=8)
    figure.text(0.01, 0.01, BARS_CAPTION, fontsize=7, ha="left", va="bottom", wrap=True)
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    return figure


def plot_curves(points: pd.DataFrame, sides: dict[str, str], keys: tuple[str, ...], title: str):
    """A measure over training per side, one panel per key, in the style of Santurkar et
    al.'s figures: the mean over seeds as a line, the seeds' range as a band.

    Args:
        points: One row per logged point: run_id, key, step, value.
        sides: Each run's side (e.g. BN, no BN, Noisy BN).
        keys: The metric keys, one panel each.
    """
    figure, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.8), squeeze=False)
    points = points.assign(side=points["run_id"].map(sides))
    for axis, key in zip(axes[0], keys, strict=True):
        mine = points[points["key"] == key]
        for index, side in enumerate(dict.fromkeys(sides.values())):
            line = mine[mine["side"] == side].groupby("step")["value"]
            if not len(mine[mine["side"] == side]):
                continue
            mean, low, high = line.mean(), line.min(), line.max()
            colour = SIDE_COLOURS[index % len(SIDE_COLOURS)]
            axis.plot(mean.index, mean.to_numpy(), color=colour, label=f"{side} (mean)")
            axis.fill_between(mean.index, low.to_numpy(), high.to_numpy(), color=colour, alpha=0.2)
        values = mine["value"].to_numpy(dtype=float)
        if len(values) and (values > 0).all() and values.max() > 10 * values.min():
            axis.set_yscale("log")
        axis.set(xlabel="training step", ylabel=key.split("/")[-1].replace("_", " "))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle(f"{title}\nline: mean over seeds; band: the seeds' range", fontsize=10)
    figure.tight_layout()
    return figure


def plot_internals(points: pd.DataFrame, cells: list[tuple[str, str]]) -> Figure:
    """Inside the network over steps, BN against plain, one column per cell.

    Args:
        points: One row per logged point: cell (its name), side (BN or no BN), key
            (an internals metric), step, value.
        cells: (name, what happened) per column, e.g. ("sigmoid lr=0.05", "plain at chance").
    """
    figure, axes = plt.subplots(
        2, max(len(cells), 1), figsize=(5 * max(len(cells), 1), 6.4), squeeze=False
    )
    percentiles = (metrics.PREACT_P15, metrics.PREACT_P50, metrics.PREACT_P85)
    for column, (cell, what) in enumerate(cells):
        shown = points[points["cell"] == cell]
        for index, side in enumerate(("BN", "no BN")):
            colour = SIDE_COLOURS[index]
            mine = shown[shown["side"] == side]
            labels = (f"{side} 15th and 85th", f"{side} median", None)
            for key, style, label in zip(percentiles, (":", "-", ":"), labels, strict=True):
                line = mine[mine["key"] == key].sort_values("step")
                axes[0][column].plot(
                    line["step"], line["value"], linestyle=style, color=colour, label=label
                )
            norms = mine[mine["key"].str.startswith(metrics.GRAD_NORM_PREFIX)]
            total = norms.groupby("step")["value"].apply(lambda v: float(np.sqrt((v**2).sum())))
            axes[1][column].plot(total.index, total.to_numpy(), color=colour, label=side)
        axes[0][column].set(title=f"{cell} ({what})", ylabel="input to the last hidden activation")
        axes[1][column].set(xlabel="training step", ylabel="gradient norm (all layers)")
        axes[1][column].set_yscale("log")
        for axis in axes[:, column]:
            axis.grid(alpha=0.3)
            axis.legend(fontsize=7)
    figure.suptitle(
        "Inside the network: 15th, 50th, 85th percentiles (dotted: 15th and 85th) and "
        "gradient norm, seed 0",
        fontsize=10,
    )
    figure.tight_layout()
    return figure
