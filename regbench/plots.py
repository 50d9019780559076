"""Comparison figures drawn from result tables (each returns a Figure; none saves)."""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter, NullLocator

from regbench.techniques import BASELINE

_PALETTE = ("#4d4d4d", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
            "#17becf", "#bcbd22", "#393b79", "#637939", "#843c39", "#7b4173", "#8c6d31", "#3182bd", "#e6550d",
            "#31a354", "#756bb1", "#636363")  # the baseline's grey, then one strong colour per technique (no greys)
_BAND = "mean over seeds\n(band: min to max)"
_MARKERS = ("o", "s", "^", "D", "v", "P")  # one per round of the palette's colours
REACH = 4  # the forest plot shows intervals up to this many times the largest |mean| or margin
VERDICT_WIDTH = 30  # characters per line of a verdict written in a figure
TITLE_CHARS_PER_INCH = 11  # a title line's characters per inch of figure width, at the suptitle's font size
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _decade(value: float, position=None) -> str:
    """Label a log axis's decade as 10⁻³ (matplotlib's own labels are mathtext, a fifth of the figure's drawing)."""
    return "10" + str(round(math.log10(value))).translate(_SUPERSCRIPT) if value > 0 else ""


def baseline_name(label: str) -> str:
    """Name the reference arm in figure and report text: 'the baseline', or 'the baseline dropout' (--baseline)."""
    return "the baseline" if label == BASELINE else f"the baseline {label}"


def arm_markers(techniques: list[str], baseline: str = BASELINE) -> dict[str, str]:
    """Give every arm a marker that, with its colour (arm_colours), tells it from every other arm: the colours
    repeat past the palette, the markers then change."""
    arms = [baseline, *[t for t in techniques if t != baseline]]
    return {arm: _MARKERS[max(0, index - 1) // (len(_PALETTE) - 1) % len(_MARKERS)] for index, arm in enumerate(arms)}


def arm_colours(techniques: list[str], baseline: str = BASELINE) -> dict[str, str]:
    """Give the `baseline` arm grey, first, and every other arm its own colour, the same in every figure."""
    arms = [baseline, *[t for t in techniques if t != baseline]]
    return {arm: _PALETTE[0] if index == 0 else _PALETTE[1 + (index - 1) % (len(_PALETTE) - 1)]
            for index, arm in enumerate(arms)}


def _mean_band(epochs: pd.DataFrame, technique: str, column: str) -> pd.DataFrame:
    """Return mean, min and max of `column` over seeds, per epoch, for one arm."""
    arm = epochs[epochs["technique"] == technique]
    return arm.groupby("epoch")[column].agg(["mean", "min", "max"])


def _curve(axes, epochs: pd.DataFrame, technique: str, column: str, colour: str, scale=1.0, **style):
    """Draw one arm's mean curve of `column` with its min-max band."""
    band = _mean_band(epochs, technique, column) * scale
    axes.plot(band.index, band["mean"], color=colour, **style)
    axes.fill_between(band.index, band["min"], band["max"], color=colour, alpha=0.15, linewidth=0)


def _epoch_axes(axes) -> None:
    """Grid the axes and keep epoch ticks whole."""
    axes.grid(alpha=0.3)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")


def _style_legend(axes) -> None:
    """Add the two line-style entries that every learning-curve legend explains."""
    axes.plot([], [], "k-", label="validation (solid)")
    axes.plot([], [], "k--", label="training, inference mode (dashed)")


def _fitted(title: str, figure: Figure) -> str:
    """The run's description in lines that fit the figure: the model and data, then the training, each wrapped."""
    width = int(figure.get_figwidth() * TITLE_CHARS_PER_INCH)
    parts = title.replace("; ", ";\n", 1).split("\n")
    return "\n".join(textwrap.fill(part, width, break_on_hyphens=False) for part in parts)


def learning_curves(epochs: pd.DataFrame, techniques: list[str], title: str, baseline: str = BASELINE) -> Figure:
    """Plot validation (solid) and training (dashed) accuracy and cross-entropy per epoch, per arm."""
    figure = Figure(figsize=(12, 5.6), layout="constrained")
    accuracy, crossentropy = figure.subplots(1, 2)
    for technique, colour in arm_colours(techniques, baseline).items():
        _curve(accuracy, epochs, technique, "val_accuracy", colour, 100, marker="o", markersize=3, label=technique)
        _curve(accuracy, epochs, technique, "train_inference_accuracy", colour, 100, linestyle="--")
        _curve(crossentropy, epochs, technique, "val_crossentropy", colour, marker="o", markersize=3)
        _curve(crossentropy, epochs, technique, "train_inference_crossentropy", colour, linestyle="--")
    accuracy.set(ylabel="accuracy (%)", title="Accuracy")
    crossentropy.set(ylabel="cross-entropy (nats; penalty excluded)", title="Cross-entropy")
    for axes in (accuracy, crossentropy):
        _epoch_axes(axes)
    _style_legend(accuracy)
    handles, labels = accuracy.get_legend_handles_labels()
    figure.legend(handles, labels, title=_BAND.replace("\n", " "), loc="outside lower center",
                  ncols=min(6, len(labels)), fontsize="small")
    figure.suptitle(f"Learning curves\n{_fitted(title, figure)}", fontsize="medium")
    return figure


def gap_curves(epochs: pd.DataFrame, techniques: list[str], title: str, baseline: str = BASELINE) -> Figure:
    """Plot the generalization gap per epoch (training minus validation accuracy) for each arm."""
    figure = Figure(figsize=(9, 4.5), layout="constrained")
    axes = figure.subplots()
    epochs = epochs.assign(gap=epochs["train_inference_accuracy"] - epochs["val_accuracy"])
    for technique, colour in arm_colours(techniques, baseline).items():
        _curve(axes, epochs, technique, "gap", colour, 100, marker="o", markersize=3, label=technique)
    axes.axhline(0, color="black", linewidth=0.8)
    axes.set(ylabel="training minus validation accuracy (percentage points)")
    _epoch_axes(axes)
    axes.legend(title=_BAND, loc="upper left", bbox_to_anchor=(1.01, 1))
    figure.suptitle(f"Generalization gap per epoch (training accuracy in inference mode)\n{_fitted(title, figure)}",
                    fontsize="medium")
    return figure


def paired_differences_plot(summary: pd.DataFrame, title: str) -> Figure:
    """Forest plot: each technique's mean paired test-accuracy difference with the interval at the level Holm
    tested it (thick, the one the verdict on 0 rests on) and the unadjusted 95% interval (thin), zero and the
    equivalence margin marked. The axis spans the means, zero and the margin with room for the intervals, up to
    REACH times the largest of those; an interval running past it ends in an arrow with its end written there."""
    treated = summary.iloc[1:].reset_index(drop=True)  # the summary's first row is the baseline arm
    colours = arm_colours(list(summary["technique"]), summary["technique"].iloc[0])
    markers = arm_markers(list(summary["technique"]), summary["technique"].iloc[0])
    margin = treated["margin"].dropna()
    limit = _forest_limit(treated, float(margin.iloc[0]) * 100 if len(margin) else 0.0)
    figure = Figure(figsize=(9, 2.2 + 0.5 * len(treated)), layout="constrained")
    axes = figure.subplots()
    positions = np.arange(len(treated))[::-1]
    sequential = "sequence_low" in treated  # --seeds auto: the thick bar is the sequence the verdict rests on
    thick = ("sequence_low", "sequence_high") if sequential else ("adj_ci_low", "adj_ci_high")
    for position, (_, row) in zip(positions, treated.iterrows()):
        colour = colours[row["technique"]]
        if pd.isna(row["test_accuracy_diff"]):
            axes.annotate("no successful pair", (0, position), xytext=(6, 0), textcoords="offset points",
                          va="center", color=colour)
            continue
        mean = float(row["test_accuracy_diff"]) * 100
        beyond: dict[int, list[float]] = {-1: [], 1: []}  # the ends of intervals that run off the axis, by side
        for low, high, width in (("diff_ci_low", "diff_ci_high", 1), (*thick, 3.5)):
            if pd.notna(row[low]):  # one pair gives no interval
                ends = float(row[low]) * 100, float(row[high]) * 100
                low_end, high_end = (min(max(end, -limit), limit) for end in ends)  # inside the axis
                # Centred on the interval, not the mean: a confidence sequence (the running intersection of
                # every look's) need not contain the last look's mean.
                axes.errorbar((low_end + high_end) / 2, position, xerr=(high_end - low_end) / 2, fmt="none",
                              ecolor=colour, capsize=3 if width == 1 else 0, elinewidth=width,
                              alpha=0.6 if width > 1 else 1)
                beyond[-1] += [ends[0]] if ends[0] < -limit else []
                beyond[1] += [ends[1]] if ends[1] > limit else []
        for sign, outside in beyond.items():
            if outside:  # an arrow at the edge, and where each interval ends (thin, then thick)
                axes.plot(sign * limit, position, marker=">" if sign > 0 else "<", color=colour, clip_on=False)
                axes.annotate(", ".join(f"{end:+.2f}" for end in outside), (sign * limit, position),
                              xytext=(-4 * sign, -11), textcoords="offset points", ha="right" if sign > 0 else "left",
                              fontsize="x-small", color=colour)
        axes.plot(mean, position, markers[row["technique"]], color=colour)
        if "verdict" in row and isinstance(row["verdict"], str):
            axes.annotate(textwrap.fill(row["verdict"], VERDICT_WIDTH), (mean, position), xytext=(0, 9),
                          textcoords="offset points", ha="center", fontsize="small", color=colour)
    axes.axvline(0, color="black", linewidth=1)
    if len(margin):
        axes.axvspan(-margin.iloc[0] * 100, margin.iloc[0] * 100, color="#2ca02c", alpha=0.12, linewidth=0,
                     label=f"±{margin.iloc[0] * 100:g} pp: the smallest effect that matters (--margin)")
        figure.legend(loc="outside lower center", fontsize="small")  # below the axes: no row hidden
    labels = [f"{t} ({n} pair{'' if n == 1 else 's'})" for t, n in zip(treated["technique"], treated["pairs"])]
    axes.set_yticks(positions, labels)
    axes.set_ylim(-0.7, len(treated) - 0.3)
    axes.set_xlim(-limit, limit)
    explained = (("thick: anytime-valid confidence sequence at 0.05/m, where bounded (verdicts rest on it)\n"
                  "thin, capped: unadjusted 95% t-interval (not valid under sequential seeds)\n"
                  "an arrow: an interval runs on to the value written")
                 if sequential else
                 ("thick: t-interval at the level Holm tested the technique (the verdict on 0 rests on it)\n"
                  "thin, capped: unadjusted 95% t-interval; an arrow: it runs on to the value written\n"
                  "verdicts: Holm-adjusted tests of 0 and of equivalence within the margin"))
    axes.set(xlabel=f"test accuracy: arm minus {baseline_name(summary['technique'].iloc[0])}, same seed "
                    f"(percentage points)\n{explained}")
    figure.suptitle(f"Paired test-accuracy difference\n{_fitted(title, figure)}", fontsize="medium")
    axes.grid(axis="x", alpha=0.3)
    return figure


def _forest_limit(treated: pd.DataFrame, margin: float) -> float:
    """Return the forest plot's half-width in pp: every interval end, but no more than REACH times the largest
    |mean| or the margin (so that one arm of few pairs does not squeeze the rest into a line)."""
    means = (treated["test_accuracy_diff"].abs() * 100).dropna()
    columns = [c for c in ("diff_ci_low", "diff_ci_high", "adj_ci_low", "adj_ci_high", "sequence_low", "sequence_high")
               if c in treated]
    ends = (treated[columns].abs() * 100).stack().dropna()
    scale = max([margin, *means, 0.01])
    return 1.08 * min(max([scale, *ends]), REACH * scale)


def weight_histograms(weights: pd.DataFrame, runs: pd.DataFrame, techniques: list[str], title: str,
                      baseline: str = BASELINE) -> Figure:
    """Plot the |w| histogram of every arm's final kernels (summed over seeds; log-scaled counts)."""
    arms = list(arm_colours(techniques, baseline).items())
    columns = min(3, len(arms))
    rows = math.ceil(len(arms) / columns)
    figure = Figure(figsize=(4.2 * columns, 2.9 * rows + 0.8), layout="constrained")
    grid = np.atleast_1d(figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)).ravel()
    ok = runs[runs["status"] == "ok"]
    for axes, (technique, colour) in zip(grid, arms):
        arm = weights[(weights["technique"] == technique) & weights["run_id"].isin(ok["run_id"])]
        counts = arm.groupby(["bin_low", "bin_high"])["count"].sum().reset_index()
        stats = ok[ok["technique"] == technique]
        label = (f"max |w| {stats['weights_max_abs'].mean():.2f}\n"
                 f"|w| < 1e-3: {stats['weights_near_zero_fraction'].mean() * 100:.1f}%")
        if counts["count"].sum() > 0:
            edges = np.maximum(counts["bin_low"].to_numpy(), 1e-7)  # the [0, 1e-6) bin starts at 1e-7 on a log axis
            widths = counts["bin_high"].to_numpy() - edges
            axes.bar(edges, counts["count"], width=widths, align="edge", color=colour, alpha=0.8, label=label)
            axes.legend(loc="upper right", fontsize="small", handlelength=0, handletextpad=0)
        else:
            axes.text(0.5, 0.5, "no successful run with a histogram", transform=axes.transAxes, ha="center")
        axes.set(xscale="log", yscale="log", title=technique)
        for axis in (axes.xaxis, axes.yaxis):  # a labelled tick per decade; minor ticks tripled the drawing time
            axis.set_minor_locator(NullLocator())
            axis.set_major_formatter(FuncFormatter(_decade))
        axes.grid(alpha=0.3)
    for axes in grid[len(arms):]:
        axes.set_visible(False)
    figure.supxlabel("|w| of kernel weights (log scale; the first bin holds |w| < 1e-6)")
    figure.supylabel("weights, summed over seeds (log scale)")
    figure.suptitle(f"Final kernel weight magnitudes per arm\n{_fitted(title, figure)}", fontsize="medium")
    return figure


def cost_plot(summary: pd.DataFrame, runs: pd.DataFrame, title: str) -> Figure:
    """Plot time per epoch and total training time per arm, relative to the baseline."""
    ok = runs[runs["status"] == "ok"]
    techniques = list(summary["technique"])  # the baseline arm first
    colours = arm_colours(techniques, techniques[0])
    figure = Figure(figsize=(11, 1.8 + 0.45 * len(techniques)), layout="constrained")
    panels = figure.subplots(1, 2, sharey=True)
    positions = np.arange(len(techniques))[::-1]
    for axes, column, label in ((panels[0], "seconds_per_epoch", "time per epoch"),
                                (panels[1], "train_seconds", "total training time")):
        means = ok.groupby("technique")[column].mean().reindex(techniques)
        ratios = means / means.iloc[0]
        axes.barh(positions, ratios, color=[colours[t] for t in techniques], alpha=0.85)
        for position, ratio, seconds in zip(positions, ratios, means):
            if pd.notna(ratio):
                axes.annotate(f"{ratio:.2f}x ({seconds:.1f} s)", (ratio, position), xytext=(4, 0),
                              textcoords="offset points", va="center", fontsize="small")
        axes.axvline(1, color="black", linewidth=1)
        axes.set(xlabel=f"{label} relative to {baseline_name(techniques[0])} (x)", title=label.capitalize())
        axes.set_xlim(0, max([1.0, *ratios.dropna()]) * 1.35)
        axes.grid(axis="x", alpha=0.3)
    panels[0].set_yticks(positions, techniques)
    figure.suptitle(f"Cost: training time per arm (mean over seeds)\n{_fitted(title, figure)}", fontsize="medium")
    return figure


def sensitivity(tuning: pd.DataFrame, tune: dict, title: str) -> Figure:
    """Plot each tuned setting's validation metric against each searched parameter: every tuning run (small
    marks), each trial's mean over the tuning seeds (circles), the chosen trial (star), the baseline's level."""
    searches = tune["searches"]
    panels = [(setting, name) for setting, params in searches.items() for name in params]
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(max(10.0, 4.3 * columns), 3.1 * rows + 1.3), layout="constrained")
    grid = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    metric = f"val_{tune['metric']}"
    unit = "validation accuracy (%)" if tune["metric"] == "accuracy" else "validation cross-entropy"
    scale = 100 if tune["metric"] == "accuracy" else 1
    baseline = tuning.loc[(tuning["setting"] == BASELINE) & (tuning["status"] == "ok"), metric] * scale
    colours = arm_colours(list(searches))
    for axes, (setting, name) in zip(grid, panels):
        partial = tuning[(tuning["setting"] == setting) & (tuning["status"] == "partial")]
        pruned = partial[~partial["trial"].isin(tuning.loc[(tuning["setting"] == setting)
                                                           & (tuning["status"] == "ok"), "trial"])]
        if len(pruned):  # where successive halving tried and dropped: a rug along the bottom, scores not comparable
            axes.plot(pruned.groupby("trial")[f"param_{name}"].first(), [0.0] * pruned["trial"].nunique(), "|",
                      color="#7f7f7f", markersize=12, transform=axes.get_xaxis_transform(),
                      label="trial pruned after a rung (value tried)")
        runs = tuning[(tuning["setting"] == setting) & (tuning["status"] == "ok")]
        trials = runs.groupby("trial").agg(value=(f"param_{name}", "first"), score=(metric, "mean"))
        axes.plot(runs[f"param_{name}"], runs[metric] * scale, ".", color=colours[setting], alpha=0.45,
                  label="one tuning run")
        axes.plot(trials["value"], trials["score"] * scale, "o", color=colours[setting], mfc="none",
                  label="trial: mean over tuning seeds")
        chosen = runs[runs["chosen"]]
        if len(chosen):
            axes.plot(chosen[f"param_{name}"].iloc[0], chosen[metric].mean() * scale, "*", markersize=15,
                      color="black", label="chosen")
        if len(baseline):
            axes.axhline(baseline.mean(), color="#4d4d4d", linestyle="--", linewidth=1,
                         label="none, no regularization (mean)")
        search = searches[setting][name]
        axes.set(xscale="log" if search["scale"] == "log" else "linear", xlabel=name, ylabel=unit, title=setting)
        axes.xaxis.set_minor_formatter(NullFormatter())  # a range within a decade: no crowd of minor labels
        axes.grid(alpha=0.3)
    for axes in grid[len(panels):]:
        axes.set_visible(False)
    if panels:
        grid[0].legend(fontsize="x-small", loc="best")
    budget = (f"{tune['trials']} trials per setting by successive halving, the best raced on up to "
              f"{len(tune['race_seeds'])} tuning seeds" if "race_seeds" in tune else
              f"{tune['trials']} trials x {len(tune['seeds'])} tuning seeds per setting")
    figure.suptitle(f"Tuning: validation {tune['metric']} (at each run's selected weights) against each searched "
                    f"parameter\n({budget})\n"
                    f"{_fitted(title, figure)}", fontsize="medium")
    return figure


def finish_panels(figure: Figure, panels) -> Figure:
    """Give every panel a light grid and a small legend, lay the figure out, and return it."""
    for axes in panels:
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.tight_layout()
    return figure

