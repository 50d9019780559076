"""Summaries and paired effects of a comparison's runs (pure pandas, numpy and scipy)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from regbench.techniques import BASELINE

CONFIDENCE = 0.95
SUMMARY_METRICS = ("test_accuracy", "gap", "epochs_run", "seconds_per_epoch")


def successful(runs: pd.DataFrame) -> pd.DataFrame:
    """Return the runs that finished with status ok (diverged runs are left out of statistics)."""
    return runs[runs["status"] == "ok"]


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


def summarize(runs: pd.DataFrame, techniques: list[str]) -> pd.DataFrame:
    """Return one row per arm: mean and SD over seeds, and the paired test-accuracy difference."""
    rows = []
    ok = successful(runs)
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
        if technique != BASELINE:
            diffs = paired_differences(runs, "test_accuracy", technique)
            mean, low, high = mean_confidence_interval(diffs)
            row.update(pairs=len(diffs), test_accuracy_diff=mean, diff_ci_low=low, diff_ci_high=high)
        rows.append(row)
    return pd.DataFrame(rows).astype({"pairs": "Int64"})
