"""Studies: the quick runs of the studies without a search (once, shared), their oracles, and every study's errors.

tests/test_studies_tuned.py runs the other half, so that the two halves share `make test`'s workers."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from regbench.cli import cli
from regbench.studies import CATALOGUE
from tests.helpers import check_choices_blind, check_quick_report, run_quick_studies

HERE = ("weight-decay", "dropout-scaling", "batchnorm-noise", "strength")


@pytest.fixture(scope="module")
def quick_studies(tmp_path_factory):
    """Run this half's studies with --quick once on the small real subset; return the root and their outputs."""
    root = tmp_path_factory.mktemp("studies")
    return root, run_quick_studies(root, HERE)


def test_list_names_every_study(runner):
    result = runner.invoke(cli, ["study", "--list"])
    assert result.exit_code == 0
    assert [line.split()[0] for line in result.output.splitlines()] == list(CATALOGUE)


@pytest.mark.parametrize("name", HERE)
def test_quick_study_writes_a_report_with_a_verdict_from_its_numbers(quick_studies, name):
    check_quick_report(*quick_studies, name)


def test_weight_decay_plain_sgd_l2_equals_decoupled_decay_and_momentum_and_adam_do_not(quick_studies):
    out = quick_studies[0] / "out" / "weight-decay-quick"
    table = pd.read_csv(out / "weight_comparison.csv").set_index("optimizer")
    sgd, momentum = table.loc["plain SGD"], table.loc["SGD, momentum 0.9"]
    assert sgd["max_relative_difference"] < 1e-4
    for name in ("l2", "wd"):  # blank-pixel weights shrink by 1 - lr * 2k per step, either way
        assert sgd[f"{name}_shrink_per_step"] == pytest.approx(1 - 0.01 * 2 * 5e-3, abs=1e-6)
    assert momentum["wd_shrink_per_step"] == pytest.approx(1 - 0.01 * 2 * 5e-3, abs=1e-6)  # decay ignores momentum
    assert momentum["l2_shrink_per_step"] < momentum["wd_shrink_per_step"] - 1e-4  # L2 acts through the velocity
    steps = pd.read_csv(out / "divergence_by_step.csv")
    by = {name: rows for name, rows in steps.groupby("optimizer")}
    assert by["plain SGD"]["l2_vs_decay_max"].iloc[0] <= 4 * np.finfo(np.float32).eps  # one step: rounding only
    sgd_steps = by["plain SGD"]
    assert (sgd_steps["l2_vs_decay_max"] <= sgd_steps["rounding_allowance"]).all()  # within rounding at every horizon
    for other in ("SGD, momentum 0.9", "Adam"):
        assert by[other]["decay_over_control"].iloc[-1] > 100  # far beyond amplified rounding
        assert (by[other]["l2_vs_decay_max"] > 10 * by[other]["rounding_allowance"]).any()


def test_l2_under_momentum_shrinks_by_the_slow_root_of_its_recurrence():
    from regbench.studies.weight_decay import l2_shrink_with_momentum

    lr, decay, momentum = 0.01, 1e-3, 0.9
    v, w = 0.0, 1.0
    for _ in range(20_000):  # heavy ball on a weight whose only gradient is decay * w
        v = momentum * v - lr * decay * w
        w = w + v
    v_next = momentum * v - lr * decay * w
    assert (w + v_next) / w == pytest.approx(l2_shrink_with_momentum(lr, decay, momentum), abs=1e-9)
    assert l2_shrink_with_momentum(lr, decay, momentum) == pytest.approx(1 - lr * decay / (1 - momentum), abs=1e-7)
    assert l2_shrink_with_momentum(lr, decay, 0.0) == pytest.approx(1 - lr * decay)


def test_dropout_scaling_ratios_match_theory(quick_studies):
    table = pd.read_csv(quick_studies[0] / "out" / "dropout-scaling-quick" / "by_rate.csv")
    first = table[table["layer"] == 1]
    assert np.allclose(first["inverted_train_over_inference"], 1, atol=0.05)
    assert np.allclose(first["classic_forgot_inference_over_train"], 1 / first["keep"], rtol=0.05)


def test_classic_dropout_matched_by_the_derivation_trains_like_inverted_dropout(quick_studies):
    table = pd.read_csv(quick_studies[0] / "out" / "dropout-scaling-quick" / "formulations.csv")
    matched = table[table["formulation"] == "classic, matched"]
    plain = table[table["formulation"] == "classic"]
    assert set(matched["optimizer"]) == {"sgd", "adam"}
    assert (matched["max_weight_difference"] < 1e-5).all() and (matched["prediction_agreement"] == 1.0).all()
    assert (plain["max_weight_difference"] > 1e-2).all()  # kernels p times as large, steps of another size
    steps = pd.read_csv(quick_studies[0] / "out" / "dropout-scaling-quick" / "formulations_by_step.csv")
    assert (steps["matched_over_control"] <= 10).all() and (steps["classic_apart"] > 0.1).all()


def test_expected_calibration_error_on_a_hand_computed_case():
    from regbench.stats import expected_calibration_error

    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 0, 1])
    # bins of width 0.25: [0.5, 0.75) holds 0.6, 0.7: accuracy 1, confidence 0.65; [0.75, 1] holds 0.9, 0.9: 0.5, 0.9
    assert expected_calibration_error(probabilities, labels, bins=4) == pytest.approx(0.5 * 0.35 + 0.5 * 0.4)


def test_group_mean_noise_follows_sigma_over_root_g(quick_studies):
    table = pd.read_csv(quick_studies[0] / "out" / "batchnorm-noise-quick" / "group_statistics_noise.csv")
    assert table["mean_error_over_predicted"].between(0.75, 1.33).all()
    assert table["mean_error_over_sigma"].is_monotonic_decreasing


def test_ghost_batchnorm_normalizes_each_group_by_its_own_statistics():
    import keras

    from regbench.models import GhostBatchNormalization

    x = np.random.default_rng(0).normal(2.0, 3.0, size=(12, 5)).astype("float32")
    layer = GhostBatchNormalization(4, momentum=0.0, epsilon=1e-3)
    out = np.asarray(layer(x, training=True))
    for start in (0, 4, 8):  # each group of 4 rows is normalized by its own mean and biased variance
        group = x[start:start + 4]
        expected = (group - group.mean(axis=0)) / np.sqrt(group.var(axis=0) + 1e-3)
        assert np.allclose(out[start:start + 4], expected, atol=1e-4)
    groups = x.reshape(3, 4, 5)  # momentum 0: the moving statistics are this batch's groups', variances unbiased
    assert np.allclose(np.asarray(layer.moving_mean), groups.mean(axis=1).mean(axis=0), atol=1e-5)
    assert np.allclose(np.asarray(layer.moving_variance), groups.var(axis=1, ddof=1).mean(axis=0), rtol=1e-4)
    whole = keras.layers.BatchNormalization(epsilon=1e-3)  # one group of the whole batch is BatchNormalization
    assert np.allclose(np.asarray(GhostBatchNormalization(12, epsilon=1e-3)(x, training=True)),
                       np.asarray(whole(x, training=True)), atol=1e-4)


def test_a_ghost_group_that_does_not_divide_the_batches_is_refused(runner, tmp_path):
    from tests.conftest import SMALL_MNIST

    result = runner.invoke(cli, ["compare", "--technique", "ghost-batchnorm", "--param", "group=5", "--train-size",
                                 "200", "--epochs", "1", "--data", str(SMALL_MNIST), "--store",
                                 str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "ghost-batchnorm group=5 must divide the batch size 32" in result.output
    assert not (tmp_path / "s.sqlite").exists()


def test_seed_slopes_take_one_slope_per_seed():
    from regbench.stats import seed_slopes

    table = pd.DataFrame({"seed": [0, 0, 0, 1, 1, 1], "x": [1, 2, 3, 1, 2, 3], "y": [1, 3, 5, 0, 1, 2]})
    assert seed_slopes(table, "x", "y").tolist() == pytest.approx([2.0, 1.0])


@pytest.mark.parametrize("args, message", [
    (["study", "nonsense"], "unknown study 'nonsense'"),
    (["study", "capacty"], "did you mean 'capacity'?"),
    (["study"], "name a study"),
    (["study", "data-size", "--quick", "--train-size", "500"], "study data-size sets --train-size itself"),
    (["study", "weight-decay", "--quick", "--optimizer", "sgd"], "study weight-decay sets --optimizer itself"),
    (["study", "strength", "--train-size", "99"], "--train-size"),
    (["study", "all", "--quick", "--train-size", "500"], "study batchnorm-noise sets --train-size itself"),
    (["study", "weight-decay", "--quick", "--architecture", "cnn"], "study weight-decay needs --architecture mlp"),
    (["study", "strength", "--quick", "--seeds", "1"], "'--seeds'"),
    (["study", "batchnorm-noise", "--quick", "--batch-size", "64"], "study batchnorm-noise sets --batch-size itself"),
    (["study", "dropout-scaling", "--quick", "--activation", "tanh"], "study dropout-scaling sets --activation itself"),
    (["study", "large-weights", "--quick", "--architecture", "cnn"], "study large-weights needs --architecture mlp"),
    (["study", "strength", "--quick", "--config", "/no/such/study.toml"],
     "--config /no/such/study.toml: cannot be read"),
])
def test_study_mistakes_exit_2_with_one_line(runner, tmp_path, args, message):
    """Every study is checked before any trains: nothing is trained or written."""
    out = ["--out", str(tmp_path / "out")] if len(args) > 1 else []
    result = runner.invoke(cli, [*args, "--store", str(tmp_path / "s.sqlite"), *out] if len(args) > 1 else args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "s.sqlite").exists() and not (tmp_path / "out").exists()


def test_one_effect_formatter_says_when_there_is_no_interval():
    from regbench.wording import effect_text

    assert effect_text(0.0123, -0.001, 0.02) == "+1.23 pp [-0.10, +2.00]"
    assert effect_text(0.0123, np.nan, np.nan) == "+1.23 pp [no interval: one pair, or no spread]"
    assert "nan" not in effect_text(np.nan, np.nan, np.nan)
    assert effect_text(0.5, 0.25, 0.75, digits=3, scale=1, unit="") == "+0.500 [+0.250, +0.750]"


def test_strength_chooses_on_the_tuning_seeds_validation_and_pairs_against_the_baseline(quick_studies):
    out = quick_studies[0] / "out" / "strength-quick"
    runs, table = pd.read_csv(out / "runs.csv"), pd.read_csv(out / "strength.csv").set_index("technique")
    tuning = pd.read_csv(out / "tuning_runs.csv")
    assert not set(tuning["seed"]) & set(runs["seed"])  # the choice's seeds are not the evaluation seeds
    validation = tuning.groupby("technique")["val_accuracy"].mean().drop("none")
    assert table.index[table["chosen_on_validation"]].tolist() == [validation.idxmax()]
    by_seed = runs.pivot_table(index="seed", columns="technique", values="test_accuracy")
    for arm in validation.index:  # the hand-paired difference
        assert table.loc[arm, "test_accuracy_diff"] == pytest.approx((by_seed[arm] - by_seed["none"]).mean())


def test_strength_chooses_blind_to_test_numbers_and_evaluation_seeds(quick_studies):
    root, _ = quick_studies
    assert [name for name in HERE if (root / "out" / f"{name}-quick" / "choices.csv").exists()] == ["strength"]
    check_choices_blind(root, ["strength"])


def test_strength_chooses_each_technique_s_best_on_tuning_means_the_weakest_on_a_tie():
    from regbench.studies.strength import choices

    sweeps = {"l2": ("l2", (1e-4, 1e-3, 1e-2)), "dropout": ("rate", (0.2, 0.5))}
    means = pd.Series({"none": 0.99, "l2 l2=0.01": 0.95, "l2 l2=0.001": 0.97, "l2 l2=0.0001": 0.97,
                       "dropout rate=0.2": 0.90, "dropout rate=0.5": 0.91})
    assert choices(means, sweeps) == {"l2": "l2 l2=0.0001", "dropout": "dropout rate=0.5"}


def test_fields_added_later_leave_stored_run_ids_unchanged():
    from dataclasses import replace

    from regbench.config import RunConfig, with_added_defaults

    manifest = json.loads((Path(__file__).parents[1] / "results" / "manifest.json").read_text())
    config = with_added_defaults(manifest["config"])
    config["hidden"] = tuple(config["hidden"])
    for technique, run_ids in manifest["run_ids"].items():
        params = tuple(sorted(manifest["techniques"].get(technique, {}).items()))
        rebuilt = [RunConfig(**config, technique=technique, technique_params=params, seed=seed).run_id
                   for seed in manifest["seeds"][:len(run_ids)]]  # sequential seeds: each arm its first seeds
        assert rebuilt == run_ids, technique  # the committed reference runs keep their ids
    standard = RunConfig()
    for changed in ({"variant": "classic-dropout"}, {"schedule": "cosine"}, {"warmup_epochs": 1}, {"stop_epoch": 1}):
        assert replace(standard, **changed).run_id != standard.run_id


def test_classic_dropout_drops_without_rescale_and_scales_by_keep_at_inference():
    from regbench.variants import ClassicDropout

    layer = ClassicDropout(0.75, seed=3)
    x = np.ones((200, 100), dtype="float32")
    trained = np.asarray(layer(x, training=True))
    assert set(np.unique(trained)) == {0.0, 1.0}
    assert abs(trained.mean() - 0.25) < 0.02
    assert np.allclose(np.asarray(layer(x, training=False)), 0.25)
    layer.scale_at_inference = False
    assert np.allclose(np.asarray(layer(x, training=False)), 1.0)


def test_exact_statistics_batchnorm_normalizes_with_the_training_set_statistics(split):
    import keras

    from regbench.train import compile_model
    from regbench.variants import PopulationBatchNormalization, refresh_population_statistics
    from tests.helpers import config_for

    model, _ = compile_model(config_for("batchnorm", variant="exact-statistics-bn", hidden=(16,)))
    refresh_population_statistics(model, split.x_train)
    layer = next(layer for layer in model.layers if isinstance(layer, PopulationBatchNormalization))
    inputs = keras.Model(model.input, layer.input).predict(split.x_train, verbose=0)
    assert np.allclose(np.asarray(layer.moving_mean), inputs.mean(axis=0), atol=1e-5)
    assert np.allclose(np.asarray(layer.moving_variance), inputs.var(axis=0), rtol=1e-4, atol=1e-6)
    batch = split.x_train[:8]  # training mode uses the same statistics: no batch noise
    assert np.allclose(np.asarray(model(batch, training=True)), np.asarray(model(batch, training=False)), atol=1e-6)


def test_exact_statistics_are_recomputed_every_few_steps(split, monkeypatch):
    from regbench import train, variants
    from regbench.config import STATISTICS_REFRESH_STEPS
    from tests.helpers import config_for

    config = config_for("batchnorm", variant="exact-statistics-bn", hidden=(8,), batch_size=8)
    model, _ = train.compile_model(config)
    refreshed = []
    monkeypatch.setattr(variants, "refresh_population_statistics", lambda model, x: refreshed.append(len(x)))
    order = train.batch_order(0, 0, len(split.y_train))
    logs, _, _ = variants.train_epoch_refreshing(train.epoch_runner(), model, config, split.x_train, split.y_train,
                                                 split.x_train, order)
    steps = -(-len(order) // 8)
    assert refreshed == [len(split.x_train)] * -(-steps // STATISTICS_REFRESH_STEPS)  # before every piece
    assert 0.0 <= logs["accuracy"] <= 1.0

