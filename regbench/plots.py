"""Comparison figures drawn from result tables (each returns a Figure; none saves)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from regbench.techniques import BASELINE

_PALETTE = ("#4d4d4d", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def arm_colours(techniques: list[str]) -> dict[str, str]:
    """Give the baseline grey and every technique its own colour, the same in every figure."""
    arms = [BASELINE, *[t for t in techniques if t != BASELINE]]
    return {arm: _PALETTE[index % len(_PALETTE)] for index, arm in enumerate(arms)}


def _mean_band(epochs: pd.DataFrame, technique: str, column: str) -> pd.DataFrame:
    """Return mean, min and max of `column` over seeds, per epoch, for one arm."""
    arm = epochs[epochs["technique"] == technique]
    return arm.groupby("epoch")[column].agg(["mean", "min", "max"])


def validation_accuracy_curves(epochs: pd.DataFrame, techniques: list[str], title: str) -> Figure:
    """Plot validation accuracy per epoch for each arm: mean over seeds, band from min to max."""
    figure = Figure(figsize=(8.5, 4.5), layout="constrained")
    axes = figure.subplots()
    for technique, colour in arm_colours(techniques).items():
        band = _mean_band(epochs, technique, "val_accuracy")
        axes.plot(band.index, band["mean"] * 100, color=colour, marker="o", markersize=3, label=technique)
        axes.fill_between(band.index, band["min"] * 100, band["max"] * 100, color=colour, alpha=0.2)
    axes.set(xlabel="epoch", ylabel="validation accuracy (%)")
    _finish(figure, axes, f"Validation accuracy per epoch\n{title}")
    axes.legend(title="mean over seeds\n(band: min to max)", loc="upper left", bbox_to_anchor=(1.01, 1))
    return figure


def _finish(figure: Figure, axes, title: str) -> None:
    """Title the figure, grid the axes and keep epoch ticks whole."""
    figure.suptitle(title, fontsize="medium")
    axes.grid(alpha=0.3)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def crossentropy_curves(epochs: pd.DataFrame, techniques: list[str], title: str) -> Figure:
    """Plot training (dashed) and validation (solid) cross-entropy per epoch for each arm."""
    figure = Figure(figsize=(8.5, 4.5), layout="constrained")
    axes = figure.subplots()
    for technique, colour in arm_colours(techniques).items():
        for column, style in (("train_crossentropy", "--"), ("val_crossentropy", "-")):
            band = _mean_band(epochs, technique, column)
            label = technique if column == "val_crossentropy" else None
            axes.plot(band.index, band["mean"], linestyle=style, color=colour, label=label)
            axes.fill_between(band.index, band["min"], band["max"], color=colour, alpha=0.12)
    axes.plot([], [], "k-", label="validation (solid)")
    axes.plot([], [], "k--", label="training (dashed)")
    axes.set(xlabel="epoch", ylabel="cross-entropy (nats; penalty excluded)")
    _finish(figure, axes, f"Training vs validation cross-entropy per epoch\n{title}")
    axes.legend(title="mean over seeds\n(band: min to max)", loc="upper left", bbox_to_anchor=(1.01, 1))
    return figure


def paired_differences_plot(summary: pd.DataFrame, title: str) -> Figure:
    """Plot each technique's mean paired test-accuracy difference with its 95% CI, zero marked."""
    treated = summary[summary["technique"] != BASELINE].reset_index(drop=True)
    colours = arm_colours(list(treated["technique"]))
    figure = Figure(figsize=(8.5, 2.2 + 0.5 * len(treated)), layout="constrained")
    axes = figure.subplots()
    positions = np.arange(len(treated))[::-1]
    for position, (_, row) in zip(positions, treated.iterrows()):
        if pd.isna(row["test_accuracy_diff"]):
            axes.annotate("no successful pair", (0, position), xytext=(6, 0), textcoords="offset points",
                          va="center", color=colours[row["technique"]])
            continue
        mean = float(row["test_accuracy_diff"]) * 100
        low, high = float(row["diff_ci_low"]) * 100, float(row["diff_ci_high"]) * 100
        error = [[mean - low], [high - mean]] if pd.notna(low) else None  # no interval from one pair
        axes.errorbar(mean, position, xerr=error, fmt="o", color=colours[row["technique"]], capsize=4)
    axes.axvline(0, color="black", linewidth=1)
    axes.set_yticks(positions, [f"{t} ({n} pair{'' if n == 1 else 's'})" for t, n in zip(treated["technique"], treated["pairs"])])
    axes.set_ylim(-0.7, len(treated) - 0.3)
    axes.set(xlabel="test accuracy: technique minus baseline, same seed (percentage points; 95% t-interval)")
    figure.suptitle(f"Paired test-accuracy difference\n{title}", fontsize="medium")
    axes.grid(axis="x", alpha=0.3)
    return figure
