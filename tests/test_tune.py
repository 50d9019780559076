"""The declared search of `compare --tune`: proposals, ranges, choices, and tuned comparisons end to end."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from regbench.cli import cli
from regbench.config import RunConfig
from regbench.errors import UsageError
from regbench.store import RunStore
from regbench.techniques import parse_setting
from regbench.tune import TuneRequest, parse_search_ranges, plan_tuning, propose, searches_for
from tests.conftest import SMALL_MNIST


def test_the_same_setting_gets_the_same_distinct_proposals_within_its_range():
    searches = searches_for(parse_setting("dropout+l2"), {})
    assert [s.param.name for s in searches] == ["l2", "rate"]  # input_rate declares no search
    first, again = (propose("dropout+l2", searches, 8, "accuracy")[2] for _ in range(2))
    assert first == again and len(first) == 8
    assert all(1e-6 <= p["l2"] <= 1e-1 and 0 <= p["rate"] <= 0.8 for p in first)
    assert max(p["l2"] for p in first) / min(p["l2"] for p in first) > 1e3  # a log scale spans decades
    _, _, patience = propose("early-stopping", searches_for(("early-stopping",), {"patience": (1, 4)}), 4, "accuracy")
    assert sorted(p["patience"] for p in patience) == [1, 2, 3, 4]  # integers, none twice


BASE = RunConfig(train_size=300, epochs=16, data="planted")


def simulate(plan, score):
    """Replay `plan`, storing every run it asks for with validation accuracy score(candidate, seed, epochs) (no run
    trains), until it chooses; return the outcome, the stages and every run asked for."""
    from regbench.tune import outcome

    rows, stages = {}, 0
    while True:
        replay, choices = plan.replay(rows)
        if choices is not None:
            return outcome(plan, replay, choices), stages, replay.looked_up
        stages += 1
        for run_id, config in replay.needed.items():
            candidate = replay.looked_up[run_id][0]
            rows[run_id] = pd.Series({"status": "partial" if config.stop_epoch else "ok", "val_crossentropy": 0.0,
                                      "val_accuracy": score(candidate, config.seed, config.stop_epoch or config.epochs),
                                      "best_val_epoch": 1})


def noise(seed: int, number: int) -> float:
    return float(np.random.default_rng([seed, number + 1]).normal(0, 0.001))


def test_a_race_separates_a_planted_gap_and_says_when_it_cannot():
    request = TuneRequest(trials=8, seeds=(1000, 1001), race_seeds=8)
    plan = plan_tuning((("l2", (("l2", 1e-4),)),), BASE, request)
    best = 5  # trial 5 is 0.5 pp better than every other trial and than off; the seeds' noise is 0.1 pp
    gap, _, _ = simulate(plan, lambda c, seed, epochs: 0.9 + 0.005 * (c.number == best) + noise(seed, c.number))
    chosen = gap.record["chosen"]["l2"]
    assert chosen["trial"] == best and chosen["decided"] and not chosen["off"]
    assert chosen["lead_runner_up"]["mean"] > 3 * chosen["lead_runner_up"]["se"]
    assert chosen["lead_baseline"]["mean"] == pytest.approx(0.005, abs=0.003)
    # no gap at all: the race runs to its seed limit and says the choice is within noise
    flat, _, _ = simulate(plan_tuning((("l2", (("l2", 1e-4),)),), BASE, request),
                          lambda c, seed, epochs: 0.9 + noise(seed, c.number))
    assert not flat.record["chosen"]["l2"]["decided"] and flat.record["chosen"]["l2"]["seeds"] == 8
    # off (the baseline) planted best: validation prefers no l2, and the arm trains at l2 = 0
    off, _, _ = simulate(plan_tuning((("l2", (("l2", 1e-4),)),), BASE, request),
                         lambda c, seed, epochs: 0.9 + 0.005 * (c.technique == "none") + noise(seed, c.number))
    assert off.record["chosen"]["l2"]["off"] and dict(off.settings)["l2"] == (("l2", 0.0),)


def test_successive_halving_trains_few_trials_to_the_end_and_keeps_the_best():
    request = TuneRequest(trials=32, seeds=(1000, 1001), race_seeds=2)
    plan = plan_tuning((("dropout", (("input_rate", 0.0), ("rate", 0.5))),), BASE, request)
    rate = {c.number: dict(c.params)["rate"] for c in plan.searches["dropout"].trials}
    # validation peaks at rate 0.3, at every budget
    result, _, asked = simulate(plan, lambda c, seed, epochs: 0.9 - abs(dict(c.params).get("rate", 0) - 0.3))
    epochs = [config.stop_epoch or config.epochs for candidate, config in asked.values() if candidate.number >= 0
              and candidate.technique != "none"]
    assert sorted(set(epochs)) == [1, 4, 16]
    cost = sum(epochs) / (8 * 2 * 16)  # against 8 trials trained to the end on both tuning seeds
    assert epochs.count(1) == 64 and cost < 1.5, cost
    assert dict(dict(result.settings)["dropout"])["rate"] == min(rate.values(), key=lambda r: abs(r - 0.3))
    pruned = result.record["trials"]["dropout"]
    assert sum(trial["pruned_at"] is not None for trial in pruned) >= 24  # most stop after 1 or 4 epochs


def test_the_baseline_searches_the_shared_options_in_the_same_budget():
    request = TuneRequest(trials=8, seeds=(1000, 1001), race_seeds=2, shared=("lr",))
    plan = plan_tuning((("l2", (("l2", 1e-4),)),), BASE, request)
    assert [s.param.name for s in plan.baseline.searches] == ["lr"] and len(plan.baseline.trials) == 8
    assert {s.param.name for s in plan.searches["l2"].searches} == {"l2", "lr"}
    assert all(1e-4 <= dict(c.shared)["lr"] <= 1e-2 for c in plan.baseline.trials)  # a tenth to ten times 1e-3
    # validation prefers lr 2e-3 for everyone; the baseline finds its own best lr too
    result, _, _ = simulate(plan, lambda c, seed, epochs: 0.9 - abs(math.log(dict(c.shared)["lr"] / 2e-3)) / 100)
    lrs = [dict(c.shared)["lr"] for c in plan.baseline.trials]
    assert dict(result.shared["none"])["lr"] == min(lrs, key=lambda lr: abs(math.log(lr / 2e-3)))
    assert result.record["baseline"]["searched"] == dict(result.shared["none"])
    # a technique with no values of its own is still searched: over the shared options
    assert [s.param.name for s in plan_tuning((("batchnorm", ()),), BASE, request).searches["batchnorm"].searches] \
        == ["lr"]


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


def _tuned(runner, tmp_path, data, out, store="store.sqlite"):
    args = ["compare", "--technique", "dropout", "--tune", "--trials", "3", "--tune-seeds", "1", "--race-seeds", "2",
            "--tune-shared", "lr", "--seed-list", "0", "--train-size", "200", "--epochs", "2", "--select", "best-val",
            "--data", str(data), "--out", str(tmp_path / out), "--store", str(tmp_path / store)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / out / "manifest.json").read_text())
    return result, manifest, pd.read_csv(tmp_path / out / "tuning.csv")


def test_tuning_reads_no_test_label_and_a_rerun_trains_only_what_is_missing(runner, tmp_path):
    result, manifest, tuning = _tuned(runner, tmp_path, SMALL_MNIST, "out")
    chosen, baseline = manifest["tuned"]["chosen"], manifest["tuned"]["baseline"]
    assert set(chosen) == {"dropout"} and set(baseline["searched"]) == {"lr"}
    assert manifest["tune"]["searches"]["dropout"]["rate"] == {"low": 0.0, "high": 0.8, "scale": "linear",
                                                               "integer": False}
    # every arm trains its evaluation runs at its own chosen learning rate, the baseline at its own
    runs = pd.read_csv(tmp_path / "out" / "runs.csv").set_index("technique")
    assert runs.loc["none", "lr"] == baseline["shared"]["lr"]
    assert runs.loc["dropout", "lr"] == (baseline if chosen["dropout"]["off"] else chosen["dropout"])["shared"]["lr"]
    title = (tmp_path / "out" / "REPORT.md").read_text().splitlines()[2]  # the line under the heading
    assert f"lr tuned per arm (baseline {baseline['shared']['lr']:g})" in title
    # successive halving: every trial's first rung is a partial run, stored as one, apart from the whole run
    partial = tuning[tuning["status"] == "partial"]
    assert len(partial) >= 6 and set(partial["epochs_trained"]) == {1}
    stored = RunStore(tmp_path / "store.sqlite").load(list(partial["run_id"])).runs
    assert set(stored["status"]) == {"partial"} and stored["test_accuracy"].isna().all()
    listed = runner.invoke(cli, ["runs", "--store", str(tmp_path / "store.sqlite"), "--status", "partial"])
    assert listed.exit_code == 0 and partial["run_id"].iloc[0] in listed.output
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("technique")
    assert summary.loc["dropout", "tuned_score"] == pytest.approx(chosen["dropout"]["score"])
    report = (tmp_path / "out" / "REPORT.md").read_text()
    assert "## Tuning" in report and "lead over runner-up" in report
    verified = runner.invoke(cli, ["verify", str(tmp_path / "out"), "--store", str(tmp_path / "store.sqlite")])
    assert verified.exit_code == 0 and "successive halving and race replayed" in verified.output, verified.output
    # a tuning run lost (a killed tune): the rerun replays the same decisions and trains only that one
    store = RunStore(tmp_path / "store.sqlite")
    store.remove([tuning["run_id"].iloc[-1]])
    again, manifest_again, _ = _tuned(runner, tmp_path, SMALL_MNIST, "out")
    assert "1 runs trained" in again.stdout and manifest_again["tuned"] == manifest["tuned"]
    # the same command on data whose test labels are a random permutation chooses exactly the same
    arrays = dict(np.load(SMALL_MNIST))
    arrays["y_test"] = np.random.default_rng(0).permutation(arrays["y_test"])
    np.savez(tmp_path / "permuted.npz", **arrays)
    _, permuted, permuted_tuning = _tuned(runner, tmp_path, tmp_path / "permuted.npz", "permuted", "other.sqlite")
    assert permuted["tuned"] == manifest["tuned"]
    pd.testing.assert_series_equal(permuted_tuning["val_accuracy"], tuning["val_accuracy"])
    permuted_runs = pd.read_csv(tmp_path / "permuted" / "runs.csv").set_index("technique")
    assert runs.loc["dropout", "test_accuracy"] != permuted_runs.loc["dropout", "test_accuracy"]  # it did change


def _tiny_tune(runner, tmp_path, technique: str, *options: str):
    """Tune `technique` on two trials, one tuning seed and no race, then compare on seeds 0 and 1."""
    result = runner.invoke(cli, ["compare", "--technique", technique, "--tune", "--trials", "2", "--tune-seeds", "1",
                                 "--race-seeds", "1", "--seed-list", "0,1", "--train-size", "200", *options,
                                 "--out", str(tmp_path / "out"), "--store", str(tmp_path / "store.sqlite")])
    assert result.exit_code == 0, result.output
    return result


def test_off_chosen_compares_the_untreated_model_with_itself_exactly(runner, tmp_path):
    # c from 1e6 up never binds: every trial trains as the baseline, so the tie goes to off
    result = _tiny_tune(runner, tmp_path, "max-norm", "--search", "c=1e6:1e7", "--epochs", "2")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["tuned"]["chosen"]["max-norm"]["off"] and manifest["techniques"]["max-norm"] == {"c": 1e30}
    assert "chose off (validation prefers no max-norm at this budget)" in result.stderr
    runs = pd.read_csv(tmp_path / "out" / "runs.csv")
    treated, baseline = (runs[runs["technique"] == name].set_index("seed") for name in ("max-norm", "none"))
    assert (treated["run_id"] != baseline["run_id"]).all()  # trained, not copied ...
    for column in ("test_accuracy", "test_crossentropy", "weights_l2"):  # ... and bit for bit the baseline's
        assert (treated[column] == baseline[column]).all(), column
    effects = pd.read_csv(tmp_path / "out" / "effects.csv")
    assert (effects.loc[effects["metric"] == "test_accuracy", "diff_mean"] == 0.0).all()
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("technique")
    assert summary.loc["max-norm", "verdict"] == "switched off: validation prefers none"
    assert "**max-norm** (c=1e+30): switched off. Validation prefers no max-norm at this budget" in \
        (tmp_path / "out" / "REPORT.md").read_text()


@pytest.mark.parametrize("options, message", [
    (["--tune-shared", "momentum"], "--tune-shared: 'momentum' cannot be searched; choose from lr, batch-size, epochs"),
    (["--tune-shared", "lr,lr"], "names an option twice"),
    (["--tune-seeds", "3", "--race-seeds", "2"], "--race-seeds 2 is below the 3 tuning seeds"),
    (["--tune-seed-list", "5,6", "--race-seeds", "4", "--seed-list", "7"],
     "tuning seed(s) 7 are also evaluation seeds"),
    (["--search", "lr=1e-4:1e-2"], "unknown parameter 'lr'"),  # lr is searched only with --tune-shared lr
])
def test_bad_tuning_budgets_and_shared_options_are_refused_in_one_line(runner, tmp_path, options, message):
    result = runner.invoke(cli, ["compare", "--technique", "l2", "--tune", "--out", str(tmp_path / "out"),
                                 "--store", str(tmp_path / "store.sqlite"), *options])
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_tune_repeats_repeat_the_whole_search_on_seeds_of_their_own(runner, tmp_path):
    _tiny_tune(runner, tmp_path, "l2", "--tune-repeats", "2", "--epochs", "1")
    repeats = json.loads((tmp_path / "out" / "manifest.json").read_text())["tune_repeats"]
    assert [r["tuning_seeds"] for r in repeats] == [[1000], [1100]]
    assert all(r["arms"]["l2"]["test_accuracy_diff"] is not None for r in repeats)
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("technique")
    assert repeats[0]["arms"]["l2"]["test_accuracy_diff"] == pytest.approx(summary.loc["l2", "test_accuracy_diff"])
    assert "## Tuning variance" in (tmp_path / "out" / "REPORT.md").read_text()
