"""Statistics against hand-computed oracles."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from regbench.stats import (
    EFFECT_METRICS,
    best_and_final_epochs,
    effect_family,
    equivalence_p,
    holm,
    holm_levels,
    leave_one_out,
    mean_confidence_interval,
    min_detectable_effect,
    paired_differences,
    paired_effects,
    paired_tests,
    planning_sd,
    power,
    sd_bounds,
    seed_slopes,
    seeds_for,
    summarize,
    t_interval,
    trend_direction,
)


def runs_table(baseline, treated, technique="dropout", statuses=None):
    rows = []
    for seed, (base, other) in enumerate(zip(baseline, treated)):
        for name, value in (("none", base), (technique, other)):
            rows.append({"technique": name, "seed": seed, "test_accuracy": value, "gap": 0.01,
                         "test_crossentropy": 1 - value,
                         "epochs_run": 10, "seconds_per_epoch": 2.0, "status": "ok"})
    table = pd.DataFrame(rows)
    for (technique_name, seed), status in (statuses or {}).items():
        table.loc[(table["technique"] == technique_name) & (table["seed"] == seed), "status"] = status
    return table


def test_paired_differences_match_a_hand_computed_table():
    table = runs_table([0.90, 0.92, 0.91], [0.93, 0.94, 0.92])
    assert paired_differences(table, "test_accuracy", "dropout").round(10).tolist() == [0.03, 0.02, 0.01]


def test_interval_that_must_cover_zero():
    # diffs 0.03, 0.02, 0.01: mean 0.02, sd 0.01, t(0.975, df=2) = 4.302653
    mean, low, high = mean_confidence_interval(pd.Series([0.03, 0.02, 0.01]))
    half = 4.302653 * 0.01 / math.sqrt(3)
    assert mean == pytest.approx(0.02)
    assert low == pytest.approx(0.02 - half, abs=1e-6) and high == pytest.approx(0.02 + half, abs=1e-6)
    assert low < 0 < high


def test_interval_that_must_not_cover_zero():
    mean, low, high = mean_confidence_interval(pd.Series([0.030, 0.031, 0.029]))
    half = 4.302653 * 0.001 / math.sqrt(3)
    assert low == pytest.approx(0.03 - half, abs=1e-6) and 0 < low < mean < high


def test_fewer_than_two_values_give_no_interval():
    assert all(math.isnan(v) for v in mean_confidence_interval(pd.Series([], dtype=float)))
    mean, low, high = mean_confidence_interval(pd.Series([0.05]))
    assert mean == 0.05 and math.isnan(low) and math.isnan(high)


def test_time_per_epoch_leaves_out_runs_whose_epochs_also_compiled_and_reports_them_apart():
    table = runs_table([0.90, 0.92, 0.91], [0.93, 0.94, 0.92]).assign(warmup_in_epochs=False)
    first = table["seed"] == 0  # the first run of each model in its process, its compile in its one epoch
    table.loc[first, "seconds_per_epoch"], table.loc[first, "warmup_in_epochs"] = 8.0, True
    table.loc[table["technique"] == "dropout", "seconds_per_epoch"] += 1.0
    summary = summarize(table, ["dropout"]).set_index("technique")
    assert summary.loc["none", "seconds_per_epoch_mean"] == 2.0 and summary.loc["dropout", "time_ratio"] == 1.5
    assert summary.loc["none", "compiling_seconds_per_epoch_mean"] == 8.0
    legacy = summarize(runs_table([0.9, 0.9], [0.9, 0.9]), ["dropout"])  # runs recorded before the flag
    assert legacy["compiling_seconds_per_epoch_mean"].isna().all() and (legacy["seconds_per_epoch_mean"] == 2).all()


def test_summary_leaves_diverged_runs_and_their_pairs_out():
    table = runs_table([0.90, 0.92, 0.91], [0.93, 0.94, 0.10], statuses={("dropout", 2): "diverged"})
    summary = summarize(table, ["dropout"]).set_index("technique")
    assert summary.loc["dropout", "runs"] == 3 and summary.loc["dropout", "diverged"] == 1
    assert summary.loc["dropout", "pairs"] == 2
    assert summary.loc["dropout", "test_accuracy_diff"] == pytest.approx(0.025)
    assert summary.loc["dropout", "test_accuracy_mean"] == pytest.approx(0.935)
    assert summary.loc["none", "test_accuracy_sd"] == pytest.approx(0.01)


def test_holm_matches_a_hand_computed_step_down():
    # sorted p: 0.005 (x4) = 0.02, 0.01 (x3) = 0.03, 0.03 (x2) = 0.06, 0.04 (x1) = 0.04 -> raised to 0.06
    adjusted = holm(pd.Series([0.01, 0.04, 0.03, math.nan, 0.005]))
    assert adjusted.round(10).tolist()[:3] == [0.03, 0.06, 0.06] and adjusted.iloc[4] == pytest.approx(0.02)
    assert math.isnan(adjusted.iloc[3])
    assert holm(pd.Series([0.6, 0.9])).tolist() == [1.0, 1.0]


def test_power_and_smallest_detectable_effect_match_published_values():
    # G*Power, paired t-test, alpha 0.05 two-sided, power 0.8: n = 10 needs d_z = 0.9948; n = 34 detects 0.5
    assert min_detectable_effect(1.0, 10) == pytest.approx(0.9948, abs=2e-3)
    assert power(0.5, 34) == pytest.approx(0.8078, abs=2e-3)
    assert seeds_for(0.005, 0.01) == 34
    assert seeds_for(0.0, 0.01) is None and math.isnan(min_detectable_effect(0.01, 1))


def test_sd_bounds_and_the_planning_sd_follow_the_chi_squared_distribution():
    # n = 5 (df 4): chi2(0.975) = 11.1433, chi2(0.025) = 0.484419, chi2(0.2) = 1.64878
    low, high = sd_bounds(1.0, 5)
    assert low == pytest.approx(math.sqrt(4 / 11.1433), rel=1e-4)
    assert high == pytest.approx(math.sqrt(4 / 0.484419), rel=1e-4)
    assert planning_sd(1.0, 5) == pytest.approx(math.sqrt(4 / 1.64878), rel=1e-4)


COVERAGE_REPETITIONS = 5_000


@pytest.mark.parametrize("confidence", [0.95, 0.90, 1 - 0.05 / 10, 1 - 2 * 0.05 / 10])
def test_every_printed_interval_covers_what_it_claims_by_simulation(confidence):
    # The report prints t-intervals at 95% (unadjusted), at Holm's step levels 1 - 0.05/k (k up to the techniques
    # compared) and, for equivalence, at 1 - 2 x those levels: all from t_interval. Simulated paired differences,
    # normal and chi-squared with 8 degrees of freedom (skewness 1), centred on the true mean 0.
    rng = np.random.default_rng(20261124)
    shortfall = {"normal": 0.01, "chi2(8)": 0.03}  # 95%: at least 94% and 92%
    for n in (3, 5, 10):
        draws = {"normal": rng.normal(size=(COVERAGE_REPETITIONS, n)),
                 "chi2(8)": rng.chisquare(8, size=(COVERAGE_REPETITIONS, n)) - 8}
        for name, values in draws.items():
            low, high = t_interval(values, confidence)
            coverage = np.mean((low <= 0) & (0 <= high))
            assert coverage >= confidence - shortfall[name], (n, name, coverage)


def test_t_interval_matches_scipy_and_an_equivalence_needs_the_interval_inside_the_margin():
    values = [0.012, 0.008, 0.015, 0.004, 0.011]
    expected = scipy_stats.ttest_1samp(values, 0).confidence_interval(0.9)
    assert t_interval(values, 0.9) == pytest.approx((expected.low, expected.high))
    low, high = t_interval(values, 0.9)  # 90% interval inside ±margin  <=>  TOST p < 0.05
    assert (equivalence_p(values, max(abs(low), abs(high)) * 1.01) < 0.05) and equivalence_p(values, high * 0.99) > 0.05
    assert equivalence_p([0.0, 0.0, 0.0], 0.001) == 0.0 and math.isnan(equivalence_p([0.01], 0.001))
    assert holm_levels(pd.Series([0.04, 0.01, math.nan, 0.03])).round(6).tolist()[:2] == [0.05, 0.016667]


def test_paired_tests_use_scipy_and_handle_degenerate_pairs():
    t_p, wilcoxon_p = paired_tests(pd.Series([0.01, 0.02, 0.015, 0.03, 0.012]))
    assert wilcoxon_p == pytest.approx(0.0625)  # exact: all 5 differences positive -> 2 / 2**5
    assert t_p == pytest.approx(scipy_stats.ttest_1samp([0.01, 0.02, 0.015, 0.03, 0.012], 0).pvalue)
    assert paired_tests(pd.Series([0.0, 0.0, 0.0]))[0] == 1.0
    assert all(math.isnan(p) for p in paired_tests(pd.Series([0.01])))


def test_verdicts_follow_the_numbers():
    helps = runs_table([0.90, 0.91, 0.92, 0.90, 0.91], [0.93, 0.94, 0.95, 0.93, 0.935], technique="dropout")
    hurts = runs_table([0.90, 0.91, 0.92, 0.90, 0.91], [0.85, 0.86, 0.88, 0.84, 0.86], technique="l2")
    unclear = runs_table([0.90, 0.91, 0.92, 0.90, 0.91], [0.91, 0.905, 0.925, 0.905, 0.915], technique="l1")
    table = pd.concat([helps, hurts[hurts["technique"] == "l2"], unclear[unclear["technique"] == "l1"]])
    summary = summarize(table, ["dropout", "l2", "l1"]).set_index("technique")
    assert summary.loc["dropout", "verdict"] == "helps" and summary.loc["l2", "verdict"] == "hurts"
    assert summary.loc["l1", "verdict"] == "inconclusive"
    assert summary.loc["l1", "mde_low"] < summary.loc["l1", "min_detectable_effect"] < summary.loc["l1", "mde_high"]
    assert summary.loc["dropout", "holm_p"] >= summary.loc["dropout", "t_p"]
    # the interval at Holm's level excludes 0 for the verdicts that reject it
    assert summary.loc["dropout", "adj_ci_low"] > 0 and summary.loc["l2", "adj_ci_high"] < 0
    assert summary.loc["dropout", "adj_ci_low"] < summary.loc["dropout", "diff_ci_low"]  # wider than 95%
    single = summarize(runs_table([0.9], [0.95]), ["dropout"]).set_index("technique")
    assert single.loc["dropout", "verdict"].startswith("cannot tell")


def test_equivalence_and_negligible_verdicts_need_the_interval_inside_the_margin():
    base = [0.90, 0.91, 0.92, 0.90, 0.91, 0.93]
    same = runs_table(base, [b + d for b, d in zip(base, [0.0002, -0.0001, 0.0001, 0.0, -0.0002, 0.0001])], "l1")
    small = runs_table(base, [b + d for b, d in zip(base, [0.0005, 0.0006, 0.0004, 0.0005, 0.0006, 0.0005])], "l2")
    table = pd.concat([same, small[small["technique"] == "l2"]])
    summary = summarize(table, ["l1", "l2"], paired_effects(table, ["l1", "l2"], margin=0.001)).set_index("technique")
    assert summary.loc["l1", "verdict"] == "equivalent (within ±0.1 pp)"
    assert summary.loc["l2", "verdict"] == "negligible: helps, within ±0.1 pp"
    assert -0.001 < summary.loc["l1", "eq_ci_low"] < summary.loc["l1", "eq_ci_high"] < 0.001
    wide = summarize(table, ["l1", "l2"], paired_effects(table, ["l1", "l2"], margin=0.00001)).set_index("technique")
    assert wide.loc["l1", "verdict"] == "inconclusive" and wide.loc["l2", "verdict"] == "helps"
    planned = paired_effects(table, ["l1"], target=0.002).set_index("metric").loc["test_accuracy"]
    assert planned["seeds_for_target"] == seeds_for(0.002, planned["planning_sd"])
    assert planned["planning_sd"] > planned["diff_sd"]


def test_effects_cover_every_metric_for_every_technique():
    table = runs_table([0.90, 0.92, 0.91], [0.93, 0.94, 0.92])
    table["test_crossentropy"] = 0.3
    effects = paired_effects(table, ["dropout"])
    assert list(effects["metric"]) == list(EFFECT_METRICS)
    assert effects.set_index("metric").loc["gap", "diff_mean"] == 0.0


def test_best_and_final_epochs_differ_when_validation_loss_turns_up():
    epochs = pd.DataFrame({"run_id": ["a"] * 3, "technique": ["none"] * 3, "epoch": [1, 2, 3],
                           "val_accuracy": [0.90, 0.95, 0.94], "val_crossentropy": [0.3, 0.2, 0.25]})
    row = best_and_final_epochs(epochs).iloc[0]
    assert (row["best_epoch"], row["best_val_accuracy"]) == (2, 0.95)
    assert (row["final_epoch"], row["final_val_accuracy"]) == (3, 0.94)


def test_planning_uses_the_level_the_verdict_needs_and_tost_power_matches_simulation():
    from regbench.stats import equivalence_power, seeds_for_equivalence

    # Holm's first step tests at 0.05 / m: four arms need a larger effect, or more seeds, than one
    assert min_detectable_effect(1.0, 10, 0.05 / 4) > min_detectable_effect(1.0, 10) * 1.2
    assert seeds_for(0.5, 1.0, 0.05 / 4) > seeds_for(0.5, 1.0)
    # the TOST power formula against the procedure itself, simulated (true difference 0, SD 1, margin 1)
    rng, pairs, alpha = np.random.default_rng(3), 12, 0.05 / 3
    samples = rng.normal(0.0, 1.0, (20_000, pairs))
    half = scipy_stats.t.ppf(1 - alpha, pairs - 1) * samples.std(axis=1, ddof=1) / np.sqrt(pairs)
    shown = np.mean((samples.mean(axis=1) - half > -1.0) & (samples.mean(axis=1) + half < 1.0))
    assert equivalence_power(1.0, 1.0, pairs, alpha) == pytest.approx(shown, abs=0.02)
    needed = seeds_for_equivalence(1.0, 1.0, alpha)
    assert equivalence_power(1.0, 1.0, needed, alpha) >= 0.8 > equivalence_power(1.0, 1.0, needed - 1, alpha)


def test_an_inconclusive_bottom_line_says_how_many_seeds_would_decide_it():
    from regbench.report import seeds_to_decide_text
    from regbench.stats import seeds_for_equivalence

    row = pd.Series({"diff_sd": 0.001, "pairs": 5, "test_accuracy_diff": 0.0004, "margin": 0.001, "mde_alpha": 0.005})
    sd = planning_sd(0.001, 5)
    text = seeds_to_decide_text(row)
    assert f"about {seeds_for(0.0004, sd, 0.005)} seeds to detect this difference" in text
    assert f"or about {seeds_for_equivalence(0.001, sd, 0.005)} to show equivalence" in text


@pytest.mark.parametrize("text", [
    "helps", "hurts", "negligible: helps, within ±0.1 pp", "negligible: hurts", "equivalent (within ±0.25 pp)",
    "equivalent", "inconclusive", "inconclusive (significant only before Holm correction)", "undecided",
    "switched off: validation prefers none", "cannot tell (fewer than 2 successful pairs)", "not significant",
    "higher", "lower"])
def test_a_verdict_s_text_reads_back_to_the_same_verdict(text):
    from regbench.verdicts import Verdict

    assert str(Verdict.parse(text)) == text


def _trend_of_groups(effect_at) -> pd.DataFrame:
    """A trend family of one slope: 6 seeds' values at groups 4..64 (effect_at(group) plus small noise), per
    doubling."""
    from regbench.wording import with_leave_one_out

    rng = np.random.default_rng(0)
    table = pd.DataFrame([{"seed": seed, "group": group, "value": effect_at(group) + rng.normal(0, 0.0005)}
                          for seed in range(6) for group in (4, 8, 16, 32, 64)])
    table["log2_group"] = np.log2(table["group"])

    def family(kept: pd.DataFrame) -> pd.DataFrame:
        return effect_family({"value": seed_slopes(kept, "log2_group", "value")}).rename(columns={"effect": "trend"})

    return with_leave_one_out(family(table), leave_one_out(family, table, "group"), "trend", "group", "doubling")


def test_a_trend_carried_by_one_arm_is_said_to_rest_on_it():
    carried = _trend_of_groups(lambda group: -0.01 if group == 4 else 0.0).iloc[0]  # only g = 4 differs
    assert trend_direction(carried) == 1 and not carried["robust"]
    assert carried["one_left_out"].startswith("resting on group 4: without it")
    steady = _trend_of_groups(lambda group: 0.002 * np.log2(group)).iloc[0]  # every doubling alike
    assert trend_direction(steady) == 1 and steady["robust"]
    assert steady["one_left_out"] == "the same verdict with any one group left out"
