"""The technique registry: look-ups, parameters, and that each technique changes what it says."""

import keras
import numpy as np
import pytest

from regbench.errors import UsageError
from regbench.models import build_model
from regbench.techniques import (
    TECHNIQUES, get_technique, parse_param_overrides, parse_setting, hooks_for, resolve_params,
)
from regbench.train import compile_model, train_run
from helpers import config_for

EXPECTED = {"none", "l1", "l2", "weight-decay", "dropout", "batchnorm", "ghost-batchnorm", "early-stopping", "max-norm"}


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
    model, callbacks = compile_model(config_for("none"))
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
    _, callbacks = compile_model(config_for("early-stopping", {"patience": 2}))
    (callback,) = callbacks
    assert isinstance(callback, keras.callbacks.EarlyStopping)
    assert callback.monitor == "val_crossentropy" and callback.patience == 2 and callback.restore_best_weights


def test_max_norm_constrains_every_kernel():
    model, _ = compile_model(config_for("max-norm", {"c": 2.0}))
    for layer in kernels(model):
        assert isinstance(layer.kernel_constraint, keras.constraints.MaxNorm)
        assert layer.kernel_constraint.max_value == 2.0


def test_cnn_has_two_conv_blocks_and_techniques_reach_its_conv_layers():
    config = config_for("batchnorm+dropout+max-norm", architecture="cnn", hidden=(128,))
    model = build_model(config, hooks_for(config.technique, config.technique_params))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [layer.filters for layer in convs] == [32, 64]
    assert all(isinstance(layer.kernel_constraint, keras.constraints.MaxNorm) for layer in convs)
    types = layer_types(model)
    assert types.count("BatchNormalization") == 3 and types.count("Dropout") == 3
    assert model.output_shape == (None, 10)


@pytest.mark.parametrize(
    "setting, zero",
    [("l1", {"l1": 0.0}), ("l2", {"l2": 0.0}), ("weight-decay", {"wd": 0.0}),
     ("dropout", {"rate": 0.0})],
)
def test_strength_zero_gives_the_baselines_outputs(split, setting, zero):
    baseline = train_run(config_for("none"), split)
    treated = train_run(config_for(setting, zero), split)
    for key in ("test_accuracy", "test_crossentropy", "train_crossentropy", "weights_l2"):
        assert treated.record[key] == baseline.record[key], key
    assert treated.epochs[0]["val_crossentropy"] == baseline.epochs[0]["val_crossentropy"]


def test_max_norm_that_never_binds_matches_the_baseline_to_rounding(split):
    # Keras' MaxNorm rescales by c / (eps + norm) even when no norm exceeds c: not bit-exact.
    baseline = train_run(config_for("none"), split)
    treated = train_run(config_for("max-norm", {"c": 1e9}), split)
    for key in ("test_accuracy", "test_crossentropy", "weights_l2"):
        assert np.isclose(treated.record[key], baseline.record[key], rtol=1e-5), key


def test_a_real_setting_does_change_the_outcome(split):
    baseline = train_run(config_for("none"), split)
    treated = train_run(config_for("l2", {"l2": 0.05}), split)
    assert treated.record["weights_l2"] < baseline.record["weights_l2"]
    assert treated.epochs[0]["penalty"] > 0 == baseline.epochs[0]["penalty"]
