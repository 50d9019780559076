"""Statistics against hand-computed oracles."""

import math

import pandas as pd
import pytest

from regbench.stats import mean_confidence_interval, paired_differences, summarize


def runs_table(baseline, treated, technique="dropout", statuses=None):
    rows = []
    for seed, (base, other) in enumerate(zip(baseline, treated)):
        for name, value in (("none", base), (technique, other)):
            rows.append({"technique": name, "seed": seed, "test_accuracy": value, "gap": 0.01,
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


def test_summary_leaves_diverged_runs_and_their_pairs_out():
    table = runs_table([0.90, 0.92, 0.91], [0.93, 0.94, 0.10], statuses={("dropout", 2): "diverged"})
    summary = summarize(table, ["dropout"]).set_index("technique")
    assert summary.loc["dropout", "runs"] == 3 and summary.loc["dropout", "diverged"] == 1
    assert summary.loc["dropout", "pairs"] == 2
    assert summary.loc["dropout", "test_accuracy_diff"] == pytest.approx(0.025)
    assert summary.loc["dropout", "test_accuracy_mean"] == pytest.approx(0.935)
    assert summary.loc["none", "test_accuracy_sd"] == pytest.approx(0.01)
