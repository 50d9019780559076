"""Summaries and paired effects of a comparison's runs (pure pandas, numpy and scipy)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as scipy_stats

from regbench.config import DEFAULT_MARGIN, MEASURED
from regbench.errors import UsageError
from regbench.techniques import BASELINE
from regbench.verdicts import Kind, Verdict

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE  # two-sided significance level of every test, and of each TOST's one-sided tests
POWER = 0.8  # power at which the smallest detectable effect and the seeds for --target-effect are stated
PLANNING_SD_CONFIDENCE = 0.8  # --target-effect plans with this upper confidence bound of the pairs' SD
MAX_SEEDS = 1_000  # largest seed count considered when planning
SUMMARY_METRICS = ("test_accuracy", "gap", "epochs_run", "seconds_per_epoch")
STUDY_METRICS = (*SUMMARY_METRICS, "val_accuracy", "train_accuracy")  # a study chooses on validation
EFFECT_METRICS = ("test_accuracy", "test_crossentropy", "gap", "epochs_run", "seconds_per_epoch")
PRIMARY = "test_accuracy"  # the metric the verdict is about


def analysis_of(manifest: Mapping[str, Any]) -> dict:
    """Return how a comparison's effects are judged, as fractions: the equivalence margin and any planning target
    (the manifest states them in percentage points, as margin_pp and target_effect_pp; manifests before that as
    fractions, as margin and target_effect)."""
    analysis = {"margin": DEFAULT_MARGIN, "target_effect": None, **manifest.get("analysis", {})}
    for name in ("margin", "target_effect"):
        if f"{name}_pp" in analysis:
            points = analysis.pop(f"{name}_pp")
            analysis[name] = None if points is None else points / 100
    return analysis


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


def paired_differences(runs: pd.DataFrame, metric: str, arm: str, against: str = BASELINE,
                       by: str = "technique") -> pd.Series:
    """Return `arm` minus `against` in `metric` per seed (the arms named in column `by`), over the seeds where
    both runs succeeded: the one way runs are paired."""
    ok = successful(runs)
    by_seed = ok.pivot_table(index="seed", columns=by, values=metric, aggfunc="first")
    if arm not in by_seed or against not in by_seed:
        return pd.Series(dtype=float, name=metric)
    return (by_seed[arm] - by_seed[against]).dropna().rename(metric)


def seed_slopes(table: pd.DataFrame, x: str, y: str) -> pd.Series:
    """Return, per seed, the least-squares slope of `y` on `x` over that seed's rows (seeds with fewer than two
    distinct x are left out): seeds, not rows, are the unit of a trend."""
    slopes = {}
    for seed, rows in table.dropna(subset=[x, y]).groupby("seed"):
        if rows[x].nunique() > 1:
            slopes[seed] = float(np.polyfit(rows[x].to_numpy(float), rows[y].to_numpy(float), 1)[0])
    return pd.Series(slopes, dtype=float, name=f"slope of {y} on {x}")


def trend_family(runs: pd.DataFrame, arm_column: str, arms: list[str], position: str, x: str) -> pd.DataFrame:
    """Fit per seed the baseline's gap, and each arm's test-accuracy effect paired by seed and `position` (width,
    size), against `x`; each slope's interval is across seeds, Holm-corrected across the family ('baseline gap' and
    'ARM − baseline' in its `trend` column)."""
    ok = successful(runs)
    baseline = ok[ok[arm_column] == BASELINE]
    slopes = {"baseline gap": seed_slopes(baseline, x, "gap")}
    reference = baseline.set_index(["seed", position])["test_accuracy"]
    for arm in arms:
        mine = ok[ok[arm_column] == arm].set_index(["seed", position])
        paired = (mine["test_accuracy"] - reference).dropna().rename("effect").reset_index()
        slopes[f"{arm} − baseline"] = seed_slopes(paired.merge(mine[x].reset_index(), on=["seed", position]), x,
                                                  "effect")
    return effect_family(slopes).rename(columns={"effect": "trend"})


def trend_direction(row: pd.Series) -> int:
    """Return what a trend's row says, as a sign: +1 rising, -1 falling (Holm-significant), 0 none detected."""
    if not row["holm_p"] < ALPHA:
        return 0
    return 1 if row["diff_mean"] > 0 else -1


def leave_one_out(family: Callable[[pd.DataFrame], pd.DataFrame], runs: pd.DataFrame, position: str) -> pd.DataFrame:
    """Fit a trend family (`family`: runs -> one row per trend) again with each value of `position` (a width, a
    size, a group) left out in turn, where at least two values remain; return the refits, the left-out value in
    column `left_out`. A trend whose verdict changes when one value is left out rests on that one arm."""
    values = sorted(runs[position].dropna().unique())
    if len(values) < 3:
        return pd.DataFrame(columns=["left_out", "diff_mean", "adj_ci_low", "adj_ci_high", "holm_p"])
    return pd.concat([family(runs[runs[position] != value]).assign(left_out=value) for value in values],
                     ignore_index=True)


def resting_on(refits: pd.DataFrame, name_column: str, trend: str, direction: int) -> pd.Series | None:
    """Return the refit of `trend` whose verdict differs from `direction` (the one arm the verdict rests on: the
    first such left-out value), or None where leaving out any one value keeps the verdict."""
    mine = refits[refits[name_column] == trend] if len(refits) else refits
    for _, row in mine.iterrows():
        if trend_direction(row) != direction:
            return row
    return None


def t_interval(values, confidence: float = CONFIDENCE) -> tuple:
    """Return the t-interval of the mean of `values` along their last axis (arrays give arrays): NaN below 2
    values, the mean itself when they do not vary."""
    values = np.asarray(values, dtype=float)
    count = values.shape[-1]
    if count < 2:
        nan = np.full(values.shape[:-1], math.nan)
        return (float(nan), float(nan)) if values.ndim == 1 else (nan, nan)
    mean = values.mean(axis=-1)
    half = scipy_stats.t.ppf((1 + confidence) / 2, count - 1) * values.std(axis=-1, ddof=1) / math.sqrt(count)
    low, high = mean - half, mean + half
    return (float(low), float(high)) if values.ndim == 1 else (low, high)


def mean_confidence_interval(values) -> tuple[float, float, float]:
    """Return (mean, low, high): the mean of the finite `values` and its 95% t-interval (NaN bounds below 2)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return math.nan, math.nan, math.nan
    return (float(values.mean()), *t_interval(values))


def equivalence_p(values: pd.Series, margin: float) -> float:
    """Return the p-value of the paired two one-sided tests (TOST) that the mean lies within ±margin
    (statsmodels' ttost_paired); without spread, 0 when every difference lies inside, else 1."""
    from statsmodels.stats.weightstats import ttost_paired  # loaded only when a comparison is analysed

    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return math.nan
    if np.all(values == values[0]):
        return 0.0 if abs(values[0]) < margin else 1.0
    return float(ttost_paired(values, np.zeros_like(values), -margin, margin)[0])


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


def power(effect_size: float, pairs: int, alpha: float = ALPHA) -> float:
    """Return the power of a two-sided paired t-test at `alpha` for a standardized effect (d_z)."""
    df = pairs - 1
    critical = scipy_stats.t.ppf(1 - alpha / 2, df)
    shift = effect_size * math.sqrt(pairs)
    value = scipy_stats.nct.sf(critical, df, shift) + scipy_stats.nct.cdf(-critical, df, shift)
    return 1.0 if math.isnan(value) else float(value)  # scipy's nct gives NaN only far out, where power is 1


def min_detectable_effect(sd: float, pairs: int, alpha: float = ALPHA) -> float:
    """Return the smallest mean difference detected with POWER at level `alpha` by `pairs` pairs, if their true SD
    is `sd`."""
    if pairs < 2 or not sd > 0:
        return math.nan
    high = 1.0
    while power(high, pairs, alpha) < POWER:
        high *= 2
    return optimize.brentq(lambda d: power(d, pairs, alpha) - POWER, 0.0, high) * sd


def sd_bounds(sd: float, pairs: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Return the two-sided chi-squared confidence interval of a normal SD estimated as `sd` from `pairs` values."""
    if pairs < 2 or not sd > 0:
        return math.nan, math.nan
    df = pairs - 1
    return (sd * math.sqrt(df / scipy_stats.chi2.ppf((1 + confidence) / 2, df)),
            sd * math.sqrt(df / scipy_stats.chi2.ppf((1 - confidence) / 2, df)))


def planning_sd(sd: float, pairs: int) -> float:
    """Return the one-sided PLANNING_SD_CONFIDENCE upper confidence bound of a pilot's SD (`pairs` values)."""
    if pairs < 2 or not sd > 0:
        return math.nan
    df = pairs - 1
    return sd * math.sqrt(df / scipy_stats.chi2.ppf(1 - PLANNING_SD_CONFIDENCE, df))


def seeds_for(effect: float, sd: float, alpha: float = ALPHA) -> int | None:
    """Return how many pairs detect a true difference of `effect` with POWER at level `alpha` if their SD is `sd`
    (None past MAX_SEEDS, or without a spread)."""
    if not (sd > 0 and abs(effect) > 0):
        return None
    effect_size = abs(effect) / sd
    for pairs in range(2, MAX_SEEDS + 1):
        if power(effect_size, pairs, alpha) >= POWER:
            return pairs
    return None


def equivalence_power(margin: float, sd: float, pairs: int, alpha: float = ALPHA) -> float:
    """Return the power of the paired TOST, each one-sided test at `alpha`, to show equivalence within ±margin when
    the true difference is 0 and the pairs' SD is `sd` (Phillips 1990's noncentral-t approximation)."""
    df = pairs - 1
    critical = scipy_stats.t.ppf(1 - alpha, df)
    return max(0.0, 1 - 2 * float(scipy_stats.nct.cdf(critical, df, margin * math.sqrt(pairs) / sd)))


def seeds_for_equivalence(margin: float, sd: float, alpha: float = ALPHA) -> int | None:
    """Return how many pairs show equivalence within ±margin with POWER (TOST at `alpha`) when the true difference
    is 0 and the SD is `sd` (None past MAX_SEEDS, or without a spread)."""
    if not (sd > 0 and margin > 0):
        return None
    return next((pairs for pairs in range(2, MAX_SEEDS + 1)
                 if equivalence_power(margin, sd, pairs, alpha) >= POWER), None)


def describe_pairs(values: pd.Series, margin: float | None = DEFAULT_MARGIN, alpha: float = ALPHA) -> dict:
    """Return every statistic of one set of paired differences (the equivalence test within ±margin; none
    without a margin); the smallest detectable effect at level `alpha` (Holm's first step in a family)."""
    mean, t_low, t_high = mean_confidence_interval(values)
    t_p, wilcoxon_p = paired_tests(values)
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    sd_low, sd_high = sd_bounds(sd, len(values))
    return {
        "pairs": len(values), "diff_mean": mean, "diff_sd": sd,
        "t_ci_low": t_low, "t_ci_high": t_high, "t_p": t_p, "wilcoxon_p": wilcoxon_p,
        "cohens_dz": mean / sd if sd > 0 else math.nan,
        "tost_p": math.nan if margin is None else equivalence_p(values, margin),
        "min_detectable_effect": min_detectable_effect(sd, len(values), alpha), "sd_low": sd_low, "sd_high": sd_high,
        "mde_low": min_detectable_effect(sd_low, len(values), alpha),
        "mde_high": min_detectable_effect(sd_high, len(values), alpha), "mde_alpha": alpha,
    }


def holm_levels(pvalues: pd.Series) -> pd.Series:
    """Return the level at which Holm's step-down tests each p-value: ALPHA / (m - rank), rank 0 the smallest."""
    valid = pvalues.dropna().sort_values(kind="stable")
    levels = pd.Series([ALPHA / (len(valid) - rank) for rank in range(len(valid))], index=valid.index)
    return levels.reindex(pvalues.index)


def effect_family(differences: dict, margin: float | None = None) -> pd.DataFrame:
    """Describe a family of paired differences (name -> values per seed), a row each (column 'effect'), corrected
    for the family by Holm's step-down method: holm_p, and the interval at the level Holm tested each (adj_ci:
    1 - level). With a margin, the equivalence tests (TOST) too, Holm-corrected, with their 1 - 2 x level
    intervals (eq_ci), which lie inside ±margin when equivalence is shown."""
    first_step = ALPHA / max(1, len(differences))  # the level Holm's first step needs: every verdict's worst case
    effects = pd.DataFrame([{"effect": name, **describe_pairs(values, margin, first_step)}
                            for name, values in differences.items()])
    effects["holm_p"], effects["holm_level"] = holm(effects["t_p"]), holm_levels(effects["t_p"])
    effects["tost_holm_p"], effects["tost_level"] = holm(effects["tost_p"]), holm_levels(effects["tost_p"])
    for bounds, level, sides in (("adj_ci", "holm_level", 1), ("eq_ci", "tost_level", 2)):
        intervals = [t_interval(values, 1 - sides * alpha) if pd.notna(alpha) else (math.nan, math.nan)
                     for values, alpha in zip(differences.values(), effects[level])]
        effects[[f"{bounds}_low", f"{bounds}_high"]] = pd.DataFrame(intervals, index=effects.index)
    effects["margin"] = math.nan if margin is None else margin
    return effects


def paired_effects(runs: pd.DataFrame, techniques: list[str], margin: float = DEFAULT_MARGIN,
                   target: float | None = None, baseline: str = BASELINE) -> pd.DataFrame:
    """Return a row per technique and metric: the paired difference to the `baseline` arm, its tests and verdict.

    Per metric, Holm corrects the t-tests of zero across the techniques, and for test accuracy also the
    equivalence tests within ±margin; each is shown with the interval at the level Holm tested it
    (adj_ci: 1 - level; eq_ci: 1 - 2 x level, inside ±margin when equivalence is shown). `target` (a
    difference, e.g. 0.002) adds the seeds that would detect it, planned with the SD's upper bound.
    """
    families = []
    for metric in EFFECT_METRICS:
        differences = {technique: paired_differences(runs, metric, technique, baseline) for technique in techniques}
        family = effect_family(differences, margin if metric == PRIMARY else None)  # the margin is in accuracy
        families.append(family.rename(columns={"effect": "technique"}))
    effects = pd.concat(families, ignore_index=True)
    effects.insert(1, "metric", np.repeat(EFFECT_METRICS, len(techniques)))
    if target is not None:
        primary = effects["metric"] == PRIMARY
        effects["target_effect"] = np.where(primary, target, math.nan)
        effects["planning_sd"] = [planning_sd(sd, n) if first else math.nan
                                  for sd, n, first in zip(effects["diff_sd"], effects["pairs"], primary)]
        levels = effects["mde_alpha"]
        effects["seeds_for_target"] = [seeds_for(target, sd, level) if first else None
                                       for sd, level, first in zip(effects["planning_sd"], levels, primary)]
        effects["seeds_for_equivalence"] = [seeds_for_equivalence(margin, sd, level) if first else None
                                            for sd, level, first in zip(effects["planning_sd"], levels, primary)]
    effects["verdict"] = [str(verdict(row, metric)) for (_, row), metric in zip(effects.iterrows(), effects["metric"])]
    return effects.astype({"pairs": "Int64", **({"seeds_for_target": "Int64", "seeds_for_equivalence": "Int64"}
                                                 if target is not None else {})})


def verdict(effect: pd.Series, metric: str = PRIMARY) -> Verdict:
    """Say from the numbers what a difference is, by this precedence (test accuracy, Holm-corrected tests):
    significant and not equivalent: helps / hurts; significant and equivalent: a negligible help / hurt;
    equivalent (TOST): equivalent within ±margin; neither: inconclusive. Other metrics: higher / lower, or
    not significant."""
    if effect["pairs"] < 2:
        return Verdict(Kind.CANNOT_TELL)
    significant = effect["holm_p"] < ALPHA
    if metric != PRIMARY:
        if not significant:
            return Verdict(Kind.NOT_SIGNIFICANT)
        if metric == "test_crossentropy":
            return Verdict(Kind.HELPS if effect["diff_mean"] < 0 else Kind.HURTS)
        return Verdict(Kind.HIGHER if effect["diff_mean"] > 0 else Kind.LOWER)
    equivalent = effect["tost_holm_p"] < ALPHA
    direction = Kind.HELPS if effect["diff_mean"] > 0 else Kind.HURTS
    margin_pp = effect["margin"] * 100
    if significant:
        return Verdict(Kind.NEGLIGIBLE, direction, margin_pp) if equivalent else Verdict(direction)
    if equivalent:
        return Verdict(Kind.EQUIVALENT, margin_pp=margin_pp)
    return Verdict(Kind.INCONCLUSIVE, uncorrected=effect["t_p"] < ALPHA)  # its unadjusted 95% interval excludes 0


def _warmup_in_epochs(runs: pd.DataFrame) -> pd.Series:
    """Return which runs' epoch seconds hold their compile: the first of a structure in a TensorFlow process whose
    epochs were too few backend calls to tell it apart (runs recorded before the flag: none)."""
    flags = runs["warmup_in_epochs"] if "warmup_in_epochs" in runs else pd.Series(False, index=runs.index)
    return flags.fillna(False).astype(bool)


def _timed(ok: pd.DataFrame, timed: pd.DataFrame, technique: str) -> pd.DataFrame:
    """Return the runs of an arm that time its epochs: those without a compile in them, or all where none is."""
    free = timed[timed["technique"] == technique]
    return free if len(free) else ok[ok["technique"] == technique]


def summarize(runs: pd.DataFrame, techniques: list[str], effects: pd.DataFrame | None = None,
              metrics: tuple[str, ...] = SUMMARY_METRICS, baseline: str = BASELINE) -> pd.DataFrame:
    """Return one row per arm, the `baseline` arm first: the mean and SD over seeds of each of `metrics`, and the
    paired test-accuracy effect with its verdict."""
    effects = paired_effects(runs, techniques, baseline=baseline) if effects is None else effects
    primary = effects[effects["metric"] == PRIMARY].set_index("technique")
    gaps = effects[effects["metric"] == "gap"].set_index("technique")
    ok = successful(runs)
    timed = ok[~_warmup_in_epochs(ok)]
    baseline_time = _timed(ok, timed, baseline)["seconds_per_epoch"].mean()
    carried = ["diff_sd", "t_p", "wilcoxon_p", "holm_p", "tost_p", "tost_holm_p", "cohens_dz", "margin",
               "adj_ci_low", "adj_ci_high", "holm_level", "eq_ci_low", "eq_ci_high", "tost_level",
               "min_detectable_effect", "sd_low", "sd_high", "mde_low", "mde_high", "mde_alpha", "target_effect",
               "planning_sd", "seeds_for_target", "seeds_for_equivalence", "verdict"]
    rows = []
    for technique in [baseline, *techniques]:
        arm = ok[ok["technique"] == technique]
        row = {
            "technique": technique,
            "runs": int((runs["technique"] == technique).sum()),
            "diverged": int(((runs["technique"] == technique) & (runs["status"] != "ok")).sum()),
        }
        for metric in metrics:
            measured = _timed(ok, timed, technique) if metric == "seconds_per_epoch" else arm
            row[f"{metric}_mean"] = float(measured[metric].mean()) if len(measured) else math.nan
            row[f"{metric}_sd"] = float(measured[metric].std(ddof=1)) if len(measured) > 1 else math.nan
        compiling = arm.loc[_warmup_in_epochs(arm), "seconds_per_epoch"]  # apart: their epochs hold the compile
        row["compiling_seconds_per_epoch_mean"] = float(compiling.mean()) if len(compiling) else math.nan
        row["time_ratio"] = row["seconds_per_epoch_mean"] / baseline_time
        if technique != baseline:
            effect = primary.loc[technique]
            row.update(pairs=effect["pairs"], test_accuracy_diff=effect["diff_mean"],
                       diff_ci_low=effect["t_ci_low"], diff_ci_high=effect["t_ci_high"],
                       gap_diff=gaps.loc[technique, "diff_mean"],
                       **{name: effect[name] for name in carried if name in effect})
        rows.append(row)
    summary = pd.DataFrame(rows)
    return summary.astype({name: "Int64" for name in ("pairs", "seeds_for_target", "seeds_for_equivalence")
                           if name in summary})


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Return the expected calibration error: over equal-width bins of the top probability, the share-weighted
    mean |accuracy − mean top probability| (Guo et al. 2017)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    error = 0.0
    for index in np.unique(which):
        members = which == index
        error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


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
