"""Study data-size: every technique against the baseline as the training set grows from 100 to 50k images."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from regbench import plots, report, stats
from regbench.studies.common import QUICK_CONFIG, Findings, Preset, StudyContext, finish, interval, pp_effect
from regbench.techniques import BASELINE, TECHNIQUES, resolve_params

EVERY_TECHNIQUE = tuple(name for name in TECHNIQUES if name != BASELINE)
FULL = Preset(
    config={"train_size": 50_000},
    seeds=3,
    # Fewer images need more epochs to fit at all; 50k keeps the protocol's 10.
    grid={"epochs_by_size": {100: 40, 300: 40, 1_000: 40, 3_000: 30, 10_000: 20, 50_000: 10},
          "techniques": EVERY_TECHNIQUE},
)
QUICK = Preset(config=QUICK_CONFIG, seeds=2,
               grid={"epochs_by_size": {100: 1, 200: 1}, "techniques": ("dropout",)})
SWEEPS = {"train_size": "the sizes in epochs_by_size", "epochs": "set per size in epochs_by_size"}


def run(context: StudyContext) -> Findings:
    """Train every technique and the baseline at each size; tabulate paired effects and gaps."""
    sizes = sorted(context.grid["epochs_by_size"])
    techniques = list(context.grid["techniques"])
    configs = [
        config
        for size in sizes
        for technique in [BASELINE, *techniques]
        for config in context.configs(technique=technique, technique_params=resolve_params((technique,), {}),
                                      train_size=size, epochs=context.grid["epochs_by_size"][size])
    ]
    runs = context.runs(configs).runs
    effects = effect_table(runs, sizes, techniques)
    gaps = stats.successful(runs).groupby(["train_size", "technique"], sort=False).agg(
        runs=("seed", "size"), test_accuracy_mean=("test_accuracy", "mean"),
        test_accuracy_sd=("test_accuracy", "std"), gap_mean=("gap", "mean"), gap_sd=("gap", "std"),
        epochs_run_mean=("epochs_run", "mean"),
    ).reset_index()
    return Findings(
        verdict=verdict(effects, gaps, sizes),
        body=body(effects, gaps, sizes),
        tables={"runs": runs, "effects_by_size": effects, "gap_by_size": gaps},
        figures={"effect_and_gap_by_size": figure(effects, gaps, techniques)},
    )


def effect_table(runs: pd.DataFrame, sizes: list[int], techniques: list[str]) -> pd.DataFrame:
    """Return one row per size and technique: the paired test-accuracy and gap differences with CIs."""
    rows = []
    for size in sizes:
        at_size = runs[runs["train_size"] == size]
        for technique in techniques:
            diffs = stats.paired_differences(at_size, "test_accuracy", technique)
            mean, low, high = interval(diffs)
            gap_mean, gap_low, gap_high = interval(stats.paired_differences(at_size, "gap", technique))
            rows.append({"train_size": size, "technique": technique, "pairs": len(diffs),
                         "test_accuracy_diff": mean, "diff_ci_low": low, "diff_ci_high": high,
                         "gap_diff": gap_mean, "gap_diff_ci_low": gap_low, "gap_diff_ci_high": gap_high})
    return pd.DataFrame(rows)


def verdict(effects: pd.DataFrame, gaps: pd.DataFrame, sizes: list[int]) -> str:
    """State from the numbers whether the gap and the techniques' benefits are largest at small sizes."""
    baseline = gaps[gaps["technique"] == BASELINE].set_index("train_size")
    smallest, largest = sizes[0], sizes[-1]
    by_technique = effects.pivot(index="technique", columns="train_size", values="test_accuracy_diff")
    more_at_small = [t for t in by_technique.index if by_technique.loc[t, smallest] > by_technique.loc[t, largest]]
    significant = effects[effects["diff_ci_low"] > 0]
    best = effects.loc[effects["test_accuracy_diff"].idxmax()]
    helped = (", ".join(f"{row.technique} at {row.train_size:,}" for row in significant.itertuples())
              or "no technique at any size")
    small_sizes = sizes[:max(1, len(sizes) // 2)]
    helped_small = significant[significant["train_size"].isin(small_sizes)]
    holds = ("supported" if len(more_at_small) > len(by_technique) / 2 and not helped_small.empty
             else "not supported")
    return (
        f"The baseline's gap falls from {baseline.loc[smallest, 'gap_mean'] * 100:.1f} pp at {smallest:,} images "
        f"to {baseline.loc[largest, 'gap_mean'] * 100:.1f} pp at {largest:,}. {len(more_at_small)} of "
        f"{len(by_technique)} techniques gain more (paired test accuracy) at {smallest:,} images than at "
        f"{largest:,}; a gain with its 95% CI above zero: {helped}. The largest mean gain is {best.technique} "
        f"at {best.train_size:,} images: {pp_effect(best)}. With every technique at its default strength, "
        f"the claim (most techniques gain more at {smallest:,} than at {largest:,} images, and some gain "
        f"significantly at {small_sizes[-1]:,} images or fewer) is {holds} by these runs."
    )


def body(effects: pd.DataFrame, gaps: pd.DataFrame, sizes: list[int]) -> str:
    """Render the figure and the tables of effects and gaps by size."""
    effect_rows = [[f"{row.train_size:,}", row.technique, row.pairs, pp_effect(row),
                    f"{row.gap_diff * 100:+.2f}"] for row in effects.itertuples()]
    gap_rows = [[f"{row.train_size:,}", row.technique, row.runs, f"{row.test_accuracy_mean * 100:.2f}",
                 f"{row.gap_mean * 100:.2f}", f"{row.epochs_run_mean:.1f}"] for row in gaps.itertuples()]
    return f"""## Results

![Paired effect and gap against training-set size](figure:effect_and_gap_by_size.png)

Left: each technique's paired test-accuracy difference to the baseline (mean over seeds, 95% t-interval).
Right: the generalization gap (training minus test accuracy) of every arm. Both against the number of
training images on a log axis. Validation is the same 10,000 held-out images at every size.

### Paired effects by size

{report.markdown_table(["train size", "technique", "pairs", "Δ test acc, pp [95% CI]", "Δ gap (pp)"], effect_rows)}

### Accuracy and gap of every arm

{report.markdown_table(["train size", "arm", "runs", "test acc %", "gap (pp)", "epochs run"], gap_rows)}
"""


def figure(effects: pd.DataFrame, gaps: pd.DataFrame, techniques: list[str]) -> Figure:
    """Draw the paired effect and the gap of every arm against the training size (log axis)."""
    colours = plots.arm_colours([BASELINE, *techniques])
    fig = Figure(figsize=(13, 5))
    left, right = fig.subplots(1, 2)
    for technique in techniques:
        rows = effects[effects["technique"] == technique]
        errors = [(rows["test_accuracy_diff"] - rows["diff_ci_low"]) * 100,
                  (rows["diff_ci_high"] - rows["test_accuracy_diff"]) * 100]
        left.errorbar(rows["train_size"], rows["test_accuracy_diff"] * 100, yerr=errors, marker="o", capsize=3,
                      color=colours[technique], label=technique)
    left.axhline(0, color="black", linewidth=0.8)
    left.set(xscale="log", xlabel="training images", ylabel="Δ test accuracy vs baseline (pp)",
             title="Paired effect of each technique")
    for technique in [BASELINE, *techniques]:
        rows = gaps[gaps["technique"] == technique]
        right.plot(rows["train_size"], rows["gap_mean"] * 100, marker="o", color=colours[technique],
                   linewidth=2.5 if technique == BASELINE else 1.2, label=technique)
    right.set(xscale="log", xlabel="training images", ylabel="train − test accuracy (pp)", title="Generalization gap")
    return finish(fig, [left, right])
