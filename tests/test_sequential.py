"""Sequential seeds (--seeds auto): error rates under the stopping rule as built, and the path on tiny subsets."""

import json

import numpy as np
import pandas as pd
import pytest

from regbench.cli import cli
from regbench.sequential import analyse, next_pairs
from regbench.store import RunStore
from regbench.verdicts import Kind

DIRECTIONAL = (Kind.HELPS, Kind.HURTS, Kind.NEGLIGIBLE)  # a verdict that names a direction


def sequential_verdicts(effects, skewed: bool, rng, batch: int = 5, maximum: int = 40, margin: float = 1.0):
    """Run the stopping rule as compare builds it on simulated paired differences (SD 1 = the margin): every arm
    starts with a batch, the undecided ones get a batch more per look; return every arm's last look."""
    noise = (rng.chisquare(8, (len(effects), maximum)) - 8) / 4 if skewed else rng.normal(0, 1, (len(effects), maximum))
    differences = {f"arm{i}": effect + noise[i] for i, effect in enumerate(effects)}
    looks = {arm: [batch] for arm in differences}
    while True:
        analysed = analyse({arm: values[:looks[arm][-1]] for arm, values in differences.items()}, looks, margin)
        todo = next_pairs({arm: sequence[-1] for arm, sequence in analysed.items()}, batch, maximum)
        if not todo:
            return {arm: sequence[-1] for arm, sequence in analysed.items()}
        for arm, pairs in todo.items():
            looks[arm].append(pairs)


@pytest.mark.parametrize("skewed", [False, True], ids=["normal", "chi-squared 8"])
def test_error_rates_hold_under_the_stopping_rule(skewed):
    rng, runs = np.random.default_rng(7), 300
    null = [sequential_verdicts([0.0, 0.0, 0.0], skewed, rng) for _ in range(runs)]
    family_wise = np.mean([any(look.verdict.kind in DIRECTIONAL for look in arms.values()) for arms in null])
    assert family_wise <= 0.05, family_wise  # a false helps/hurts in any of 3 arms
    decided = np.mean([look.verdict.decided for arms in null for look in arms.values()])
    assert decided > 0.9, decided  # and the rule does decide: equivalent, mostly within the 40 seeds
    at_margin = [sequential_verdicts([1.0, 1.0, -1.0], skewed, rng) for _ in range(runs)]
    false_equivalent = np.mean([any(look.verdict.kind is Kind.EQUIVALENT for look in arms.values())
                                for arms in at_margin])
    assert false_equivalent <= 0.05, false_equivalent


def test_the_seeds_to_decide_are_the_fewest_whose_sequence_would_decide():
    from regbench.sequential import confidence_sequence, seeds_to_decide

    def half_width(pairs: int) -> float:
        standard = np.random.default_rng(0).standard_normal(pairs)
        low, high, _ = confidence_sequence(0.2 + (standard - standard.mean()) / standard.std(ddof=1), [pairs], 0.025)[0]
        return (high - low) / 2

    needed = seeds_to_decide(0.2, 1.0, 1.0, 0.025, start=5)  # equivalent once 0.2 + half-width < 1
    assert half_width(needed) < 0.8 <= half_width(needed - 1)
    assert seeds_to_decide(0.2, 0.0, 1.0, 0.025, start=5) is None  # no spread: nothing to plan with


def _auto(runner, tmp_path, *extra):
    args = ["compare", "--technique", "dropout,l2", "--seeds", "auto", "--seed-batch", "2", "--max-seeds", "6",
            "--train-size", "200", "--epochs", "1", "--out", str(tmp_path / "out"),
            "--store", str(tmp_path / "store.sqlite"), *extra]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    return result, json.loads((tmp_path / "out" / "manifest.json").read_text())


def test_seeds_auto_adds_seeds_to_undecided_arms_and_resumes_to_the_same_looks(runner, tmp_path):
    result, manifest = _auto(runner, tmp_path)
    looks = manifest["sequential"]["looks"]
    assert manifest["sequential"]["max_seeds"] == 6 and set(looks) == {"dropout", "l2"}
    for sequence in looks.values():
        assert [look["seeds"] for look in sequence] == list(range(2, 2 * len(sequence) + 1, 2))
        assert all(look["verdict"] == "undecided" for look in sequence[:-1])  # stopped at its first decision ...
        assert sequence[-1]["verdict"] != "undecided" or sequence[-1]["seeds"] == 6  # ... or at the maximum
        if sequence[-1]["verdict"] == "undecided":  # with an estimate of the seeds that would decide it
            assert sequence[-1]["seeds_to_decide"] is None or sequence[-1]["seeds_to_decide"] > 6
    runs = pd.read_csv(tmp_path / "out" / "runs.csv")
    for arm, sequence in looks.items():
        assert (runs["technique"] == arm).sum() == sequence[-1]["seeds"]
    assert (runs["technique"] == "none").sum() == max(sequence[-1]["seeds"] for sequence in looks.values())
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("technique")
    assert all(summary.loc[arm, "verdict"] == sequence[-1]["verdict"] for arm, sequence in looks.items())
    report = (tmp_path / "out" / "REPORT.md").read_text()
    assert "## Sequential seeds" in report and "seeds per arm, added until decided" in report
    assert "Verdicts rest on each arm's anytime-valid confidence sequence" in report  # not the fixed-sample rule
    assert "Holm corrects each family" not in report and "Wilcoxon signed-rank test cannot" not in report
    undecided = [arm for arm, sequence in looks.items() if sequence[-1]["verdict"] == "undecided"]
    assert report.count("By how much it missed: equivalence needs the sequence inside ±") == len(undecided)
    # killed after its first look: the rerun trains what is missing and reaches the same looks and verdicts
    store = RunStore(tmp_path / "store.sqlite")
    store.remove([run_id for run_id, seed in zip(runs["run_id"], runs["seed"], strict=True) if seed >= 2])
    again, resumed = _auto(runner, tmp_path)
    assert resumed["sequential"]["looks"] == looks and f"{len(runs) - 6} runs trained" in again.stdout


@pytest.mark.parametrize("options, message", [
    (["--seeds", "auto", "--seed-list", "0,1"], "--seeds and --seed-list exclude each other"),
    (["--seeds", "auto", "--seed-batch", "5", "--max-seeds", "4"], "--max-seeds 4 is below the first batch"),
    (["--seeds", "auto", "--seed-batch", "0"], "'--seed-batch'"),
    (["--max-seeds", "20"], "--max-seeds applies to --seeds auto"),
    (["--seeds", "sometimes"], "'sometimes' is neither a number of seeds nor 'auto'"),
])
def test_bad_sequential_options_are_refused_in_one_line(runner, tmp_path, options, message):
    result = runner.invoke(cli, ["compare", "--technique", "l2", "--out", str(tmp_path / "out"),
                                 "--store", str(tmp_path / "store.sqlite"), *options])
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_seeds_auto_decides_on_the_weights_the_report_measures(runner, tmp_path):
    """Under --select best-val the looks pair each run's best-validation test accuracy, as the summary does."""
    _, manifest = _auto(runner, tmp_path, "--epochs", "4", "--lr", "0.05", "--select", "best-val")
    runs = pd.read_csv(tmp_path / "out" / "runs.csv")
    assert (runs["best_test_accuracy"] != runs["test_accuracy"]).any()  # the two measurements differ here
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("technique")
    for arm, sequence in manifest["sequential"]["looks"].items():
        assert sequence[-1]["mean"] == pytest.approx(summary.loc[arm, "test_accuracy_diff"], abs=1e-12)
