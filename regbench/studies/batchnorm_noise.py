"""Study batchnorm-noise: how noisy mini-batch statistics are, and whether BatchNorm's effect follows the noise."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from regbench import report, stats
from regbench.studies.common import (
    QUICK_CONFIG, Findings, Preset, StudyContext, finish, interval, pp, slope_interval,
)
from regbench.techniques import BASELINE

FULL = Preset(
    config={"train_size": 10_000, "epochs": 10},  # 10k images: batch 8 stays affordable and the gap is visible
    seeds=3,
    grid={"statistics_batch_sizes": (8, 16, 32, 64, 128, 256, 512), "statistics_batches": 500,
          "train_batch_sizes": (8, 32, 128, 512)},
)
QUICK = Preset(config=QUICK_CONFIG, seeds=2,
               grid={"statistics_batch_sizes": (8, 64), "statistics_batches": 20, "train_batch_sizes": (16, 64)})
SWEEPS = {"batch_size": "train_batch_sizes below (the statistics model trains at the preset's 32)"}
ARMS = {"none": ("none", ""), "batchnorm": ("batchnorm", ""), "population-bn": ("batchnorm", "population-bn")}


def run(context: StudyContext) -> Findings:
    """Measure batch-statistic noise on a trained BN model; train none / BN / population-BN per batch size."""
    split = context.split()
    statistics_model = context.models(context.configs((context.seeds[0],), technique="batchnorm"))[0]
    noise = noise_table(statistics_model, split.x_train, context.grid["statistics_batch_sizes"],
                        context.grid["statistics_batches"])
    configs = [config for batch in context.grid["train_batch_sizes"] for technique, variant in ARMS.values()
               for config in context.configs(technique=technique, variant=variant, batch_size=batch)]
    runs = context.runs(configs).runs
    runs["arm"] = [next(name for name, (t, v) in ARMS.items() if (t, v) == (row.technique, row.variant or ""))
                   for row in runs[["technique", "variant"]].fillna("").itertuples()]
    effects = effect_table(runs, context.grid["train_batch_sizes"])
    trend = trend_of(runs, "batchnorm")
    return Findings(
        verdict=verdict(noise, effects, trend),
        body=body(noise, effects, trend, context.grid["statistics_batches"]),
        tables={"runs": runs, "batch_statistics_noise": noise, "effects_by_batch_size": effects},
        figures={"noise_and_effect_by_batch_size": figure(noise, effects)},
    )


def noise_table(model: keras.Model, x: np.ndarray, batch_sizes, batches: int) -> pd.DataFrame:
    """Measure the spread across random batches of the first BN layer's per-unit batch mean and variance."""
    layer = next(layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    inputs = keras.Model(model.input, layer.input).predict(x, batch_size=2048, verbose=0).astype(np.float64)
    inputs = inputs.reshape(-1, inputs.shape[-1])  # conv: every position is a sample of its channel
    n = len(inputs)
    sigma2 = inputs.var(axis=0)
    mu4 = ((inputs - inputs.mean(axis=0)) ** 4).mean(axis=0)
    live = sigma2 > 1e-12  # units that ever vary
    rng = np.random.default_rng(0)
    rows = []
    for m in batch_sizes:
        samples = np.stack([inputs[rng.choice(n, m, replace=False)] for _ in range(batches)])
        mean_sd = samples.mean(axis=1).std(axis=0)
        var_sd = samples.var(axis=1).std(axis=0)  # biased, as BatchNormalization computes it
        predicted_mean_sd = np.sqrt(sigma2 / m * (n - m) / (n - 1))
        predicted_var_sd = (m - 1) / m * np.sqrt(np.maximum(mu4 - sigma2 ** 2 * (m - 3) / (m - 1), 0) / m)
        rows.append({"batch_size": m, "units": int(live.sum()),
                     "mean_sd_over_sigma": float(np.median(mean_sd[live] / np.sqrt(sigma2[live]))),
                     "mean_sd_over_predicted": float(np.median(mean_sd[live] / predicted_mean_sd[live])),
                     "var_sd_over_sigma2": float(np.median(var_sd[live] / sigma2[live])),
                     "var_sd_over_predicted": float(np.median(var_sd[live] / predicted_var_sd[live]))})
    return pd.DataFrame(rows)


def _by_arm(runs: pd.DataFrame, metric: str, arm: str, against: str) -> pd.Series:
    """Return `arm` minus `against` for `metric`, paired by seed."""
    ok = stats.successful(runs)
    table = ok.pivot_table(index="seed", columns="arm", values=metric)
    return (table[arm] - table[against]).dropna() if {arm, against} <= set(table) else pd.Series(dtype=float)


def effect_table(runs: pd.DataFrame, batch_sizes) -> pd.DataFrame:
    """Return per batch size every arm's accuracy and gap, and the paired effects with CIs."""
    rows = []
    for batch in batch_sizes:
        mine = runs[runs["batch_size"] == batch]
        means = stats.successful(mine).groupby("arm")[["test_accuracy", "gap"]].mean()
        row = {"batch_size": batch}
        for arm in ARMS:
            row[f"{arm}_test_accuracy"] = means["test_accuracy"].get(arm, np.nan)
            row[f"{arm}_gap"] = means["gap"].get(arm, np.nan)
        for name, arm, against in [("bn_minus_none", "batchnorm", BASELINE),
                                   ("bn_minus_population", "batchnorm", "population-bn")]:
            row[name], row[f"{name}_ci_low"], row[f"{name}_ci_high"] = interval(
                _by_arm(mine, "test_accuracy", arm, against))
            row[f"{name}_gap"] = interval(_by_arm(mine, "gap", arm, against))[0]
        rows.append(row)
    return pd.DataFrame(rows)


def trend_of(runs: pd.DataFrame, arm: str) -> dict:
    """Regress the per-seed paired effect of `arm` over the baseline on log2(batch size)."""
    x, y = [], []
    for batch, mine in runs.groupby("batch_size"):
        diffs = _by_arm(mine, "test_accuracy", arm, BASELINE)
        x += [np.log2(batch)] * len(diffs)
        y += list(diffs)
    return slope_interval(x, y)


def _ci(row, name: str) -> str:
    """Format a paired effect with its CI in percentage points."""
    return pp(row[name], row[name + "_ci_low"], row[name + "_ci_high"])


def verdict(noise: pd.DataFrame, effects: pd.DataFrame, trend: dict) -> str:
    """State the measured noise law and whether BN's effect shrinks with the batch size."""
    small, large = noise.iloc[0], noise.iloc[-1]
    first, last = effects.iloc[0], effects.iloc[-1]
    small_m, large_m, first_m, last_m = (int(row["batch_size"]) for row in (small, large, first, last))
    direction = ("shrinks significantly" if trend["high"] < 0 else "grows significantly" if trend["low"] > 0
                 else "shows no significant trend")
    noise_removed = "; ".join(f"batch {int(row['batch_size'])}: {_ci(row, 'bn_minus_population')}"
                              for _, row in effects.iterrows())
    return (
        f"The per-unit batch mean of the first BN layer's input wanders by {small['mean_sd_over_sigma']:.3f} σ at "
        f"batch {small_m} and {large['mean_sd_over_sigma']:.3f} σ at {large_m}; measured / "
        f"predicted σ/√m is {noise['mean_sd_over_predicted'].min():.2f}–{noise['mean_sd_over_predicted'].max():.2f} "
        f"(median over units), and for the batch variance {noise['var_sd_over_predicted'].min():.2f}–"
        f"{noise['var_sd_over_predicted'].max():.2f}. BatchNorm − baseline test accuracy is "
        f"{_ci(first, 'bn_minus_none')} at batch {first_m} and {_ci(last, 'bn_minus_none')} at "
        f"{last_m}; the effect {direction} with the batch size ({trend['slope'] * 100:+.2f} pp per "
        f"doubling [{trend['low'] * 100:+.2f}, {trend['high'] * 100:+.2f}]). Batch statistics minus frozen "
        f"population statistics (no batch noise, but also no gradient through the statistics): {noise_removed}."
    )


def body(noise: pd.DataFrame, effects: pd.DataFrame, trend: dict, batches: int) -> str:
    """Render the figure and the tables."""
    noise_rows = [[row.batch_size, f"{row.mean_sd_over_sigma:.4f}", f"{1 / np.sqrt(row.batch_size):.4f}",
                   f"{row.mean_sd_over_predicted:.3f}", f"{row.var_sd_over_sigma2:.4f}", f"{row.var_sd_over_predicted:.3f}"]
                  for row in noise.itertuples()]
    effect_rows = [[int(row["batch_size"]), *(f"{row[f'{arm}_test_accuracy'] * 100:.2f}" for arm in ARMS),
                    *(f"{row[f'{arm}_gap'] * 100:.2f}" for arm in ARMS), _ci(row, "bn_minus_none"),
                    _ci(row, "bn_minus_population")] for _, row in effects.iterrows()]
    return f"""## Results

![Batch-statistic noise and BatchNorm's effect against the batch size](figure:noise_and_effect_by_batch_size.png)

### Noise of the batch statistics

A BatchNorm model (seed 0, trained at the preset's batch size) is run over the training images; for each batch
size m, {batches} random batches of m distinct images give each unit of the first BN layer's input a batch mean
and a (biased) batch variance. Their standard deviation across batches is compared with sampling theory:
σ/√m (with the finite-population factor) for the mean, and √((μ₄ − σ⁴(m−3)/(m−1))/m)·(m−1)/m for the
variance. Medians over {noise['units'].iloc[0]} units.

{report.markdown_table(["batch m", "sd(batch mean) / σ", "1/√m", "measured / predicted",
                        "sd(batch var) / σ²", "measured / predicted"], noise_rows)}

### Training with and without BatchNorm, and with the noise removed

"population-bn" normalizes with statistics of the whole training set, frozen during each epoch and recomputed
before the next, in training as in inference: the same normalization without batch noise. Frozen statistics
also take away the gradient through the statistics, which Ioffe and Szegedy (2015, section 2) show
BatchNorm needs (without it, gradient steps can undo the normalization); where population-bn trains much
worse than batchnorm, that loss, not the missing noise, is the likelier cause, and this arm cannot separate
the two.
Trend of BatchNorm − baseline against log₂(batch size): {trend['slope'] * 100:+.3f} pp per doubling,
95% CI [{trend['low'] * 100:+.3f}, {trend['high'] * 100:+.3f}], p = {trend['p']:.4f} ({trend['pairs']} pairs).

{report.markdown_table(["batch", "none %", "batchnorm %", "population-bn %", "gap none", "gap batchnorm",
                        "gap population-bn", "batchnorm − none", "batchnorm − population-bn"], effect_rows)}
"""


def figure(noise: pd.DataFrame, effects: pd.DataFrame) -> Figure:
    """Draw the measured and predicted noise, and BN's paired effects, against the batch size."""
    fig = Figure(figsize=(13, 5))
    left, right = fig.subplots(1, 2)
    m = noise["batch_size"]
    left.plot(m, noise["mean_sd_over_sigma"], "o-", color="#1f77b4", label="sd of batch mean / σ (measured)")
    left.plot(m, 1 / np.sqrt(m), "--", color="#1f77b4", label="1/√m (theory)")
    left.plot(m, noise["var_sd_over_sigma2"], "s-", color="#d62728", label="sd of batch variance / σ² (measured)")
    left.set(xscale="log", yscale="log", xlabel="batch size m", ylabel="relative noise", title="Batch statistics")
    for name, label, colour in [("bn_minus_none", "batchnorm − none", "#2ca02c"),
                                ("bn_minus_population", "batchnorm − population-bn", "#9467bd")]:
        errors = [(effects[name] - effects[f"{name}_ci_low"]) * 100, (effects[f"{name}_ci_high"] - effects[name]) * 100]
        right.errorbar(effects["batch_size"], effects[name] * 100, yerr=errors, marker="o", capsize=3, color=colour,
                       label=label)
    right.axhline(0, color="black", linewidth=0.8)
    right.set(xscale="log", xlabel="training batch size", ylabel="Δ test accuracy (pp)", title="Paired effects")
    return finish(fig, [left, right])
