"""The declared search of `compare --tune`: proposals, ranges, choices, and tuned comparisons end to end."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from regbench.cli import cli
from regbench.errors import UsageError
from regbench.store import RunStore
from regbench.techniques import parse_setting
from regbench.tune import parse_search_ranges, propose, searches_for

from tests.conftest import SMALL_MNIST


def test_the_same_setting_gets_the_same_distinct_proposals_within_its_range():
    searches = searches_for(parse_setting("dropout+l2"), {})
    assert [s.param.name for s in searches] == ["l2", "rate"]  # input_rate declares no search
    first, again = (propose("dropout+l2", searches, 8, "accuracy").proposals for _ in range(2))
    assert first == again and len(first) == 8
    assert all(1e-6 <= p["l2"] <= 1e-1 and 0 <= p["rate"] <= 0.8 for p in first)
    assert max(p["l2"] for p in first) / min(p["l2"] for p in first) > 1e3  # a log scale spans decades
    patience = propose("early-stopping", searches_for(("early-stopping",), {"patience": (1, 4)}), 4, "accuracy")
    assert sorted(p["patience"] for p in patience.proposals) == [1, 2, 3, 4]  # integers, none twice


def test_the_best_finished_trial_is_chosen_and_diverged_trials_are_not():
    tuning = propose("l2", searches_for(("l2",), {}), 4, "accuracy")
    assert tuning.choose([0.90, math.nan, 0.95, 0.93]) == 2
    lowest = propose("l2", searches_for(("l2",), {}), 3, "crossentropy")
    assert lowest.choose([0.3, 0.2, 0.25]) == 1
    with pytest.raises(UsageError, match="every trial of l2 diverged"):
        propose("l2", searches_for(("l2",), {}), 2, "accuracy").choose([math.nan, math.nan])


@pytest.mark.parametrize("text, message", [
    ("rte=0:0.5", "unknown parameter 'rte'"), ("rate=0.5", "NAME=LO:HI"), ("rate=0.6:0.2", "LO must be below HI"),
    ("l2=0:0.1", "log scale, so LO must be above 0"), ("rate=0:1.5", "allowed 0 <= rate < 1"),
])
def test_bad_search_ranges_are_refused(text, message):
    with pytest.raises(UsageError, match=message):
        parse_search_ranges((text,), [("dropout",), ("l2",)])


def test_a_search_range_replaces_the_declared_one_or_searches_an_undeclared_parameter():
    ranges = parse_search_ranges(("rate=0.1:0.3", "input_rate=0:0.2"), [("dropout",)])
    searches = {s.param.name: (s.low, s.high) for s in searches_for(("dropout",), ranges)}
    assert searches == {"input_rate": (0.0, 0.2), "rate": (0.1, 0.3)}


def test_a_choice_indexes_the_proposals_even_when_repeats_were_asked_again():
    tuning = propose("early-stopping", searches_for(("early-stopping",), {"patience": (1, 4)}), 4, "accuracy")
    assert len(tuning.study.trials) > 4  # some asks rounded to an earlier integer and were asked again
    best = tuning.proposals.index({"patience": 3})
    assert tuning.choose([0.9 + 0.05 * (index == best) for index in range(4)]) == best


def _tuned(runner, tmp_path, data, out, store="store.sqlite", techniques="dropout,batchnorm"):
    args = ["compare", "--technique", techniques, "--tune", "--trials", "2", "--tune-seeds", "1",
            "--seed-list", "0", "--train-size", "200", "--epochs", "1", "--select", "best-val", "--data", str(data),
            "--out", str(tmp_path / out), "--store", str(tmp_path / store)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / out / "manifest.json").read_text())
    return result, manifest, pd.read_csv(tmp_path / out / "tuning.csv")


def test_tuning_reads_no_test_label_and_a_rerun_trains_only_what_is_missing(runner, tmp_path):
    result, manifest, tuning = _tuned(runner, tmp_path, SMALL_MNIST, "out")
    assert "batchnorm has nothing to tune" in result.stderr and "6 runs trained" in result.stdout
    assert list(tuning["setting"]) == ["none", "dropout", "dropout"] and tuning["chosen"].sum() == 1
    chosen = manifest["tuned"]["chosen"]["dropout"]
    assert 0 <= chosen["params"]["rate"] <= 0.8 and manifest["techniques"]["dropout"] == chosen["params"]
    row = tuning[tuning["chosen"]].iloc[0]  # the trial printed is the one tuning.csv marks (once one apart)
    assert f"(trial {int(row['trial'])} of 0..1, as tuning.csv numbers them;" in result.stderr
    assert manifest["tune"]["searches"]["dropout"]["rate"] == {"low": 0.0, "high": 0.8, "scale": "linear",
                                                               "integer": False}
    assert manifest["tune"]["untuned"] == ["batchnorm"] and manifest["techniques"]["batchnorm"] == {}
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("technique")
    assert summary.loc["dropout", "tuned_score"] == pytest.approx(chosen["score"])
    assert "## Tuning" in (tmp_path / "out" / "REPORT.md").read_text()
    # a tuning run lost (a killed tune): the rerun proposes the same trials and trains only that one
    store = RunStore(tmp_path / "store.sqlite")
    store.remove([tuning["run_id"].iloc[-1]])
    again, manifest_again, _ = _tuned(runner, tmp_path, SMALL_MNIST, "out")
    assert "1 runs trained, 5 reused" in again.stdout and manifest_again["tuned"] == manifest["tuned"]
    # the same command on data whose test labels are a random permutation chooses exactly the same
    arrays = dict(np.load(SMALL_MNIST))
    arrays["y_test"] = np.random.default_rng(0).permutation(arrays["y_test"])
    np.savez(tmp_path / "permuted.npz", **arrays)
    _, permuted, permuted_tuning = _tuned(runner, tmp_path, tmp_path / "permuted.npz", "permuted", "other.sqlite",
                                          techniques="dropout")
    assert permuted["tuned"] == manifest["tuned"]
    pd.testing.assert_series_equal(permuted_tuning["val_accuracy"], tuning["val_accuracy"])
    runs, permuted_runs = (pd.read_csv(tmp_path / name / "runs.csv").set_index("technique")["test_accuracy"]
                           for name in ("out", "permuted"))
    assert runs["dropout"] != permuted_runs["dropout"]  # the test set did change
