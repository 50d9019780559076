"""Study batchnorm-noise: how noisy batch statistics are, and whether BatchNorm's effect follows the noise.

Batch size, steps and learning rate stay fixed; only the group over which ghost batch normalization computes its
statistics varies (g images of each batch), so the noise varies alone. A noise-free control normalizes with the
whole training set's statistics, recomputed every few steps and used as constants in training and inference.
"""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from regbench import plots, stats, wording
from regbench.config import STATISTICS_REFRESH_STEPS
from regbench.studies.context import QUICK_CONFIG, Findings, Preset, StudyContext
from regbench.techniques import BASELINE

FULL = Preset(
    config={"train_size": 10_240, "epochs": 20, "batch_size": 128},  # 80 whole batches per epoch, 1,600 steps
    seeds=5,
    grid={"groups": (4, 8, 16, 32, 64, 128), "noise_draws": 500},
)
QUICK = Preset(config={**QUICK_CONFIG, "batch_size": 48}, seeds=2, grid={"groups": (4, 8, 48), "noise_draws": 20})
SWEEPS = {"batch_size": "fixed by the study so that every group divides every batch",
          "train_size": "a multiple of the batch size, fixed by the study"}
CONTROL = "exact statistics"
METRICS = {"test_accuracy": "test accuracy", "gap": "gap"}


def arm_name(group: int) -> str:
    """Name the ghost-batchnorm arm of `group` images per statistics group."""
    return f"ghost g={group}"


def run(context: StudyContext) -> Findings:
    """Measure the noise of group statistics on a trained model; train the baseline, every group size and the
    noise-free control; relate the paired effects to the group size."""
    groups = context.grid["groups"]
    arms = {BASELINE: context.configs(technique=BASELINE, technique_params=()),
            **{arm_name(g): context.configs(technique="ghost-batchnorm", technique_params=(("group", g),))
               for g in groups},
            CONTROL: context.configs(technique="batchnorm", technique_params=(), variant="exact-statistics-bn")}
    configs = [config for arm in arms.values() for config in arm]
    labels = {config.run_id: arm for arm, configs_ in arms.items() for config in configs_}
    runs = context.runs(configs).runs
    runs["arm"] = runs["run_id"].map(labels)
    runs["group"] = runs["arm"].map({arm_name(g): g for g in groups})
    whole = context.models(arms[arm_name(max(groups))][:1])[0]  # statistics over whole batches: standard BN
    noise = noise_table(whole, context.split().x_train, groups, context.grid["noise_draws"])
    effects = effect_table(runs, groups)
    trends = wording.with_leave_one_out(trend_table(runs), stats.leave_one_out(trend_table, runs, "group"), "metric",
                                        "group size", "doubling")
    return Findings(
        verdict=verdict(noise, effects, trends, runs),
        body=body(noise, effects, trends, runs, context),
        tables={"runs": runs, "group_statistics_noise": noise, "effects": effects, "trends": trends},
        figures={"noise_and_effect_by_group": figure(noise, effects)},
    )


def noise_table(model: keras.Model, x: np.ndarray, groups, draws: int) -> pd.DataFrame:
    """Measure how far the first BatchNorm layer's per-unit group mean and variance stray from their population
    values over random groups of g training images, against sampling theory (medians over units)."""
    layer = next(layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    inputs = keras.Model(model.input, layer.input).predict(x, batch_size=2048, verbose=0).astype(np.float64)
    inputs = inputs.reshape(-1, inputs.shape[-1])  # conv: every position is a sample of its channel
    n = len(inputs)
    mu, sigma2 = inputs.mean(axis=0), inputs.var(axis=0)
    mu4 = ((inputs - mu) ** 4).mean(axis=0)
    live = sigma2 > 1e-12  # units that ever vary
    rng = np.random.default_rng(0)
    rows = []
    for g in groups:
        samples = np.stack([inputs[rng.choice(n, g, replace=False)] for _ in range(draws)])
        mean_error = np.sqrt(((samples.mean(axis=1) - mu) ** 2).mean(axis=0))
        var_error = np.sqrt(((samples.var(axis=1) - sigma2) ** 2).mean(axis=0))  # biased, as the layer computes it
        predicted_mean = np.sqrt(sigma2 / g * (n - g) / (n - 1))
        var_spread = (g - 1) / g * np.sqrt(np.maximum(mu4 - sigma2 ** 2 * (g - 3) / (g - 1), 0) / g)
        predicted_var = np.sqrt(var_spread ** 2 + (sigma2 / g) ** 2)  # spread and the biased estimate's offset
        rows.append({"group": g, "units": int(live.sum()),
                     "mean_error_over_sigma": float(np.median(mean_error[live] / np.sqrt(sigma2[live]))),
                     "mean_error_over_predicted": float(np.median(mean_error[live] / predicted_mean[live])),
                     "var_error_over_sigma2": float(np.median(var_error[live] / sigma2[live])),
                     "var_error_over_predicted": float(np.median(var_error[live] / predicted_var[live]))})
    return pd.DataFrame(rows)


def effect_table(runs: pd.DataFrame, groups) -> pd.DataFrame:
    """Return the paired effects of every group size against the baseline, the noise-free control and the whole
    batch (the least noise), and of the control against the baseline; Holm-corrected across them per metric."""
    whole = arm_name(max(groups))
    comparisons = {**{(arm_name(g), BASELINE): g for g in groups}, **{(arm_name(g), CONTROL): g for g in groups},
                   **{(arm_name(g), whole): g for g in groups if arm_name(g) != whole}, (CONTROL, BASELINE): np.nan}
    tables = []
    for metric in METRICS:
        differences = {pair: stats.paired_differences(runs, metric, *pair, by="arm") for pair in comparisons}
        family = stats.effect_family(differences)
        family[["arm", "against"]] = pd.DataFrame(family.pop("effect").tolist(), index=family.index)
        tables.append(family.assign(metric=metric, group=[comparisons[pair] for pair in differences]))
    return pd.concat(tables, ignore_index=True)


def trend_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Fit each seed's test accuracy and gap over the ghost arms against log2(group size); the slope's interval is
    taken across seeds (Holm-corrected across the two metrics). The control is a constant per seed, so this is
    also the trend of the effect against the control."""
    ghost = stats.successful(runs).dropna(subset=["group"]).assign(log2_group=lambda frame: np.log2(frame["group"]))
    slopes = {metric: stats.seed_slopes(ghost, "log2_group", metric) for metric in METRICS}
    return stats.effect_family(slopes).rename(columns={"effect": "metric"})


def _effect(effects: pd.DataFrame, metric: str, arm: str, against: str) -> pd.Series:
    """Return one paired effect's row."""
    return effects[(effects["metric"] == metric) & (effects["arm"] == arm) & (effects["against"] == against)].iloc[0]


def _text(row, digits: int = 2) -> str:
    """Write an effect with its Holm interval."""
    return wording.effect_text(row["diff_mean"], row["adj_ci_low"], row["adj_ci_high"], digits)


def _trend_text(trend: pd.Series) -> str:
    """Say which way a metric moves as the groups grow (less noise), from its slope across seeds."""
    slope = wording.effect_text(trend["diff_mean"], trend["adj_ci_low"], trend["adj_ci_high"], digits=3)
    if trend["holm_p"] < stats.ALPHA:
        direction = "rises" if trend["diff_mean"] > 0 else "falls"
        return f"{direction} significantly as the groups grow ({slope} per doubling; {trend['one_left_out']})"
    return f"shows no detectable trend with the group size ({slope} per doubling; {trend['one_left_out']})"


def verdict(noise: pd.DataFrame, effects: pd.DataFrame, trends: pd.DataFrame, runs: pd.DataFrame) -> str:
    """State the measured noise law, the effect of each group size, and whether the effect follows the noise."""
    small, large = noise.iloc[0], noise.iloc[-1]
    g_small, g_large = int(small["group"]), int(large["group"])
    trend = trends.set_index("metric")
    accuracy_trend, gap_trend = trend.loc["test_accuracy"], trend.loc["gap"]
    control = _effect(effects, "test_accuracy", CONTROL, BASELINE)
    by_group = "; ".join(
        f"g = {g}: {_text(_effect(effects, 'test_accuracy', arm_name(g), BASELINE))} against the baseline, "
        f"{_text(_effect(effects, 'test_accuracy', arm_name(g), CONTROL))} against the control"
        for g in (g_small, g_large))
    whole = arm_name(g_large)
    against_whole = effects[(effects["metric"] == "test_accuracy") & (effects["against"] == whole)]
    differing = against_whole[against_whole["holm_p"] < stats.ALPHA]
    where = ("; against whole-batch statistics the test accuracy differs significantly at "
             + ", ".join(f"g = {int(row.group)} ({_text(row._asdict())})" for row in differing.itertuples())
             + (" only" if len(differing) < len(against_whole) else "") if len(differing) else
             "; no group size's test accuracy differs significantly from whole-batch statistics")
    follows = stats.trend_direction(accuracy_trend)  # -1: more noise (smaller groups), higher test accuracy
    gap_shrinks = stats.trend_direction(gap_trend) == 1 and gap_trend["robust"]
    claim = ("not shown: the test accuracy does not detectably follow the noise" if not follows else
             f"not shown: the trend in test accuracy is {accuracy_trend['one_left_out']}"
             if not accuracy_trend["robust"] else
             "supported: more noise (smaller groups) gives higher test accuracy" if follows < 0 else
             "contradicted: more noise (smaller groups) gives lower test accuracy")
    ok = stats.successful(runs)
    means = ok.groupby("arm")["test_accuracy"].mean()
    return (
        "The first BatchNorm layer's group mean strays from the population mean by "
        f"{small['mean_error_over_sigma']:.3f} σ "
        f"at g = {g_small} and {large['mean_error_over_sigma']:.3f} σ at g = {g_large} (measured / predicted σ/√g: "
        f"{noise['mean_error_over_predicted'].min():.2f}–{noise['mean_error_over_predicted'].max():.2f}); the group "
        f"variance by {small['var_error_over_sigma2']:.3f} σ² and {large['var_error_over_sigma2']:.3f} σ². With batch, "
        f"steps and learning rate fixed, {by_group}. Test accuracy {_trend_text(accuracy_trend)}; the gap "
        f"{_trend_text(gap_trend)}{' (noise narrows it)' if gap_shrinks else ''}{where}. The claim that the noise "
        "regularizes "
        f"is {claim}. The noise-free control (exact training-set statistics as constants: "
        f"{means.get(CONTROL, np.nan) * 100:.2f}%"
        f" test accuracy, {_text(control)} against the baseline) also lacks the gradient through the statistics, so a "
        "gap between it and every group size measures that gradient as much as the noise; the trend across group "
        "sizes, which share it, isolates the noise. One model, data size and budget: the effect may differ "
        "elsewhere, and 'no detectable trend' is not 'no effect'."
    )


def body(noise: pd.DataFrame, effects: pd.DataFrame, trends: pd.DataFrame, runs: pd.DataFrame,
         context: StudyContext) -> str:
    """Render the figure and the tables."""
    noise_rows = [[row.group, f"{row.mean_error_over_sigma:.4f}", f"{1 / np.sqrt(row.group):.4f}",
                   f"{row.mean_error_over_predicted:.3f}", f"{row.var_error_over_sigma2:.4f}",
                   f"{row.var_error_over_predicted:.3f}"] for row in noise.itertuples()]
    ok = stats.successful(runs)
    arm_rows = [[arm, len(mine), f"{mine['test_accuracy'].mean() * 100:.2f} ± {mine['test_accuracy'].std() * 100:.2f}",
                 f"{mine['train_accuracy'].mean() * 100:.2f}", f"{mine['gap'].mean() * 100:.2f}"]
                for arm, mine in ok.groupby("arm", sort=False)]
    effect_rows = [[METRICS[row.metric], row.arm, row.against, row.pairs, _text(row._asdict()),
                    wording.p_text(row.holm_p)] for row in effects.itertuples()]
    trend_rows = [[METRICS[row.metric], row.pairs, _text(row._asdict(), 3), wording.p_text(row.holm_p),
                   row.one_left_out] for row in trends.itertuples()]
    return f"""## Results

![Group-statistic noise and the paired effects against the group size](figure:noise_and_effect_by_group.png)

Every run trains {context.base.epochs} epochs on {context.base.train_size:,} images in batches of
{context.base.batch_size} at the same learning rate; the BatchNorm arms differ only in g, the number of images
whose statistics normalize each other (ghost batch normalization: each batch is cut into groups of g). The
moving statistics that inference uses average the groups' (variances Bessel-corrected), so inference is the same
for every g. The control ("{CONTROL}") normalizes with the whole training set's statistics, recomputed every
{STATISTICS_REFRESH_STEPS} steps and used as constants in training and inference: the same forward pass without
noise, but also without the gradient through the statistics that BatchNorm has (Ioffe and Szegedy 2015, §2).

### Noise of the group statistics

A model trained with whole-batch statistics (seed {context.seeds[0]}) is run over the training images; for each
g, {context.grid['noise_draws']} random groups of g distinct images give each unit of the first BatchNorm
layer's input a group mean and a (biased) group variance. Their root-mean-square distance from the unit's
population values is compared with sampling theory: σ/√g (finite-population corrected) for the mean, and for the
variance its spread √((μ₄ − σ⁴(g−3)/(g−1))/g)·(g−1)/g with the biased estimate's offset σ²/g. Medians over
{noise['units'].iloc[0]} units.

{wording.markdown_table(["g", "rms(group mean − μ) / σ", "1/√g", "measured / predicted",
                        "rms(group var − σ²) / σ²", "measured / predicted"], noise_rows)}

### Every arm

{wording.markdown_table(["arm", "runs", "test acc % (mean ± SD)", "train acc %", "gap (pp)"], arm_rows)}

### Paired effects

Paired by seed; Holm-corrected across the {len(effects) // len(METRICS)} comparisons of each metric, with the
interval at the level Holm tested each.

{wording.markdown_table(["metric", "arm", "against", "pairs", "difference, pp [Holm CI]", "p (Holm)"], effect_rows)}

### Trend with the group size

Each seed's ghost arms give a least-squares slope against log₂ g (per doubling of the group); the interval is over
seeds (the unit of replication), Holm-corrected across the two metrics. A negative accuracy slope means smaller
groups, with noisier statistics, test better. Each trend is fitted again with each group size left out; a verdict
that changes without one group size rests on that one arm, and the claim is not decided on it.

{wording.markdown_table(["metric", "seeds", "slope, pp per doubling [Holm CI]", "p (Holm)",
                         "with any one group size left out"], trend_rows)}
"""


def figure(noise: pd.DataFrame, effects: pd.DataFrame) -> Figure:
    """Draw the measured and predicted noise, and the paired effects, against the group size."""
    fig = Figure(figsize=(13, 5))
    left, right = fig.subplots(1, 2)
    g = noise["group"]
    left.plot(g, noise["mean_error_over_sigma"], "o-", color="#1f77b4", label="rms error of group mean / σ (measured)")
    left.plot(g, 1 / np.sqrt(g), "--", color="#1f77b4", label="1/√g (theory)")
    left.plot(g, noise["var_error_over_sigma2"], "s-", color="#d62728",
              label="rms error of group variance / σ² (measured)")
    left.set(xscale="log", yscale="log", xlabel="group size g", ylabel="relative noise", title="Group statistics")
    accuracy = effects[(effects["metric"] == "test_accuracy") & effects["group"].notna()]
    for against, colour in ((BASELINE, "#2ca02c"), (CONTROL, "#9467bd")):
        rows = accuracy[accuracy["against"] == against]
        errors = [(rows["diff_mean"] - rows["adj_ci_low"]) * 100, (rows["adj_ci_high"] - rows["diff_mean"]) * 100]
        right.errorbar(rows["group"], rows["diff_mean"] * 100, yerr=errors, marker="o", capsize=3, color=colour,
                       label=f"ghost BN − {against} (Holm CI)")
    right.axhline(0, color="black", linewidth=0.8)
    right.set(xscale="log", xlabel="group size g (batch fixed)", ylabel="Δ test accuracy (pp)", title="Paired effects")
    return plots.finish_panels(fig, [left, right])
