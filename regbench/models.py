"""Architectures built from a RunConfig, with a technique's Regularization applied."""

from __future__ import annotations

import keras

from regbench.config import RunConfig
from regbench.techniques import Regularization

NUM_CLASSES = 10
CNN_FILTERS = (32, 64)  # filters of the two conv+pool blocks


def layer_seed(run_seed: int, slot: int) -> int:
    """Return the seed of the weighted layer (or dropout) in position `slot` of a run.

    Every weighted layer draws from its own seeded initializer, so adding a Dropout or
    BatchNormalization layer leaves the initial weights of all shared layers unchanged.
    """
    return (run_seed * 1_000_003 + slot * 7_919) % 2**31


class _Builder:
    """Adds layers to a functional graph, counting weighted layers for their seeds."""

    def __init__(self, config: RunConfig, regularization: Regularization):
        self.config = config
        self.reg = regularization
        self.weighted = 0  # weighted layers added so far
        self.dropouts = 0  # dropout layers added so far

    def _kernel_options(self, conv: bool) -> dict:
        """Initializer, regularizer and constraint for the next weighted layer."""
        self.weighted += 1
        options = {
            "kernel_initializer": keras.initializers.GlorotUniform(
                seed=layer_seed(self.config.seed, self.weighted)
            )
        }
        if self.reg.l1 is not None or self.reg.l2 is not None:
            options["kernel_regularizer"] = keras.regularizers.L1L2(
                l1=self.reg.l1 or 0.0, l2=self.reg.l2 or 0.0
            )
        if self.reg.max_norm is not None:
            axis = [0, 1, 2] if conv else 0
            options["kernel_constraint"] = keras.constraints.MaxNorm(self.reg.max_norm, axis=axis)
        return options

    def dropout(self, x, rate: float | None):
        """Apply a seeded Dropout layer when `rate` is set."""
        if rate is None:
            return x
        self.dropouts += 1
        seed = layer_seed(self.config.seed, 1_000 + self.dropouts)
        return keras.layers.Dropout(rate, seed=seed, name=f"dropout_{self.dropouts}")(x)

    def hidden(self, x, layer: keras.layers.Layer):
        """Apply a hidden Dense/Conv layer, [BatchNormalization], activation."""
        x = layer(x)
        if self.reg.batchnorm:
            x = keras.layers.BatchNormalization(name=f"batchnorm_{self.weighted}")(x)
        return keras.layers.Activation(self.config.activation)(x)

    def dense(self, units: int, activation: str | None = None):
        """Return a Dense layer with this run's kernel options."""
        return keras.layers.Dense(units, activation=activation, **self._kernel_options(conv=False))

    def conv(self, filters: int):
        """Return a 3x3 Conv2D layer with this run's kernel options."""
        return keras.layers.Conv2D(filters, 3, padding="same", **self._kernel_options(conv=True))


def build_model(config: RunConfig, regularization: Regularization) -> keras.Model:
    """Build the (uncompiled) model of `config` with `regularization` applied."""
    builder = _Builder(config, regularization)
    inputs = keras.Input(shape=(28, 28), name="image")
    if config.architecture == "mlp":
        x = keras.layers.Flatten()(inputs)
        x = builder.dropout(x, regularization.input_dropout_rate)
    elif config.architecture == "cnn":
        x = keras.layers.Reshape((28, 28, 1))(inputs)
        x = builder.dropout(x, regularization.input_dropout_rate)
        for filters in CNN_FILTERS:
            x = builder.hidden(x, builder.conv(filters))
            x = keras.layers.MaxPooling2D(2)(x)
            x = builder.dropout(x, regularization.dropout_rate)
        x = keras.layers.Flatten()(x)
    else:
        raise ValueError(f"unknown architecture {config.architecture!r}")
    for units in config.hidden:
        x = builder.hidden(x, builder.dense(units))
        x = builder.dropout(x, regularization.dropout_rate)
    outputs = builder.dense(NUM_CLASSES, activation="softmax")(x)
    return keras.Model(inputs, outputs, name=f"{config.architecture}_{config.technique.replace('+', '_and_')}")
