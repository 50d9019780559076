"""The technique registry: look-ups, parameters, and that each technique changes what it says."""

import keras
import numpy as np
import pytest
from helpers import config_for

from regbench.constraints import ExactMaxNorm
from regbench.errors import UsageError
from regbench.models import build_model
from regbench.techniques import (
    TECHNIQUES,
    applicable,
    check_architecture,
    get_technique,
    hooks_for,
    parse_param_overrides,
    parse_setting,
    resolve_params,
)
from regbench.train import compile_model, measured_weights, train_run

EXPECTED = {"none", "l1", "l2", "weight-decay", "dropout", "batchnorm", "ghost-batchnorm", "early-stopping", "max-norm",
            "augment", "label-smoothing", "gaussian-noise", "ema", "mixup", "spatial-dropout"}


def test_registry_has_every_technique_with_defaults():
    assert set(TECHNIQUES) == EXPECTED
    assert dict(resolve_params(("dropout",), {})) == {"rate": 0.5, "input_rate": 0.0}
    assert dict(resolve_params(("l2",), {})) == {"l2": 1e-4}
    assert dict(resolve_params(("early-stopping",), {})) == {"patience": 3, "min_delta": 0.0}


def test_unknown_technique_lists_valid_names_and_suggests_the_closest():
    with pytest.raises(UsageError) as error:
        get_technique("dropuot")
    assert "did you mean 'dropout'" in str(error.value)
    assert all(name in str(error.value) for name in EXPECTED)


def test_settings_are_canonical_and_checked():
    assert parse_setting("l2+dropout") == ("dropout", "l2")
    with pytest.raises(UsageError, match="twice"):
        parse_setting("l2+l2")
    with pytest.raises(UsageError, match="combines 'none'"):
        parse_setting("none+l2")


def test_param_overrides_are_typed_ranged_and_spell_checked():
    settings = [("dropout",), ("l2",)]
    assert parse_param_overrides(("rate=0.3", "l2=1e-3"), settings) == {"rate": 0.3, "l2": 1e-3}
    with pytest.raises(UsageError, match=r"did you mean 'rate'.*input_rate, l2, rate"):
        parse_param_overrides(("rte=0.3",), settings)
    with pytest.raises(UsageError, match=r"out of range; allowed 0 <= rate < 1"):
        parse_param_overrides(("rate=1",), settings)
    with pytest.raises(UsageError, match="not a valid float"):
        parse_param_overrides(("l2=abc",), settings)
    with pytest.raises(UsageError, match="not a valid int"):
        parse_param_overrides(("patience=2.5",), [("early-stopping",)])
    with pytest.raises(UsageError, match="name=value"):
        parse_param_overrides(("rate",), settings)
    with pytest.raises(UsageError, match="take: none"):
        parse_param_overrides(("rate=0.1",), [("batchnorm",)])


def layer_types(model):
    return [type(layer).__name__ for layer in model.layers]


def kernels(model):
    return [layer for layer in model.layers if hasattr(layer, "kernel")]


def test_baseline_is_the_course_mlp():
    model, hooks = compile_model(config_for("none"))
    callbacks = hooks.callbacks
    assert [layer.units for layer in kernels(model)] == [128, 64, 10]
    assert model.count_params() == 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10
    assert "Dropout" not in layer_types(model) and "BatchNormalization" not in layer_types(model)
    assert all(layer.kernel_regularizer is None and layer.kernel_constraint is None for layer in kernels(model))
    assert model.optimizer.weight_decay is None and callbacks == []


def test_l1_and_l2_put_keras_penalties_on_every_kernel():
    model, _ = compile_model(config_for("l1+l2", {"l1": 2e-5, "l2": 3e-4}))
    for layer in kernels(model):
        assert isinstance(layer.kernel_regularizer, keras.regularizers.L1L2)
        assert np.isclose(layer.kernel_regularizer.l1, 2e-5) and np.isclose(layer.kernel_regularizer.l2, 3e-4)
        assert layer.bias_regularizer is None


def test_weight_decay_sets_the_optimizers_decoupled_decay_on_kernels_only():
    model, _ = compile_model(config_for("weight-decay", {"wd": 1e-3}))
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert np.isclose(model.optimizer.weight_decay, 1e-3)
    model.optimizer.build(model.trainable_variables)
    decayed = {v.path for v in model.trainable_variables if model.optimizer._use_weight_decay(v)}
    assert decayed == {layer.kernel.path for layer in kernels(model)}
    assert all(layer.kernel_regularizer is None for layer in kernels(model))


def test_dropout_follows_each_hidden_layer_and_optionally_the_input():
    model, _ = compile_model(config_for("dropout", {"rate": 0.3, "input_rate": 0.2}))
    rates = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert rates == [0.2, 0.3, 0.3]
    types = layer_types(model)
    assert types.index("Dropout") == types.index("Flatten") + 1


def test_batchnorm_sits_between_each_hidden_layer_and_its_activation():
    model, _ = compile_model(config_for("batchnorm"))
    types = layer_types(model)
    assert types.count("BatchNormalization") == 2
    for index, name in enumerate(types):
        if name == "BatchNormalization":
            assert types[index - 1] == "Dense" and types[index + 1] == "Activation"


def test_early_stopping_watches_validation_crossentropy_and_restores_best():
    _, hooks = compile_model(config_for("early-stopping", {"patience": 2}))
    (make,) = hooks.callbacks
    callback = make()
    assert isinstance(callback, keras.callbacks.EarlyStopping)
    assert callback.monitor == "val_crossentropy" and callback.patience == 2 and callback.restore_best_weights


def test_max_norm_constrains_every_kernel():
    model, _ = compile_model(config_for("max-norm", {"c": 2.0}))
    for layer in kernels(model):
        assert isinstance(layer.kernel_constraint, ExactMaxNorm)
        assert layer.kernel_constraint.max_value == 2.0


def test_cnn_has_two_conv_blocks_and_techniques_reach_its_conv_layers():
    config = config_for("batchnorm+dropout+max-norm", architecture="cnn", hidden=(128,))
    model = build_model(config, hooks_for(config.technique, config.technique_params))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [layer.filters for layer in convs] == [32, 64]
    assert all(isinstance(layer.kernel_constraint, ExactMaxNorm) for layer in convs)
    types = layer_types(model)
    assert types.count("BatchNormalization") == 3 and types.count("Dropout") == 3
    assert model.output_shape == (None, 10)


@pytest.fixture(scope="module")
def baseline(split):
    return train_run(config_for("none"), split)


@pytest.mark.parametrize("architecture, hidden", [("mlp", (128, 64)), ("mlp", (7,)), ("cnn", (128,)), ("cnn", (5, 3))])
def test_the_parameter_count_checked_before_training_is_the_models(architecture, hidden):
    from regbench.config import parameter_count

    model, _ = compile_model(config_for("none", architecture=architecture, hidden=hidden))
    assert parameter_count(architecture, hidden, (28, 28), 10) == model.count_params()


def test_adamw_decays_weights_in_the_weight_decay_arm_only():
    assert compile_model(config_for("none", optimizer="adamw"))[0].optimizer.weight_decay == 0.0
    assert compile_model(config_for("weight-decay", {"wd": 0.01}, optimizer="adamw"))[0].optimizer.weight_decay == 0.01
    # runs stored while AdamW's baseline carried Keras' default decay keep ids of their own
    assert config_for("none", optimizer="adamw").run_id != config_for("none", optimizer="adam").run_id
    assert "adamw_weight_decay" in config_for("none", optimizer="adamw").identity()
    assert "adamw_weight_decay" not in config_for("none").identity()


def test_max_norm_leaves_unbound_units_bit_for_bit_and_scales_bound_ones_to_c():
    weights = np.random.default_rng(0).normal(size=(50, 8)).astype("float32")
    weights[:, 0] *= 10  # one unit above c = 20
    norms = np.linalg.norm(weights, axis=0)
    assert norms[0] > 20 > norms[1:].max()
    constrained = keras.ops.convert_to_numpy(ExactMaxNorm(20.0)(keras.ops.convert_to_tensor(weights)))
    assert np.array_equal(constrained[:, 1:], weights[:, 1:])  # Keras' MaxNorm moves these by |w| / (1e-7 + |w|)
    assert np.isclose(np.linalg.norm(constrained[:, 0]), 20.0, rtol=1e-6)
    # runs of Keras' MaxNorm keep ids of their own
    assert "max_norm_rule" in config_for("max-norm").identity() and "max_norm_rule" not in config_for("l2").identity()


def test_a_real_setting_does_change_the_outcome(split, baseline):
    treated = train_run(config_for("l2", {"l2": 0.05}), split)
    assert treated.record["weights_l2"] < baseline.record["weights_l2"]
    assert treated.epochs[0]["penalty"] > 0 == baseline.epochs[0]["penalty"]


def test_parameter_names_are_unique_and_clash_with_no_option():
    from regbench.cli import cli

    names = [param.name for technique in TECHNIQUES.values() for param in technique.params]
    assert len(names) == len(set(names))
    options = {name.lstrip("-").replace("-", "_") for command in cli.commands.values() for option in command.params
               for name in option.opts}
    assert not set(names) & options


def test_all_means_every_technique_that_applies_to_the_architecture():
    assert "spatial-dropout" not in applicable("mlp") and "spatial-dropout" in applicable("cnn")
    assert set(applicable("cnn")) == EXPECTED - {"none"}
    with pytest.raises(UsageError, match="spatial-dropout needs --architecture cnn"):
        check_architecture([("spatial-dropout",)], "mlp")
    with pytest.raises(UsageError, match="normalization"):
        parse_setting("batchnorm+ghost-batchnorm")


def test_augment_transforms_training_images_only():
    model, _ = compile_model(config_for("augment", {"shift": 0.2, "rotation": 20.0, "zoom": 0.2}))
    layers = [layer for layer in model.layers if layer.name.startswith("random_")]
    assert [type(layer).__name__ for layer in layers] == ["RandomTranslation", "RandomRotation", "RandomZoom"]
    assert np.isclose(layers[1].factor[1], 20 / 360)
    images = np.random.default_rng(0).random((8, 28, 28, 1)).astype("float32")
    for layer in layers:
        assert np.array_equal(keras.ops.convert_to_numpy(layer(images, training=False)), images)
        assert not np.allclose(keras.ops.convert_to_numpy(layer(images, training=True)), images)


def test_label_smoothing_smooths_the_training_loss_but_not_the_compared_crossentropy():
    model, _ = compile_model(config_for("label-smoothing", {"smoothing": 0.2}))
    predicted = np.array([[0.7, 0.2, 0.1] + [0.0] * 7], dtype="float32")
    targets = np.full(10, 0.02)
    targets[0] += 0.8
    expected = -np.sum(targets * np.log(np.clip(predicted[0], 1e-7, 1)))
    assert np.isclose(float(model.loss(np.array([0]), predicted)), expected, rtol=1e-5)
    crossentropy = keras.metrics.SparseCategoricalCrossentropy()
    crossentropy.update_state(np.array([0]), predicted)
    assert np.isclose(float(crossentropy.result()), -np.log(0.7), rtol=1e-5)  # the metric: plain
    assert "SparseCategoricalCrossentropy" in str(model.get_compile_config()["metrics"])  # what runs report


def test_gaussian_noise_follows_each_hidden_layer_and_the_input_in_training_only():
    model, _ = compile_model(config_for("gaussian-noise", {"noise_stddev": 0.5, "input_noise_stddev": 0.25}))
    noises = [layer for layer in model.layers if isinstance(layer, keras.layers.GaussianNoise)]
    assert [layer.stddev for layer in noises] == [0.25, 0.5, 0.5]
    types = layer_types(model)
    assert types.index("GaussianNoise") == types.index("Flatten") + 1
    zeros = np.zeros((4000, 64), dtype="float32")
    assert np.array_equal(keras.ops.convert_to_numpy(noises[-1](zeros, training=False)), zeros)
    assert np.isclose(np.std(keras.ops.convert_to_numpy(noises[-1](zeros, training=True))), 0.5, rtol=0.02)


def test_ema_measures_the_averaged_weights_and_trains_the_raw_ones(split, baseline):
    config = config_for("ema", {"ema_horizon": 4.0})
    model, _ = compile_model(config)
    assert model.optimizer.use_ema and np.isclose(model.optimizer.ema_momentum, 0.75)
    run = train_run(config, split)
    averages = [keras.ops.convert_to_numpy(v) for v in run.model.optimizer.variables if "average" in v.path]
    assert len(averages) == len(run.model.trainable_variables)
    for variable, average in zip(run.model.trainable_variables, averages):  # the run ends on the averaged weights
        assert np.array_equal(keras.ops.convert_to_numpy(variable), average)
    assert run.record["test_crossentropy"] != baseline.record["test_crossentropy"]
    raw = [keras.ops.convert_to_numpy(v) + 1 for v in run.model.trainable_variables]
    for variable, value in zip(run.model.trainable_variables, raw):
        variable.assign(value)
    with measured_weights(run.model):  # swapped to the averages within, the raw weights back after
        assert np.array_equal(keras.ops.convert_to_numpy(run.model.trainable_variables[0]), averages[0])
    assert np.array_equal(keras.ops.convert_to_numpy(run.model.trainable_variables[0]), raw[0])


def test_mixup_blends_images_and_their_labels_alike_and_leaves_the_model_alone(split):
    hooks = hooks_for("mixup", (("mixup_alpha", 0.4),))
    images, labels = split.x_train[:64], np.eye(10, dtype="float32")[split.y_train[:64]]
    mixed, soft = hooks.epoch_data(images, labels, 7)
    assert mixed.shape == images.shape and np.allclose(soft.sum(axis=1), 1, atol=1e-6)
    weight = soft[np.arange(64), split.y_train[:64]]  # the share of each image's own label (both labels alike: 1)
    blended = [i for i in range(64) if weight[i] < 0.999]
    assert len(blended) > 32
    for i in blended[:8]:  # each blended image is weight × its own + (1 − weight) × one other training image
        partner = (mixed[i] - weight[i] * images[i]) / (1 - weight[i])
        assert np.abs(images - partner).reshape(64, -1).max(axis=1).min() < 1e-4
    assert np.array_equal(hooks.epoch_data(images, labels, 7)[0], mixed)  # seeded
    model, _ = compile_model(config_for("mixup"))
    assert layer_types(model) == layer_types(compile_model(config_for("none"))[0])


def test_spatial_dropout_drops_whole_feature_maps_after_each_conv_block():
    model, _ = compile_model(config_for("spatial-dropout", {"spatial_rate": 0.5}, architecture="cnn", hidden=(16,)))
    types = layer_types(model)
    assert types.count("SpatialDropout2D") == 2
    assert all(types[index - 1] == "MaxPooling2D" for index, name in enumerate(types) if name == "SpatialDropout2D")
    layer = next(layer for layer in model.layers if isinstance(layer, keras.layers.SpatialDropout2D))
    maps = keras.ops.convert_to_numpy(layer(np.ones((4, 7, 7, 64), dtype="float32"), training=True))
    per_map = maps.reshape(4, 49, 64)
    assert np.all(per_map.min(axis=1) == per_map.max(axis=1))  # every map all dropped or all kept
    assert 0.3 < np.mean(per_map[:, 0, :] == 0) < 0.7


def test_a_run_of_keras_maxnorm_cannot_be_retrained_and_verify_says_why():
    from pathlib import Path

    import pandas as pd

    from regbench.verify import config_from_row

    runs = pd.read_csv(Path(__file__).parents[1] / "results" / "runs.csv")
    row = runs[runs["technique"] == "max-norm"].iloc[0].to_dict()
    current = config_from_row(row)  # a committed run of this version's rule rebuilds
    with pytest.raises(UsageError, match="was trained by an earlier rule than this version's max_norm_rule"):
        config_from_row({**row, "run_id": current.legacy_run_id()})  # the same run under Keras' MaxNorm
    assert config_from_row(runs[runs["technique"] == "l2"].iloc[0].to_dict()).run_id  # other runs still rebuild
