"""Study large-weights: which of L1, L2 and dropout tames a few very large weights, at matched accuracy cost."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from regbench import plots, report, stats
from regbench.studies.common import QUICK_CONFIG, Findings, Preset, StudyContext, arm_table, finish, interval, label_arms
from regbench.techniques import BASELINE, resolve_params

# Long training on a small subset lets the baseline grow a few large weights (the situation in question).
FULL = Preset(
    config={"train_size": 1_000, "epochs": 60},
    seeds=3,
    grid={"settings": {"l1": ("l1", (1e-5, 1e-4, 1e-3)), "l2": ("l2", (1e-4, 1e-3, 1e-2)),
                       "dropout": ("rate", (0.2, 0.5, 0.8))},
          "accuracy_cost_pp": 1.0},
)
QUICK = Preset(config=QUICK_CONFIG, seeds=2,
               grid={"settings": {"l1": ("l1", (1e-4,)), "dropout": ("rate", (0.5,))}, "accuracy_cost_pp": 1.0})
SWEEPS = {}
METRICS = {  # column -> how the report names it
    "largest_unit_norm": "largest hidden unit's incoming ‖w‖₂",
    "largest_over_median_unit": "largest / median unit ‖w‖₂",
    "weights_max_abs": "max |w|",
    "weights_top1pct_share": "share of Σ|w| in the top 1% of weights",
    "weights_near_zero_fraction": "fraction of |w| < 1e-3",
    "weights_l2": "‖w‖₂",
}


def run(context: StudyContext) -> Findings:
    """Train the baseline and every setting; match settings by accuracy cost; compare weight statistics."""
    settings = context.grid["settings"]
    configs = context.sweep_configs(settings)
    models = context.models(configs)
    tables = context.runs(configs)
    units = pd.DataFrame([{"run_id": config.run_id, **unit_norms(model)} for config, model in zip(configs, models)])
    runs = label_arms(tables.runs).merge(units, on="run_id")
    arms = arm_table(runs, list(dict.fromkeys(runs["technique"])))
    chosen = choose_matched(arms, settings, context.grid["accuracy_cost_pp"] / 100)
    effects = weight_effects(runs, chosen)
    weights = tables.weights.assign(technique=tables.weights["run_id"].map(runs.set_index("run_id")["technique"]))
    return Findings(
        verdict=verdict(arms, effects, chosen, context.grid["accuracy_cost_pp"]),
        body=body(arms, effects, runs, chosen),
        tables={"runs": runs, "arms": arms, "weight_effects": effects},
        figures={"weight_histograms": plots.weight_histograms(weights, runs, [BASELINE, *chosen.values()],
                                                              "the baseline and each matched setting"),
                 "weight_statistics": figure(runs, settings)},
    )


def unit_norms(model: keras.Model) -> dict:
    """Return the largest incoming weight norm over all hidden units, and its ratio to the median unit's."""
    hidden = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][:-1]  # not the output
    norms = np.concatenate([np.linalg.norm(keras.ops.convert_to_numpy(layer.kernel), axis=0) for layer in hidden])
    return {"largest_unit_norm": float(norms.max()), "largest_over_median_unit": float(norms.max() / np.median(norms))}


def choose_matched(arms: pd.DataFrame, settings: dict, cost: float) -> dict[str, str]:
    """Pick per technique the strongest setting whose mean test accuracy is within `cost` of the baseline's."""
    baseline = arms.loc[arms["arm"] == BASELINE, "test_accuracy_mean"].iloc[0]
    chosen = {}
    for technique in settings:
        mine = arms[arms["arm"].str.split(" ").str[0] == technique]  # listed weakest first
        within = mine[mine["test_accuracy_mean"] >= baseline - cost]
        chosen[technique] = (within if len(within) else mine).iloc[-1 if len(within) else 0]["arm"]
    return chosen


def weight_effects(runs: pd.DataFrame, chosen: dict[str, str]) -> pd.DataFrame:
    """Return per chosen arm and metric: the mean, and the paired log ratio (max |w|) or difference, with CIs."""
    rows = []
    ok = stats.successful(runs)
    for technique, arm in chosen.items():
        for metric in METRICS:
            treated = ok[ok["technique"] == arm].set_index("seed")[metric]
            base = ok[ok["technique"] == BASELINE].set_index("seed")[metric]
            seeds = treated.index.intersection(base.index)
            ratio, low, high = interval(np.log(treated[seeds] / base[seeds]))
            rows.append({"technique": technique, "arm": arm, "metric": metric, "pairs": len(seeds),
                         "baseline_mean": base[seeds].mean(), "treated_mean": treated[seeds].mean(),
                         "ratio": np.exp(ratio), "ratio_ci_low": np.exp(low), "ratio_ci_high": np.exp(high)})
    return pd.DataFrame(rows)


def verdict(arms: pd.DataFrame, effects: pd.DataFrame, chosen: dict, cost_pp: float) -> str:
    """Name the technique that shrinks the largest weights most and the one that sparsifies, from the numbers."""
    max_abs = effects[effects["metric"] == "weights_max_abs"].set_index("technique")
    unit = effects[effects["metric"] == "largest_unit_norm"].set_index("technique")
    zeros = effects[effects["metric"] == "weights_near_zero_fraction"].set_index("technique")
    share = effects[effects["metric"] == "weights_top1pct_share"].set_index("technique")
    shrinking = unit[unit["ratio_ci_high"] < 1]
    sparsifying = zeros[zeros["ratio_ci_low"] > 1]
    cost = {t: arms.loc[arms["arm"] == arm, "test_accuracy_diff"].iloc[0] for t, arm in chosen.items()}
    listing = "; ".join(
        f"{chosen[t]} (test acc {cost[t] * 100:+.2f} pp): largest unit norm ×{row.ratio:.2f} "
        f"[{row.ratio_ci_low:.2f}, {row.ratio_ci_high:.2f}] of the baseline's {row.baseline_mean:.2f}, max |w| "
        f"×{max_abs.loc[t, 'ratio']:.2f} [{max_abs.loc[t, 'ratio_ci_low']:.2f}, {max_abs.loc[t, 'ratio_ci_high']:.2f}], "
        f"top-1% share {share.loc[t, 'treated_mean']:.1%} (baseline {share.loc[t, 'baseline_mean']:.1%}), "
        f"near-zero {zeros.loc[t, 'treated_mean']:.1%} (baseline {zeros.loc[t, 'baseline_mean']:.1%})"
        for t, row in unit.iterrows())
    shrinks = (f"{shrinking['ratio'].idxmin()} shrinks the largest neurons most directly (largest unit norm "
               f"×{shrinking['ratio'].min():.2f})" if len(shrinking)
               else "none shrinks the largest unit's weights significantly")
    sparsifies = (f"{sparsifying['treated_mean'].idxmax()} sparsifies most "
                  f"({sparsifying['treated_mean'].max():.1%} of weights below 1e-3)" if len(sparsifying)
                  else "none raises the near-zero fraction significantly")
    spread = effects[effects["metric"] == "largest_over_median_unit"]["baseline_mean"].iloc[0]
    over = [t for t in chosen if -cost[t] * 100 > cost_pp]
    fallback = (f" No setting of {', '.join(over)} stays within {cost_pp:g} pp of the baseline's accuracy: its "
                "weakest setting is shown instead, so its costs are not matched." if over else "")
    return (f"The baseline's largest hidden unit has {spread:.2f}x the median unit's weight norm. At an accuracy "
            f"cost of at most {cost_pp:g} pp (strongest such setting per technique): {listing}.{fallback} "
            f"Of these, {shrinks}; {sparsifies}.")


def body(arms: pd.DataFrame, effects: pd.DataFrame, runs: pd.DataFrame, chosen: dict) -> str:
    """Render the figures and tables."""
    ok = stats.successful(runs)
    arm_rows = []
    for row in arms.itertuples():
        mine = ok[ok["technique"] == row.arm]
        arm_rows.append([row.arm + (" **(matched)**" if row.arm in chosen.values() else ""), row.runs,
                         f"{row.test_accuracy_mean * 100:.2f}",
                         "–" if row.arm == BASELINE else f"{row.test_accuracy_diff * 100:+.2f}",
                         *(f"{mine[m].mean():.3g}" for m in METRICS)])
    effect_rows = [[row.arm, METRICS[row.metric], row.pairs, f"{row.baseline_mean:.4g}", f"{row.treated_mean:.4g}",
                    f"×{row.ratio:.3f} [{row.ratio_ci_low:.3f}, {row.ratio_ci_high:.3f}]"]
                   for row in effects.itertuples()]
    return f"""## Results

![Weight statistics against strength](figure:weight_statistics.png)

Every setting's weight statistics (mean over seeds), against strength; dashed: the baseline. A hidden unit's
norm is the ‖w‖₂ of its incoming weights; the other statistics are over all kernels.

![Weight histograms](figure:weight_histograms.png)

### Every setting

{report.markdown_table(["arm", "runs", "test acc %", "Δ test acc (pp)", *METRICS.values()], arm_rows)}

### Matched settings against the baseline (paired by seed; ratio = geometric mean of treated / baseline)

{report.markdown_table(["arm", "statistic", "pairs", "baseline", "treated", "ratio [95% CI]"], effect_rows)}
"""


def figure(runs: pd.DataFrame, settings: dict) -> Figure:
    """Draw max |w|, top-1% share and near-zero fraction against strength, one line per technique."""
    ok = stats.successful(runs)
    baseline = ok[ok["technique"] == BASELINE]
    colours = plots.arm_colours([BASELINE, *settings])
    fig = Figure(figsize=(15, 4.5))
    panels = fig.subplots(1, 3)
    for axes, metric in zip(panels, ["largest_unit_norm", "weights_top1pct_share", "weights_near_zero_fraction"]):
        for technique, (param, values) in settings.items():
            means = [ok[ok["technique"] == f"{technique} {label}"][metric].mean()
                     for label in _labels(technique, param, values)]
            axes.plot(range(len(values)), means, "o-", color=colours[technique], label=technique)
        axes.axhline(baseline[metric].mean(), color=colours[BASELINE], linestyle="--", label="baseline")
        axes.set(xlabel="strength step (weakest to strongest; see the table)", title=METRICS[metric])
        axes.set_xticks(range(max(len(v) for _, v in settings.values())))
    return finish(fig, panels)


def _labels(technique: str, param: str, values) -> list[str]:
    """Return the parameter part of the arm labels of a technique's settings, as label_arms writes them."""
    return [" ".join(f"{name}={value:g}" for name, value in resolve_params((technique,), {param: v}))
            for v in values]
