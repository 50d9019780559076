"""Summaries and paired effects of a comparison's runs (pure pandas, numpy and scipy)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as scipy_stats

from regbench.config import MEASURED
from regbench.errors import UsageError
from regbench.techniques import BASELINE

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE  # two-sided significance level of every test
POWER = 0.8  # power at which the smallest detectable effect is stated
BOOTSTRAP_SEED = 12_345  # fixes the paired bootstrap's resamples
BOOTSTRAP_RESAMPLES = 9_999
MAX_SEEDS = 1_000  # largest seed count considered when saying how many would settle a question
SUMMARY_METRICS = ("test_accuracy", "gap", "epochs_run", "seconds_per_epoch")
EFFECT_METRICS = ("test_accuracy", "test_crossentropy", "gap", "epochs_run", "seconds_per_epoch")
PRIMARY = "test_accuracy"  # the metric the verdict is about
UNCORRECTED_ONLY = "no detectable effect (significant only before Holm correction)"


def successful(runs: pd.DataFrame) -> pd.DataFrame:
    """Return the runs that finished with status ok (diverged runs are left out of statistics)."""
    return runs[runs["status"] == "ok"]


def selected(runs: pd.DataFrame, select: str) -> pd.DataFrame:
    """Return `runs` measured at the selected weights of every run: as trained ('final'), or those of its best
    validation epoch ('best-val': the best_* numbers in place of the measured ones)."""
    if select == "final":
        return runs
    best = [f"best_{name}" for name in MEASURED]
    ok = successful(runs)
    lacking = ok["run_id"] if not set(best) <= set(runs.columns) else ok.loc[ok[best].isna().any(axis=1), "run_id"]
    if len(lacking):
        raise UsageError(f"{len(lacking)} run(s), e.g. {lacking.iloc[0]}, were stored before regbench measured the "
                         "best-validation weights; remove them (`regbench runs --remove`) to retrain them, or use "
                         "--select final")
    return runs.assign(**{name: runs[f"best_{name}"] for name in MEASURED})


def paired_differences(runs: pd.DataFrame, metric: str, technique: str) -> pd.Series:
    """Return treated minus baseline `metric` per seed, over the seeds where both runs succeeded."""
    ok = successful(runs)
    by_seed = ok.pivot_table(index="seed", columns="technique", values=metric, aggfunc="first")
    if technique not in by_seed or BASELINE not in by_seed:
        return pd.Series(dtype=float, name=metric)
    return (by_seed[technique] - by_seed[BASELINE]).dropna().rename(metric)


def mean_confidence_interval(values: pd.Series) -> tuple[float, float, float]:
    """Return (mean, low, high): the mean and its 95% t-interval (NaN bounds below 2 values)."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if len(values) < 2:
        return mean, math.nan, math.nan
    if np.all(values == values[0]):
        return mean, mean, mean
    low, high = scipy_stats.ttest_1samp(values, 0.0).confidence_interval(CONFIDENCE)
    return mean, float(low), float(high)


def bootstrap_interval(values: pd.Series) -> tuple[float, float]:
    """Return the 95% percentile interval of the mean from a paired bootstrap with a fixed seed."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return math.nan, math.nan
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    result = scipy_stats.bootstrap(
        (values,), np.mean, n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=CONFIDENCE,
        method="percentile", rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def paired_tests(values: pd.Series) -> tuple[float, float]:
    """Return the two-sided p-values of the paired t-test and the Wilcoxon signed-rank test.

    Without spread the t-test is undefined: p is 1 when every difference is 0, else NaN.
    """
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return math.nan, math.nan
    if np.all(values == values[0]):
        t_p = 1.0 if values[0] == 0 else math.nan
    else:
        t_p = float(scipy_stats.ttest_1samp(values, 0.0).pvalue)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-zero differences: scipy warns, p = 1
        wilcoxon_p = float(scipy_stats.wilcoxon(values).pvalue)
    return t_p, wilcoxon_p


def holm(pvalues: pd.Series) -> pd.Series:
    """Return Holm's step-down adjusted p-values (NaN entries stay NaN and do not count)."""
    valid = pvalues.dropna().sort_values()
    m = len(valid)
    scaled = pd.Series([(m - rank) * p for rank, p in enumerate(valid)], index=valid.index)
    adjusted = scaled.cummax().clip(upper=1.0)
    return adjusted.reindex(pvalues.index)


def power(effect_size: float, pairs: int) -> float:
    """Return the power of a two-sided paired t-test at ALPHA for a standardized effect (d_z)."""
    df = pairs - 1
    critical = scipy_stats.t.ppf(1 - ALPHA / 2, df)
    shift = effect_size * math.sqrt(pairs)
    value = scipy_stats.nct.sf(critical, df, shift) + scipy_stats.nct.cdf(-critical, df, shift)
    return 1.0 if math.isnan(value) else float(value)  # scipy's nct gives NaN only far out, where power is 1


def min_detectable_effect(sd: float, pairs: int) -> float:
    """Return the smallest mean difference detected with POWER by `pairs` pairs of spread `sd`."""
    if pairs < 2 or not sd > 0:
        return math.nan
    high = 1.0
    while power(high, pairs) < POWER:
        high *= 2
    return optimize.brentq(lambda d: power(d, pairs) - POWER, 0.0, high) * sd


def seeds_needed(mean: float, sd: float) -> int | None:
    """Return how many pairs detect a true difference of `mean` with POWER (None past MAX_SEEDS)."""
    if not (sd > 0 and abs(mean) > 0):
        return None
    effect_size = abs(mean) / sd
    for pairs in range(2, MAX_SEEDS + 1):
        if power(effect_size, pairs) >= POWER:
            return pairs
    return None


def describe_pairs(values: pd.Series) -> dict:
    """Return every statistic of one set of paired differences."""
    mean, t_low, t_high = mean_confidence_interval(values)
    boot_low, boot_high = bootstrap_interval(values)
    t_p, wilcoxon_p = paired_tests(values)
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    return {
        "pairs": len(values), "diff_mean": mean, "diff_sd": sd,
        "t_ci_low": t_low, "t_ci_high": t_high, "boot_ci_low": boot_low, "boot_ci_high": boot_high,
        "t_p": t_p, "wilcoxon_p": wilcoxon_p,
        "cohens_dz": mean / sd if sd > 0 else math.nan,
        "min_detectable_effect": min_detectable_effect(sd, len(values)),
        "seeds_needed": seeds_needed(mean, sd),
    }


def paired_effects(runs: pd.DataFrame, techniques: list[str]) -> pd.DataFrame:
    """Return a row per technique and metric: the paired difference to the baseline and its tests."""
    rows = []
    for metric in EFFECT_METRICS:
        for technique in techniques:
            values = paired_differences(runs, metric, technique)
            rows.append({"technique": technique, "metric": metric, **describe_pairs(values)})
    effects = pd.DataFrame(rows)
    effects["holm_p"] = effects.groupby("metric")["t_p"].transform(holm)
    effects["verdict"] = [verdict(row, metric) for (_, row), metric in zip(effects.iterrows(), effects["metric"])]
    return effects.astype({"pairs": "Int64", "seeds_needed": "Int64"})


def verdict(effect: pd.Series, metric: str = PRIMARY) -> str:
    """Say from the numbers whether the technique helps, hurts or has no detectable effect."""
    if effect["pairs"] < 2:
        return "cannot tell (fewer than 2 successful pairs)"
    if effect["holm_p"] < ALPHA and effect["t_ci_low"] * effect["t_ci_high"] > 0:
        better = effect["diff_mean"] > 0 if metric == PRIMARY else effect["diff_mean"] < 0
        if metric in ("test_accuracy", "test_crossentropy"):
            return "helps" if better else "hurts"
        return "higher" if effect["diff_mean"] > 0 else "lower"
    if effect["t_p"] < ALPHA:  # its unadjusted 95% interval excludes 0, but not after the correction
        return UNCORRECTED_ONLY
    return "no detectable effect"


def summarize(runs: pd.DataFrame, techniques: list[str], effects: pd.DataFrame | None = None) -> pd.DataFrame:
    """Return one row per arm: mean and SD over seeds, and the paired test-accuracy effect with its verdict."""
    effects = paired_effects(runs, techniques) if effects is None else effects
    primary = effects[effects["metric"] == PRIMARY].set_index("technique")
    gaps = effects[effects["metric"] == "gap"].set_index("technique")
    ok = successful(runs)
    baseline_time = ok.loc[ok["technique"] == BASELINE, "seconds_per_epoch"].mean()
    rows = []
    for technique in [BASELINE, *techniques]:
        arm = ok[ok["technique"] == technique]
        row = {
            "technique": technique,
            "runs": int((runs["technique"] == technique).sum()),
            "diverged": int(((runs["technique"] == technique) & (runs["status"] != "ok")).sum()),
        }
        for metric in SUMMARY_METRICS:
            row[f"{metric}_mean"] = float(arm[metric].mean()) if len(arm) else math.nan
            row[f"{metric}_sd"] = float(arm[metric].std(ddof=1)) if len(arm) > 1 else math.nan
        row["time_ratio"] = row["seconds_per_epoch_mean"] / baseline_time
        if technique != BASELINE:
            effect = primary.loc[technique]
            row.update(
                pairs=effect["pairs"], test_accuracy_diff=effect["diff_mean"], diff_sd=effect["diff_sd"],
                diff_ci_low=effect["t_ci_low"], diff_ci_high=effect["t_ci_high"],
                diff_boot_low=effect["boot_ci_low"], diff_boot_high=effect["boot_ci_high"],
                t_p=effect["t_p"], wilcoxon_p=effect["wilcoxon_p"], holm_p=effect["holm_p"],
                cohens_dz=effect["cohens_dz"], gap_diff=gaps.loc[technique, "diff_mean"],
                min_detectable_effect=effect["min_detectable_effect"], seeds_needed=effect["seeds_needed"],
                verdict=effect["verdict"],
            )
        rows.append(row)
    return pd.DataFrame(rows).astype({"pairs": "Int64", "seeds_needed": "Int64"})


def plateau(epochs: pd.DataFrame) -> dict | None:
    """Return how runs' validation accuracy moved over their last 10% of epochs (at least the last 2):
    the first and last of those epochs, the mean change between them, the mean SD within a run, the mean."""
    finite = epochs.dropna(subset=["val_accuracy"])
    if finite.empty or finite["epoch"].max() < 2:
        return None
    last = int(finite["epoch"].max())
    first = min(last - 1, last - int(last * 0.1) + 1)
    tail = finite[finite["epoch"] >= first]
    by_run = tail.pivot_table(index="run_id", columns="epoch", values="val_accuracy")
    return {"first": first, "last": last, "change": float((by_run[last] - by_run[first]).mean()),
            "sd": float(by_run.std(axis=1, ddof=1).mean()), "mean": float(by_run.to_numpy().mean())}


def best_and_final_epochs(epochs: pd.DataFrame) -> pd.DataFrame:
    """Return per arm the mean validation numbers at the best epoch and at the final epoch."""
    finite = epochs.dropna(subset=["val_crossentropy"])
    best = finite.loc[finite.groupby("run_id")["val_crossentropy"].idxmin()]
    final = finite.loc[finite.groupby("run_id")["epoch"].idxmax()]
    columns = ["epoch", "val_accuracy", "val_crossentropy"]
    table = pd.concat(
        [best.groupby("technique", sort=False)[columns].mean().add_prefix("best_"),
         final.groupby("technique", sort=False)[columns].mean().add_prefix("final_")],
        axis=1,
    )
    return table.reindex(epochs["technique"].unique()).reset_index()  # arms in the comparison's order
