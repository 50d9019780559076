"""Study capacity: baseline vs dropout and vs L2 across widths and depths, against parameter count."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from regbench import plots, report, stats
from regbench.studies.common import (
    QUICK_CONFIG, Findings, Preset, StudyContext, finish, interval, pp_effect, slope_interval,
)
from regbench.techniques import BASELINE, resolve_params

FULL = Preset(
    config={"train_size": 10_000, "epochs": 10},  # 10k images: room to overfit for the wide models
    seeds=3,
    grid={"widths": (32, 128, 512, 1024), "depths": (1, 3), "techniques": ("dropout", "l2")},
)
QUICK = Preset(config=QUICK_CONFIG, seeds=2,
               grid={"widths": (32, 64), "depths": (1,), "techniques": ("dropout",)})
SWEEPS = {"hidden": "widths x depths"}


def run(context: StudyContext) -> Findings:
    """Train baseline and each technique for every width and depth; relate effects to parameter count."""
    techniques = list(context.grid["techniques"])
    architectures = [(width,) * depth for depth in context.grid["depths"] for width in context.grid["widths"]]
    configs = [config for hidden in architectures for technique in [BASELINE, *techniques]
               for config in context.configs(technique=technique, hidden=hidden,
                                             technique_params=resolve_params((technique,), {}))]
    runs = context.runs(configs).runs
    effects = effect_table(runs, techniques)
    trends = trend_table(runs, techniques)
    return Findings(
        verdict=verdict(effects, trends),
        body=body(effects, trends),
        tables={"runs": runs, "effects_by_capacity": effects, "trend": trends},
        figures={"effect_and_gap_by_capacity": figure(effects, [BASELINE, *techniques])},
    )


def effect_table(runs: pd.DataFrame, techniques: list[str]) -> pd.DataFrame:
    """Return one row per architecture and arm: accuracy, gap, and the paired effect with its CI."""
    rows = []
    for hidden, model_runs in runs.groupby("hidden", sort=False):
        ok = stats.successful(model_runs)
        for technique in [BASELINE, *techniques]:
            mine = ok[ok["technique"] == technique]
            diffs = stats.paired_differences(model_runs, "test_accuracy", technique) if technique != BASELINE else []
            mean, low, high = interval(diffs)
            rows.append({"hidden": hidden, "depth": len(hidden.split(",")), "width": int(hidden.split(",")[0]),
                         "parameters": int(model_runs["parameter_count"].iloc[0]), "technique": technique,
                         "runs": len(mine), "test_accuracy_mean": mine["test_accuracy"].mean(),
                         "gap_mean": mine["gap"].mean(), "test_accuracy_diff": mean, "diff_ci_low": low,
                         "diff_ci_high": high})
    return pd.DataFrame(rows)


def trend_table(runs: pd.DataFrame, techniques: list[str]) -> pd.DataFrame:
    """Regress each technique's per-seed paired effect on log10(parameters): slope with its 95% CI."""
    rows = []
    for technique in techniques:
        x, y = [], []
        for _, model_runs in runs.groupby("hidden", sort=False):
            diffs = stats.paired_differences(model_runs, "test_accuracy", technique)
            x += [np.log10(model_runs["parameter_count"].iloc[0])] * len(diffs)
            y += list(diffs)
        fit = slope_interval(x, y)
        rows.append({"technique": technique, "pairs": fit["pairs"], "slope_per_decade": fit["slope"],
                     "slope_ci_low": fit["low"], "slope_ci_high": fit["high"], "p": fit["p"]})
    return pd.DataFrame(rows)


def verdict(effects: pd.DataFrame, trends: pd.DataFrame) -> str:
    """Say whether the techniques' benefit grows with parameter count, from the fitted slopes."""
    treated = effects[effects["technique"] != BASELINE]
    baseline = effects[effects["technique"] == BASELINE].sort_values("parameters")
    parts = []
    for trend in trends.itertuples():
        mine = treated[treated["technique"] == trend.technique].sort_values("parameters")
        small, large = mine.iloc[0], mine.iloc[-1]
        direction = ("grows" if trend.slope_ci_low > 0 else "shrinks" if trend.slope_ci_high < 0
                     else "shows no significant trend")
        parts.append(
            f"{trend.technique}'s paired effect {direction} with size: {trend.slope_per_decade * 100:+.2f} pp per "
            f"tenfold parameters [{trend.slope_ci_low * 100:+.2f}, {trend.slope_ci_high * 100:+.2f}], from "
            f"{pp_effect(small)} at {small.parameters:,} parameters to {pp_effect(large)} at {large.parameters:,}"
        )
    grows = (trends["slope_ci_low"] > 0).sum()
    return (f"The baseline's gap goes from {baseline['gap_mean'].iloc[0] * 100:.2f} pp "
            f"({baseline['parameters'].iloc[0]:,} parameters) to {baseline['gap_mean'].iloc[-1] * 100:.2f} pp "
            f"({baseline['parameters'].iloc[-1]:,}). " + "; ".join(parts) + f". The claim is "
            f"{'supported' if grows == len(trends) else 'supported for ' + str(grows) + ' of ' + str(len(trends)) + ' techniques'}"
            " by these runs.")


def body(effects: pd.DataFrame, trends: pd.DataFrame) -> str:
    """Render the figure and the tables."""
    rows = [[row.hidden, f"{row.parameters:,}", row.technique, row.runs, f"{row.test_accuracy_mean * 100:.2f}",
             f"{row.gap_mean * 100:.2f}",
             "(baseline)" if row.technique == BASELINE else
             f"{row.test_accuracy_diff * 100:+.2f} [{row.diff_ci_low * 100:+.2f}, {row.diff_ci_high * 100:+.2f}]"]
            for row in effects.itertuples()]
    trend_rows = [[row.technique, row.pairs, f"{row.slope_per_decade * 100:+.3f}",
                   f"[{row.slope_ci_low * 100:+.3f}, {row.slope_ci_high * 100:+.3f}]", f"{row.p:.4f}"]
                  for row in trends.itertuples()]
    return f"""## Results

![Paired effect and gap against parameter count](figure:effect_and_gap_by_capacity.png)

Left: paired test-accuracy difference to the baseline of the same architecture (95% t-interval); right: the
gap of every arm. Circles: one hidden layer; squares: three. Parameter count on a log axis.

### Trend of the paired effect with size

Least-squares line through every seed's paired difference against log10(parameters). It treats the pairs as
independent and one architecture with a large effect can carry it: read it together with the table below.

{report.markdown_table(["technique", "pairs", "slope (pp per 10x parameters)", "95% CI", "p"], trend_rows)}

### Every architecture and arm

{report.markdown_table(["hidden", "parameters", "arm", "runs", "test acc %", "gap (pp)",
                        "Δ test acc, pp [95% CI]"], rows)}
"""


def figure(effects: pd.DataFrame, arms: list[str]) -> Figure:
    """Draw paired effects and gaps against parameter count, per depth."""
    colours = plots.arm_colours(arms)
    fig = Figure(figsize=(13, 5))
    left, right = fig.subplots(1, 2)
    for (technique, depth), rows in effects.groupby(["technique", "depth"], sort=False):
        rows = rows.sort_values("parameters")
        style = {"color": colours[technique], "marker": "o" if depth == 1 else "s",
                 "linestyle": "-" if depth == 1 else "--", "label": f"{technique}, {depth} hidden"}
        right.plot(rows["parameters"], rows["gap_mean"] * 100, **style)
        if technique != BASELINE:
            errors = [(rows["test_accuracy_diff"] - rows["diff_ci_low"]) * 100,
                      (rows["diff_ci_high"] - rows["test_accuracy_diff"]) * 100]
            left.errorbar(rows["parameters"], rows["test_accuracy_diff"] * 100, yerr=errors, capsize=3, **style)
    left.axhline(0, color="black", linewidth=0.8)
    left.set(xscale="log", xlabel="parameters", ylabel="Δ test accuracy vs baseline (pp)", title="Paired effect")
    right.set(xscale="log", xlabel="parameters", ylabel="train − test accuracy (pp)", title="Generalization gap")
    return finish(fig, [left, right])
