"""Study capacity: does the benefit of dropout and L2 grow with the number of parameters?

In a regime where the baseline's gap grows with its width (a small training set, trained long), each width is
compared with each technique at a fixed strength and at a strength tuned on validation for that width (Optuna,
on tuning seeds of their own). Seeds are the unit of every trend.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from regbench import plots, stats, wording
from regbench.config import DEFAULT_TUNE_SEEDS
from regbench.studies.context import QUICK_CONFIG, Findings, Preset, StudyContext
from regbench.techniques import BASELINE, resolve_params
from regbench.tune import TuneRequest, plan_tuning, search_all

FULL = Preset(
    config={"train_size": 1_000, "epochs": 50},  # few images, trained long: wide models memorize them
    seeds=5,
    grid={"widths": (8, 32, 128, 512, 2048), "techniques": ("dropout", "l2"), "tune_trials": 6},
)
QUICK = Preset(config=QUICK_CONFIG, seeds=2,
               grid={"widths": (8, 64), "techniques": ("dropout",), "tune_trials": 1})
SWEEPS = {"hidden": "one hidden layer of each width in the grid"}
PER_TENFOLD = "tenfold parameters"  # what a trend's slope is per: x is log10(parameters)


def run(context: StudyContext) -> Findings:
    """Tune each technique per width on the tuning seeds; train the baseline and each technique at its fixed and its
    tuned strength per width; relate the gap and the paired effects to the parameter count."""
    techniques, widths = list(context.grid["techniques"]), context.grid["widths"]
    request = TuneRequest(trials=context.grid["tune_trials"], seeds=DEFAULT_TUNE_SEEDS,
                          race_seeds=len(DEFAULT_TUNE_SEEDS))  # no race: the study's budget as declared
    fixed = tuple((technique, resolve_params((technique,), {})) for technique in techniques)
    plans = {width: plan_tuning(fixed, replace(context.base, hidden=(width,)), request) for width in widths}
    outcomes, _ = search_all(list(plans.values()), lambda todo: context.runs(todo).runs, "final")  # all at once
    configs, labels, tuned = [], {}, {}
    for width, outcome in zip(plans, outcomes):
        settings = {BASELINE: (BASELINE, ()), **{f"{t} fixed": (t, p) for t, p in fixed},
                    **{f"{t} tuned": (t, p) for t, p in outcome.settings}}
        tuned[width] = {t: dict(p) for t, p in outcome.settings}
        for arm, (technique, params) in settings.items():
            for config in context.configs(hidden=(width,), technique=technique, technique_params=params):
                configs.append(config)
                labels[config.run_id] = arm
    runs = context.runs(configs).runs
    runs["arm"] = runs["run_id"].map(labels)
    runs["width"] = runs["hidden"].astype(str).str.split(",").str[0].astype(int)
    runs["log10_parameters"] = np.log10(runs["parameter_count"])
    arms = [arm for arm in dict.fromkeys(runs["arm"]) if arm != BASELINE]
    effects = effect_table(runs, arms)
    def family(kept: pd.DataFrame) -> pd.DataFrame:
        return stats.trend_family(kept, "arm", arms, "width", "log10_parameters")

    trends = wording.with_leave_one_out(family(runs), stats.leave_one_out(family, runs, "width"), "trend", "width",
                                        PER_TENFOLD)
    return Findings(
        verdict=verdict(runs, effects, trends, tuned),
        body=body(runs, effects, trends, tuned, context),
        tables={"runs": runs, "effects_by_width": effects, "trends": trends},
        figures={"gap_and_effect_by_capacity": figure(runs, effects, arms)},
        choices=pd.DataFrame([{"width": w, "technique": t, **p} for w, ps in tuned.items() for t, p in ps.items()]),
    )


def effect_table(runs: pd.DataFrame, arms: list[str]) -> pd.DataFrame:
    """Return per width and arm the paired test-accuracy difference to that width's baseline, Holm-corrected
    across every width and arm."""
    differences = {(width, arm): stats.paired_differences(mine, "test_accuracy", arm, by="arm")
                   for width, mine in runs.groupby("width") for arm in arms}
    family = stats.effect_family(differences)
    family[["width", "arm"]] = pd.DataFrame(family.pop("effect").tolist(), index=family.index)
    return family


def verdict(runs: pd.DataFrame, effects: pd.DataFrame, trends: pd.DataFrame, tuned: dict) -> str:
    """Say whether the premise holds (the gap grows with size), then whether each arm's benefit grows with size."""
    ok = stats.successful(runs)
    baseline = ok[ok["arm"] == BASELINE].groupby("width")[["gap", "train_accuracy"]].mean()
    trend = trends.set_index("trend")
    premise = trend.loc["baseline gap"]
    holds = stats.trend_direction(premise) == 1 and premise["robust"]
    falls = stats.trend_direction(premise) == -1 and premise["robust"]
    first, last = baseline.index.min(), baseline.index.max()
    gap_range = (f"the baseline's gap goes from {baseline.loc[first, 'gap'] * 100:.2f} pp (width {first}) to "
                 f"{baseline.loc[last, 'gap'] * 100:.2f} pp (width {last}), "
                 f"{wording.slope_text(premise, PER_TENFOLD)}; {premise['one_left_out']}")
    premise_text = (f"The premise holds here: {gap_range}" if holds else
                    f"The premise is not shown: {gap_range}; without a gap that grows with size, the design cannot "
                    "tell whether bigger models need more regularization")
    if falls:
        premise_text += (f". Every width fits its training images (baseline training accuracy ≥ "
                         f"{baseline['train_accuracy'].min() * 100:.2f}%) and the wider ones generalize better, as "
                         "reported for over-parameterized networks (Neyshabur, Tomioka and Srebro 2015); the premise "
                         "belongs to models too small to fit their data, which this grid starts above: narrower "
                         "widths, another data size or label noise would show whether it appears there")
    arms = [name for name in trend.index if name != "baseline gap"]
    growing = [name for name in arms if stats.trend_direction(trend.loc[name]) == 1 and trend.loc[name, "robust"]]
    by_arm = "; ".join(f"{name}: {wording.slope_text(trend.loc[name], PER_TENFOLD)} ({trend.loc[name, 'one_left_out']})"
                       for name in arms)
    rates = ", ".join(f"{w}: {p['dropout']['rate']:.3g}" for w, p in tuned.items() if "dropout" in p)
    return (f"{premise_text}. Paired effect against the same width's baseline, per seed against log10(parameters) "
            f"(Holm-corrected across {len(trends)} trends): {by_arm}. "
            + (f"The effect rises with size for {_ends(effects, growing)}" if growing else
               "No arm's benefit grows detectably with size")
            + (f"; the dropout rate chosen on validation per width: {rates}" if rates else "")
            + ". The claim is " + ("supported by these runs" if holds and growing else
                                   "not supported by these runs: a rising effect without a growing gap is not the "
                                   "claim's mechanism" if growing else "not supported by these runs")
            + ". One family of models (one hidden layer), one data size and budget; 'no detectable trend' is not "
            "'no trend'.")


def _ends(effects: pd.DataFrame, trends: list[str]) -> str:
    """Name each arm's trend with the arm's paired effect at the smallest and at the largest width."""
    by_width = effects.pivot(index="width", columns="arm", values="diff_mean")
    def span(trend: str) -> str:
        return wording.span_text(by_width[trend.removesuffix(" − baseline")], lambda width: f"width {width}")

    return ", ".join(f"{trend} ({span(trend)})" for trend in trends)


def body(runs: pd.DataFrame, effects: pd.DataFrame, trends: pd.DataFrame, tuned: dict,
         context: StudyContext) -> str:
    """Render the figure and the tables."""
    ok = stats.successful(runs)
    arm_rows = [[width, f"{mine['parameter_count'].iloc[0]:,}", arm, len(rows),
                 f"{rows['test_accuracy'].mean() * 100:.2f}", f"{rows['train_accuracy'].mean() * 100:.2f}",
                 f"{rows['gap'].mean() * 100:.2f}"]
                for width, mine in ok.groupby("width") for arm, rows in mine.groupby("arm", sort=False)]
    effect_rows = [[row.width, row.arm, row.pairs, wording.effect_text(row.diff_mean, row.adj_ci_low, row.adj_ci_high),
                    wording.p_text(row.holm_p)] for row in effects.itertuples()]
    trend_rows = [[row.trend, row.pairs, wording.effect_text(row.diff_mean, row.adj_ci_low, row.adj_ci_high),
                   wording.p_text(row.holm_p), row.one_left_out] for row in trends.itertuples()]
    tuned_rows = [[width, technique, ", ".join(f"{k}={v:g}" for k, v in params.items())]
                  for width, settings in tuned.items() for technique, params in settings.items()]
    return f"""## Results

![The baseline's gap and each arm's paired effect against the parameter count](figure:gap_and_effect_by_capacity.png)

One hidden layer of each width, {context.base.train_size:,} training images, {context.base.epochs} epochs.
"fixed": the technique's default strength at every width; "tuned": the strength chosen for that width on
validation by `compare --tune`'s search ({context.grid['tune_trials']} Optuna trials on tuning seeds
{', '.join(map(str, DEFAULT_TUNE_SEEDS))}, which are not evaluation seeds).

### Trends (seeds are the unit)

Each seed gives one least-squares slope against log10(parameters) (of the baseline's gap, or of an arm's paired
effect on the baseline of the same width); the interval is over seeds, Holm-corrected across the {len(trends)}
trends. Each trend is fitted again with each width left out; a verdict that changes without one width rests on
that one arm, and the claim is not decided on it.

{wording.markdown_table(["trend", "seeds", "slope, pp per tenfold parameters [Holm CI]", "p (Holm)",
                         "with any one width left out"], trend_rows)}

### Every width and arm

{wording.markdown_table(["width", "parameters", "arm", "runs", "test acc %", "train acc %", "gap (pp)"], arm_rows)}

### Paired effects (Holm-corrected across all {len(effects)})

{wording.markdown_table(["width", "arm", "pairs", "Δ test acc, pp [Holm CI]", "p (Holm)"], effect_rows)}

### Strengths chosen on validation

{wording.markdown_table(["width", "technique", "chosen"], tuned_rows)}
"""


def figure(runs: pd.DataFrame, effects: pd.DataFrame, arms: list[str]) -> Figure:
    """Draw every arm's gap and each arm's paired effect against the parameter count."""
    ok = stats.successful(runs)
    parameters = ok.groupby("width")["parameter_count"].first()
    colours = plots.arm_colours([BASELINE, *arms])
    fig = Figure(figsize=(13, 5))
    left, right = fig.subplots(1, 2)
    for arm, rows in ok.groupby("arm", sort=False):
        means = rows.groupby("width")["gap"].mean()
        left.plot(parameters[means.index], means * 100, "o-" if arm == BASELINE else "o--", color=colours[arm],
                  linewidth=2.5 if arm == BASELINE else 1.2, label=arm)
    for arm in arms:
        rows = effects[effects["arm"] == arm].sort_values("width")
        errors = [(rows["diff_mean"] - rows["adj_ci_low"]) * 100, (rows["adj_ci_high"] - rows["diff_mean"]) * 100]
        right.errorbar(parameters[rows["width"]], rows["diff_mean"] * 100, yerr=errors, marker="o", capsize=3,
                       color=colours[arm], linestyle="-" if arm.endswith("tuned") else "--", label=arm)
    right.axhline(0, color="black", linewidth=0.8)
    left.set(xscale="log", xlabel="parameters", ylabel="train − test accuracy (pp)", title="Generalization gap")
    right.set(xscale="log", xlabel="parameters", ylabel="Δ test accuracy vs baseline (pp, Holm CI)",
              title="Paired effect")
    return plots.finish_panels(fig, [left, right])
