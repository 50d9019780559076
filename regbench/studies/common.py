"""Old study helpers, kept until every study moves to context, pages, stats and report (being removed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats as scipy_stats

from regbench import stats
from regbench.studies.context import QUICK_CONFIG, Findings, Preset, StudyContext, label_arms  # noqa: F401
from regbench.techniques import BASELINE


def interval(values) -> tuple[float, float, float]:
    """Return (mean, low, high) of paired values with the 95% t-interval (the stats module's)."""
    return stats.mean_confidence_interval(pd.Series(values, dtype=float).dropna())


def pp(mean: float, low: float, high: float, digits: int = 2) -> str:
    """Format a difference of fractions and its interval in percentage points: '+0.12 pp [-0.05, +0.29]'."""
    if np.isnan(mean):
        return "no paired difference (no successful pair)"
    if np.isnan(low) or np.isnan(high):
        return f"{mean * 100:+.{digits}f} pp [no interval from one pair]"
    return f"{mean * 100:+.{digits}f} pp [{low * 100:+.{digits}f}, {high * 100:+.{digits}f}]"


def pp_effect(row) -> str:
    """Format a row's paired test-accuracy difference (test_accuracy_diff, diff_ci_low, diff_ci_high)."""
    return pp(row.test_accuracy_diff, row.diff_ci_low, row.diff_ci_high)


def slope_interval(x: list[float], y: list[float]) -> dict:
    """Fit y = a + b x by least squares; return the slope b with its 95% t-interval, p and the point count."""
    fit = scipy_stats.linregress(x, y)
    half = scipy_stats.t.ppf(0.975, len(x) - 2) * fit.stderr if len(x) > 2 else np.nan
    return {"slope": fit.slope, "low": fit.slope - half, "high": fit.slope + half, "p": fit.pvalue, "pairs": len(x)}


def finish(fig: Figure, panels) -> Figure:
    """Give every panel a light grid and a small legend, lay the figure out, and return it."""
    for axes in panels:
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    fig.tight_layout()
    return fig


def arm_table(runs: pd.DataFrame, arms: list[str]) -> pd.DataFrame:
    """Return one row per arm: runs, test and training accuracy, gap, and the paired test-accuracy CI."""
    rows = []
    ok = stats.successful(runs)
    for arm in arms:
        mine = ok[ok["technique"] == arm]
        paired = arm != BASELINE
        diff, low, high = interval(stats.paired_differences(runs, "test_accuracy", arm) if paired else [])
        train_diff = interval(stats.paired_differences(runs, "train_accuracy", arm) if paired else [])[0]
        rows.append({"arm": arm, "runs": len(mine), "test_accuracy_mean": mine["test_accuracy"].mean(),
                     "test_accuracy_sd": mine["test_accuracy"].std(), "train_accuracy_mean": mine["train_accuracy"].mean(),
                     "gap_mean": mine["gap"].mean(), "test_accuracy_diff": diff, "diff_ci_low": low,
                     "diff_ci_high": high, "train_accuracy_diff": train_diff})
    return pd.DataFrame(rows)
