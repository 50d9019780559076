"""Studies: the quick runs of the other half of the catalogue (those that search or plant, and any study added
later), once and shared, and their oracles."""

import json

import numpy as np
import pandas as pd
import pytest

from regbench.cli import cli
from regbench.studies import CATALOGUE
from tests.helpers import check_choices_blind, check_quick_report, quick_studies_on_jax, run_quick_studies
from tests.test_studies import HERE as FIRST_HALF

HERE = tuple(name for name in CATALOGUE if name not in FIRST_HALF)  # capacity, data-size, large-weights,
# early-stopping, and any study added later


@pytest.fixture(scope="module")
def quick_studies(tmp_path_factory):
    """Run this half's studies with --quick once on the small real subset; return the root and their outputs."""
    root = tmp_path_factory.mktemp("studies")
    return root, run_quick_studies(root, HERE)


@pytest.mark.parametrize("name", HERE)
def test_quick_study_writes_a_report_with_a_verdict_from_its_numbers(quick_studies, name):
    check_quick_report(*quick_studies, name)


def test_every_choice_is_made_blind_to_test_numbers_and_evaluation_seeds(quick_studies):
    root, _ = quick_studies
    choosing = [name for name in HERE if (root / "out" / f"{name}-quick" / "choices.csv").exists()]
    assert {"capacity", "data-size", "large-weights", "early-stopping"} <= set(choosing)
    check_choices_blind(root, choosing, own_validation=("early-stopping",))


def test_early_stopping_replay_matches_keras(quick_studies):
    report = (quick_studies[0] / "out" / "early-stopping-quick" / "REPORT.md").read_text()
    assert "Real Keras EarlyStopping runs stop at the same epochs as the replay" in report


def test_a_second_quick_run_trains_nothing_and_keeps_the_first_wall_time(quick_studies):
    root, _ = quick_studies
    out = root / "out" / "capacity-quick"
    first = json.loads((out / "manifest.json").read_text())
    result = quick_studies_on_jax(root, ["capacity"])["capacity"]
    output = result["stdout"] + result["stderr"]
    assert result["exit_code"] == 0, output
    assert "to train" not in output and "[run " not in output
    again = json.loads((out / "manifest.json").read_text())
    assert again["runs_trained"] == 0 and first["training"]["runs_trained"] > 0
    assert again["training"] == first["training"]


def test_a_study_directory_refuses_another_setting_and_report_rerenders_it(quick_studies, runner):
    root, _ = quick_studies
    out = root / "out" / "capacity-quick"
    other = quick_studies_on_jax(root, ["capacity"], "--seeds", "3")["capacity"]
    assert other["exit_code"] == 2 and "holds the results of study capacity (different seeds)" in other["stderr"]
    (out / "report.html").unlink()
    result = runner.invoke(cli, ["report", str(out)])
    assert result.exit_code == 0 and "re-rendered report.html from REPORT.md" in result.stdout
    assert (out / "report.html").read_text().count('src="data:image/png;base64,') == len(list(out.glob("*.png")))


def test_early_stopping_counts_rules_restoring_the_same_weights_once():
    from regbench.studies.early_stopping import outcome_table

    def rows(rule, restored, checkpoint, gains):
        return [{"seed": seed, "rule": rule, "restored_epoch": r, "stop_epoch": 10, "epochs_saved": 0,
                 "checkpoint_epoch": c, "test_accuracy_restored": 0.9 + g, "test_accuracy_at_end": 0.9,
                 "test_accuracy_at_checkpoint": 0.9 + g}
                for seed, (r, c, g) in enumerate(zip(restored, checkpoint, gains))]

    stops = pd.DataFrame(rows("patience 3", [4, 5, 6], [4, 5, 6], [0.01, 0.02, 0.03])
                         + rows("patience 5", [4, 5, 6], [4, 5, 6], [0.01, 0.02, 0.03])
                         + rows("patience 1", [2, 3, 3], [4, 5, 6], [0.0, 0.01, 0.0]))
    outcomes = outcome_table(stops)
    # patience 3 = 5 against the end; patience 1 against the end and against its checkpoint; no test of equal weights
    assert outcomes[["reference", "rules"]].values.tolist() == [
        ["end", "patience 3 = patience 5"], ["end", "patience 1"], ["checkpoint", "patience 1"]]
    assert outcomes["diff_mean"].iloc[0] == pytest.approx(0.02)
    assert (outcomes["holm_p"] >= outcomes["t_p"]).all()


def test_stopping_rules_on_a_hand_made_curve():
    from regbench.studies.early_stopping import stop_by_generalization_loss, stop_by_patience

    val = np.array([1.0, 0.8, 0.7, 0.72, 0.69, 0.75, 0.8, 0.9])
    assert stop_by_patience(val, 1) == 4  # epoch 4 does not improve on 0.7
    assert stop_by_patience(val, 2) == 7  # best 0.69 at epoch 5; epochs 6 and 7 do not improve
    assert stop_by_patience(val, 10) == 8  # never fires: the last epoch
    assert stop_by_generalization_loss(val, 2.0) == 4  # 0.72 / 0.7 - 1 = 2.9% > 2
    assert stop_by_generalization_loss(val, 5.0) == 6  # 0.75 / 0.69 - 1 = 8.7% > 5
    error = 1 - np.array([0.90, 0.95, 0.96, 0.955, 0.97])  # an accuracy curve, as its error
    assert stop_by_generalization_loss(error, 10.0) == 4  # 0.045 / 0.04 - 1 = 12.5% > 10
    assert stop_by_patience(error, 2) == 5  # a new best at epoch 5: never fires


def test_large_weights_measures_planted_rows_against_the_median_live_pixel(split):
    import keras

    from regbench.data import planted_pixels
    from regbench.studies.large_weights import weight_measures
    from regbench.train import compile_model
    from tests.helpers import config_for

    model, _ = compile_model(config_for("none", hidden=(8,)))
    first = next(layer for layer in model.layers if isinstance(layer, keras.layers.Dense))
    kernel = np.full((784, 8), 0.5, dtype="float32")
    row, columns = planted_pixels(10)
    kernel[np.arange(784).reshape(28, 28)[row, columns]] = 5.0
    first.kernel.assign(kernel)
    measured = weight_measures(model, np.ones(784, dtype=bool), 10)
    assert measured["planted_over_median"] == pytest.approx(10.0)
    assert measured["planted_weight_over_median"] == pytest.approx(10.0)
    assert measured["sparsity"] == 0.0


def test_planted_pixels_give_the_label_in_training_noise_in_test_and_stay_blank_in_validation(split):
    from regbench.data import plant_features, planted_pixels

    planted = plant_features(split, 10)
    row, columns = planted_pixels(10)
    assert (planted.x_train[:, row, columns].argmax(axis=1) == planted.y_train).all()
    assert planted.x_train[:, row, columns].sum(axis=1).tolist() == [1.0] * len(planted.y_train)
    assert (planted.x_test[:, row, columns].argmax(axis=1) == planted.y_test).mean() < 0.3  # noise, about 1 in 10
    assert planted.x_test[:, row, columns].sum(axis=1).tolist() == [1.0] * len(planted.y_test)
    assert np.array_equal(planted.x_val, split.x_val)  # blank, as in every MNIST image: no shortcut, no test noise
    assert np.array_equal(np.delete(planted.x_train.reshape(len(planted.x_train), -1), range(10), axis=1),
                          np.delete(split.x_train.reshape(len(split.x_train), -1), range(10), axis=1))


def test_capacity_trends_are_one_slope_per_seed(quick_studies):
    out = quick_studies[0] / "out" / "capacity-quick"
    runs, trends = pd.read_csv(out / "runs.csv"), pd.read_csv(out / "trends.csv").set_index("trend")
    baseline = runs[runs["arm"] == "none"]
    slopes = [np.polyfit(np.log10(rows["parameter_count"]), rows["gap"], 1)[0] for _, rows in baseline.groupby("seed")]
    assert trends.loc["baseline gap", "diff_mean"] == pytest.approx(np.mean(slopes))
    assert trends.loc["baseline gap", "pairs"] == len(slopes)


def test_data_size_trains_each_size_to_its_validated_budget_and_pairs_by_seed(quick_studies):
    from regbench.studies.data_size import BUDGET_GAIN, QUICK, epochs_for

    out = quick_studies[0] / "out" / "data-size-quick"
    runs, effects = pd.read_csv(out / "runs.csv"), pd.read_csv(out / "effects_by_size.csv")
    ladder, choices = pd.read_csv(out / "budget_ladder.csv"), pd.read_csv(out / "choices.csv")
    budgets = choices[choices["choice"] == "epochs"].set_index("train_size")["value"].astype(int)
    assert {size: set(rows["epochs"]) for size, rows in runs.groupby("train_size")} == {
        size: {budgets[size]} for size in QUICK.grid["sizes"]}
    for size, rows in ladder.groupby("train_size"):  # doubling from the first budget until the gain is small
        assert rows["epochs"].iloc[0] == epochs_for(size, QUICK.grid["first_images_seen"])
        kept = rows[rows["gain"] < BUDGET_GAIN]
        assert budgets[size] == (kept["epochs"].iloc[0] if len(kept) else rows["doubled"].iloc[-1])
    assert (runs["test_accuracy"] == runs["best_test_accuracy"]).all()  # measured at the best-validation epoch
    smallest = QUICK.grid["sizes"][0]
    row = effects[(effects["metric"] == "test_accuracy") & (effects["train_size"] == smallest)].iloc[0]
    mine = runs[runs["train_size"] == smallest].pivot_table(index="seed", columns="technique", values="test_accuracy")
    assert row["diff_mean"] == pytest.approx((mine[row["technique"]] - mine["none"]).mean())


def test_large_weights_takes_each_technique_as_far_as_one_validation_cost_allows_on_tuning_seeds():
    from regbench.studies.large_weights import MATCHING_COST, matched

    settings = {"l1": ("l1", (1e-5, 1e-4, 1e-3)), "dropout": ("rate", (0.2, 0.5)), "l2": ("l2", (1e-3,))}
    floor = 0.95 - MATCHING_COST
    validation = pd.Series({"none": 0.95, "l1 l1=1e-05": 0.96, "l1 l1=0.0001": floor, "l1 l1=0.001": floor - 0.001,
                            "dropout rate=0.2": 0.99, "dropout rate=0.5": 0.97, "l2 l2=0.001": 0.5})
    # the strongest setting at most the cost below the baseline; l2 has none, and is not matched
    assert matched(validation, settings) == {"l1": "l1 l1=0.0001", "dropout": "dropout rate=0.5"}


def test_planted_runs_carry_the_validation_rule_in_their_identity():
    from regbench.config import RunConfig

    planted = RunConfig(planted=10)
    assert planted.identity()["planted_validation"] == "blank"
    assert "planted_validation" not in RunConfig().identity()  # unplanted runs keep their ids
