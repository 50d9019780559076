"""Pairing and determinism: same initial weights, same batches, same numbers on a rerun."""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import config_for

from regbench.models import build_model
from regbench.techniques import hooks_for
from regbench.train import batch_order, train_run

TIMING_FIELDS = {"train_seconds", "seconds_per_epoch", "seconds", "warmup_seconds", "wall_seconds"}


def initial_kernels(setting: str, seed: int = 0, **fields):
    config = config_for(setting, seed=seed, **fields)
    model = build_model(config, hooks_for(config.technique, config.technique_params))
    return [layer.get_weights() for layer in model.layers if hasattr(layer, "kernel")]


@pytest.mark.parametrize("setting", ["dropout", "batchnorm", "batchnorm+dropout", "l2"])
@pytest.mark.parametrize("architecture, hidden", [("mlp", (128, 64)), ("cnn", (32,))])
def test_shared_layers_start_from_the_same_weights(setting, architecture, hidden):
    baseline = initial_kernels("none", architecture=architecture, hidden=hidden)
    treated = initial_kernels(setting, architecture=architecture, hidden=hidden)
    assert len(baseline) == len(treated)
    for base_weights, treated_weights in zip(baseline, treated):
        for base, other in zip(base_weights, treated_weights):
            np.testing.assert_array_equal(base, other)


def test_seeds_give_different_initial_weights_and_batch_orders():
    assert not np.array_equal(initial_kernels("none", seed=0)[0][0], initial_kernels("none", seed=1)[0][0])
    assert not np.array_equal(batch_order(0, 0, 500), batch_order(1, 0, 500))
    assert not np.array_equal(batch_order(0, 0, 500), batch_order(0, 1, 500))
    np.testing.assert_array_equal(batch_order(3, 2, 500), batch_order(3, 2, 500))
    assert sorted(batch_order(3, 2, 500)) == list(range(500))


def without_timing(result):
    record = {k: v for k, v in result.record.items() if k not in TIMING_FIELDS}
    epochs = [{k: v for k, v in row.items() if k not in TIMING_FIELDS} for row in result.epochs]
    return record, epochs


def test_a_rerun_reproduces_a_run_exactly(split):
    config = config_for("dropout+l2", epochs=2, seed=5)
    assert without_timing(train_run(config, split)) == without_timing(train_run(config, split))


@pytest.mark.parametrize("setting, overrides", [("batchnorm+dropout", None), ("ema+early-stopping",
                                                                             {"ema_horizon": 10, "patience": 1})])
def test_a_run_on_its_structures_shared_model_gives_the_numbers_it_gives_alone(split, setting, overrides):
    """TensorFlow runs of one structure train one model (its traced functions reused), set to each run's start:
    random streams, batch statistics, the optimizer's moments and averages, early stopping's restore."""
    from regbench import train

    first, second = (config_for(setting, overrides, seed=seed, epochs=3, hidden=(16,)) for seed in (1, 2))
    train._SHARED_MODELS.clear()
    alone = train_run(second, split)
    train._SHARED_MODELS.clear()
    train_run(first, split)
    shared = train_run(second, split)
    assert shared.model is train._SHARED_MODELS[train.program_key(second)]  # trained on the first run's model
    assert without_timing(shared) == without_timing(alone)
    assert shared.record["warmup_seconds"] < alone.record["warmup_seconds"]  # nothing traced again


@pytest.mark.parametrize("setting, overrides, fields", [
    ("batchnorm+dropout+l2+gaussian-noise+label-smoothing", {"input_noise_stddev": 0.1}, {}),
    ("weight-decay+max-norm", None, {"schedule": "cosine"}),
    ("ema+mixup", {"ema_horizon": 5.0, "mixup_alpha": 0.4}, {}),  # an epoch's own blended images; raw weights
    ("augment+spatial-dropout", None, {"architecture": "cnn", "hidden": (16,)}),
])
def test_tensorflow_epochs_from_tensors_train_the_bits_of_fit_on_the_shuffled_arrays(split, setting, overrides,
                                                                                       fields):
    """On TensorFlow, `fit` reads batches gathered from the training tensors and `evaluate` a tf.data pipeline: the
    same logs and weights as Keras' `fit` on x[order] and `evaluate` on the arrays."""
    import keras

    from regbench import train

    config = config_for(setting, overrides, seed=1, epochs=2, **fields)
    runner = train.epoch_runner()
    runner.seed(config.seed)
    by_fit, hooks = train.compile_model(config)
    runner.seed(config.seed)
    ours = train.compile_model(config)[0]
    x, y = runner.training_arrays(split)
    callbacks = [train.KeepRawWeights()] if by_fit.optimizer.use_ema else []
    for epoch in range(config.epochs):
        order = batch_order(config.seed, epoch, len(split.y_train))
        x_epoch, y_epoch, x_fit, y_fit = x, y, split.x_train[order], split.y_train[order]
        if hooks.epoch_data is not None:
            x_epoch, y_epoch = train.epoch_arrays(runner, hooks, config, split, order, epoch)
            x_fit, y_fit, order = np.asarray(x_epoch), np.asarray(y_epoch), np.arange(len(order))
        history = by_fit.fit(x_fit, y_fit, batch_size=config.batch_size, epochs=1, shuffle=False, verbose=0,
                             callbacks=callbacks).history
        logs = runner.train_epoch(ours, config, x_epoch, y_epoch, order)[0]
        assert logs == {name: values[0] for name, values in history.items()}
    for mine, theirs in zip(ours.variables, by_fit.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(mine), keras.ops.convert_to_numpy(theirs))
    repeats = -(-config.eval_batch_size // len(split.y_val)) + 1  # full evaluation batches and a smaller last one
    x_eval, y_eval = np.concatenate([split.x_val] * repeats), np.concatenate([split.y_val] * repeats)
    expected = by_fit.evaluate(x_eval, y_eval, batch_size=config.eval_batch_size, verbose=0, return_dict=True)
    assert runner.evaluate(ours, config, x_eval, y_eval) == (expected["crossentropy"], expected["accuracy"])


def test_tensorflow_converts_a_training_set_once_while_it_lives(split):
    """The runs of a split train from one TensorFlow copy of it; a copy is dropped with its arrays (an id used again
    is never taken for the old arrays) and only the most recent are kept."""
    from dataclasses import replace

    from regbench import train

    training_arrays = train.epoch_runner().training_arrays
    first = training_arrays(split)
    assert training_arrays(split) is first
    np.testing.assert_array_equal(first[0].numpy(), split.x_train)
    blended = replace(split, x_train=split.x_train + 1.0)
    key = (id(blended.x_train), id(blended.y_train))
    np.testing.assert_array_equal(training_arrays(blended)[0].numpy(), split.x_train + 1.0)
    assert key in train._TENSORS
    del blended
    assert key not in train._TENSORS
    others = [replace(split, x_train=split.x_train * scale) for scale in range(2, 3 + train.TENSORS_KEPT)]
    for other in others:
        training_arrays(other)
    assert len(train._TENSORS) == train.TENSORS_KEPT


def test_warmup_is_kept_out_of_every_epoch_time():
    from regbench.train import _ExecutionClock, _separate_warmup

    rows = [{"seconds": 5.0}, {"seconds": 1.0}, {"seconds": 1.2}, {"seconds": 0.8}]
    assert _separate_warmup(rows, math.nan) == 4.0 and rows[0]["seconds"] == 1.0  # excess over the median later epoch
    rows = [{"seconds": 1.0}, {"seconds": 3.0}]
    assert _separate_warmup(rows, math.nan) == 0.0 and rows[0]["seconds"] == 1.0  # a slower later epoch is no warm-up
    rows = [{"seconds": 2.0}]
    assert math.isnan(_separate_warmup(rows, math.nan)) and rows[0]["seconds"] == 2.0  # one epoch: cannot be told
    rows = [{"seconds": 1.0}]
    assert _separate_warmup(rows, 0.5) == 0.5 and rows[0]["seconds"] == 1.0  # measured within the epoch already
    clock = _ExecutionClock()
    clock.marks, clock.steps = [0.0, 3.0, 4.0, 5.0, 5.5], [0, 100, 200, 300, 350]  # four backend calls
    assert clock.warmup() == pytest.approx(2.0)  # the first call minus a steady call of 100 steps
    clock.marks, clock.steps = [0.0, 3.0], [0, 7]
    assert math.isnan(clock.warmup())


def test_dropout_run_differs_from_its_baseline(split):
    baseline = train_run(config_for("none"), split)
    dropout = train_run(config_for("dropout"), split)
    assert baseline.record["test_crossentropy"] != dropout.record["test_crossentropy"]


def run_cli(*args, cwd: Path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("KERAS_BACKEND", None)
    return subprocess.run([sys.executable, "-m", "regbench", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_torch_backend_runs_where_installed(tmp_path):
    pytest.importorskip("torch")
    done = run_cli("compare", "--technique", "dropout", "--backend", "torch", "--train-size", "200",
                   "--epochs", "1", "--seeds", "1", "--out", str(tmp_path / "t"),
                   "--store", str(tmp_path / "t.sqlite"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_the_first_run_of_a_model_in_a_process_says_its_epochs_hold_the_compile(split):
    # one epoch of 10 steps is one TensorFlow backend call: its trace cannot be told apart from its training
    shape = {"hidden": (13,), "train_size": 300}  # a model no other test in this process traces
    first, second = (train_run(config_for("none", seed=seed, **shape), split).record for seed in (0, 1))
    assert first["warmup_in_epochs"] and not second["warmup_in_epochs"]
    assert math.isnan(first["warmup_seconds"]) and first["seconds_per_epoch"] > 2 * second["seconds_per_epoch"]
