"""Architectures built from a RunConfig, with the techniques' hooks and the study variant's layers applied."""

from __future__ import annotations

import math

import keras

from regbench.config import CNN_FILTERS, RunConfig
from regbench.data import get_dataset
from regbench.techniques import Hooks
from regbench.variants import RescaledDense, variant_of


class GhostBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization whose training statistics come from groups of `group` consecutive images of each batch
    (ghost batch normalization; TensorFlow 1's virtual_batch_size). The moving statistics average the groups'
    means and their variances times n/(n − 1) (n values per group and channel), so that inference normalizes with
    unbiased estimates whatever the group size (the biased variance of 4 images is 3/4 of the population's on average).
    """

    def __init__(self, group: int, **options):
        super().__init__(**options)
        self.group = group

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable):
            return super().call(inputs, training=False, mask=mask)
        x = keras.ops.cast(inputs, "float32")
        grouped = keras.ops.reshape(x, (-1, self.group, *x.shape[1:]))  # the batch must be a multiple of group
        axes = tuple(range(1, len(grouped.shape) - 1))  # within a group: its images (and positions), per channel
        mean = keras.ops.mean(grouped, axis=axes, keepdims=True)
        variance = keras.ops.var(grouped, axis=axes, keepdims=True)
        channels = (-1, x.shape[-1])
        self.moving_mean.assign(self.moving_mean * self.momentum + keras.ops.mean(
            keras.ops.reshape(mean, channels), axis=0) * (1.0 - self.momentum))
        count = self.group * math.prod(x.shape[1:-1])  # values per group and channel
        unbiased = keras.ops.mean(keras.ops.reshape(variance, channels), axis=0) * (count / (count - 1))
        self.moving_variance.assign(self.moving_variance * self.momentum + unbiased * (1.0 - self.momentum))
        normalized = keras.ops.reshape((grouped - mean) * keras.ops.rsqrt(variance + self.epsilon), keras.ops.shape(x))
        outputs = normalized * self.gamma + self.beta if self.scale and self.center else normalized
        return keras.ops.cast(outputs, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "group": self.group}


class MaxPooling2D(keras.layers.MaxPooling2D):
    """Keras' MaxPooling2D; on JAX, 2x2 windows of even-sized images pool through regbench.jax_ops.max_pool_2x2,
    whose numbers and gradient are Keras' own (tested) without XLA's slow CPU select-and-scatter."""

    def call(self, inputs):
        height, width = inputs.shape[1:3]
        if (keras.backend.backend() != "jax" or self.pool_size != (2, 2) or self.strides != (2, 2)
                or self.padding != "valid" or self.data_format != "channels_last" or height % 2 or width % 2):
            return super().call(inputs)
        from regbench.jax_ops import max_pool_2x2  # imports jax, which other backends' processes never load

        return max_pool_2x2(inputs)


def layer_seed(run_seed: int, slot: int) -> int:
    """Return the seed of the weighted layer (or dropout) in position `slot` of a run.

    Every weighted layer draws from its own seeded initializer, so adding a Dropout or
    BatchNormalization layer leaves the initial weights of all shared layers unchanged.
    """
    return (run_seed * 1_000_003 + slot * 7_919) % 2**31


SEED_SLOTS = {"dropout": 1_000, "augment": 2_000, "noise": 3_000, "spatial-dropout": 4_000, "epoch-data": 5_000}  # seed
# slots of random layers and of each epoch's data draw, apart from the weighted layers' 1, 2, ... (dropout's as before)


class _Builder:
    """Adds layers to a functional graph, counting weighted and random layers for their seeds; technique hooks
    call its layer methods."""

    def __init__(self, config: RunConfig, hooks: Hooks):
        self.config = config
        self.hooks = hooks
        self.variant = variant_of(config)
        self.weighted = 0  # weighted layers added so far
        self.random = dict.fromkeys(SEED_SLOTS, 0)  # random layers of each kind added so far
        self.kernel_scale = 1.0  # the next Dense layer's kernel scale (a variant's, after its dropout)

    def seed(self, kind: str) -> int:
        """Return the seed of the next random layer of `kind` (a key of SEED_SLOTS)."""
        self.random[kind] += 1
        return layer_seed(self.config.seed, SEED_SLOTS[kind] + self.random[kind])

    def _kernel_options(self, conv: bool) -> dict:
        """Initializer, regularizer and constraint for the next weighted layer."""
        self.weighted += 1
        options = {
            "kernel_initializer": keras.initializers.GlorotUniform(
                seed=layer_seed(self.config.seed, self.weighted)
            )
        }
        if self.hooks.kernel_penalty:
            options["kernel_regularizer"] = keras.regularizers.L1L2(**self.hooks.kernel_penalty)
        for extra in self.hooks.kernel_options:
            options.update(extra(conv))
        return options

    def apply(self, hooks: list, x):
        """Apply layer hooks in turn."""
        for hook in hooks:
            x = hook(self, x)
        return x

    def dropout(self, x, rate: float):
        """Apply a seeded Dropout layer (the study variant's, where it has one)."""
        seed = self.seed("dropout")
        layer, self.kernel_scale = self.variant.dropout(rate) if self.variant.dropout else (keras.layers.Dropout, 1.0)
        return layer(rate, seed=seed, name=f"dropout_{self.random['dropout']}")(x)

    def spatial_dropout(self, x, rate: float):
        """Apply a seeded SpatialDropout2D layer."""
        return keras.layers.SpatialDropout2D(rate, seed=self.seed("spatial-dropout"))(x)

    def noise(self, x, stddev: float):
        """Apply a seeded GaussianNoise layer."""
        return keras.layers.GaussianNoise(stddev, seed=self.seed("noise"))(x)

    def batchnorm(self, x, group: int | None = None):
        """Apply BatchNormalization (ghost batch normalization with `group`; the study variant's, where it has one)."""
        name = f"batchnorm_{self.weighted}"
        if self.variant.batchnorm is not None:
            return self.variant.batchnorm(name=name)(x)
        if group is not None:
            return GhostBatchNormalization(group, name=name)(x)
        return keras.layers.BatchNormalization(name=name)(x)

    def hidden(self, x, layer: keras.layers.Layer, pool: bool = False):
        """Apply a hidden Dense/Conv layer, [normalization], activation, [2x2 max-pooling and the after-block hooks],
        then the after-hidden hooks."""
        x = layer(x)
        if self.hooks.normalization is not None:
            x = self.hooks.normalization(self, x)
        x = keras.layers.Activation(self.config.activation)(x)
        if pool:
            x = self.apply(self.hooks.after_block, MaxPooling2D(2)(x))
        return self.apply(self.hooks.after_hidden, x)

    def dense(self, units: int, activation: str | None = None):
        """Return a Dense layer with this run's kernel options."""
        scale, self.kernel_scale = self.kernel_scale, 1.0
        if scale != 1.0:
            return RescaledDense(units, scale=scale, activation=activation, **self._kernel_options(conv=False))
        return keras.layers.Dense(units, activation=activation, **self._kernel_options(conv=False))

    def conv(self, filters: int):
        """Return a 3x3 Conv2D layer with this run's kernel options."""
        return keras.layers.Conv2D(filters, 3, padding="same", **self._kernel_options(conv=True))


def build_model(config: RunConfig, hooks: Hooks) -> keras.Model:
    """Build the (uncompiled) model of `config` on its dataset's images, with the technique's hooks applied."""
    dataset = get_dataset(config.dataset)
    builder = _Builder(config, hooks)
    inputs = keras.Input(shape=dataset.image_shape, name="image")
    image = (*dataset.image_shape, 1)  # one channel
    if config.architecture == "mlp":
        x = inputs
        if hooks.image_layers:
            x = builder.apply(hooks.image_layers, keras.layers.Reshape(image)(x))
        x = builder.apply(hooks.input_layers, keras.layers.Flatten()(x))
    elif config.architecture == "cnn":
        x = builder.apply(hooks.image_layers, keras.layers.Reshape(image)(inputs))
        x = builder.apply(hooks.input_layers, x)
        for filters in CNN_FILTERS:
            x = builder.hidden(x, builder.conv(filters), pool=True)
        x = keras.layers.Flatten()(x)
    else:
        raise ValueError(f"unknown architecture {config.architecture!r}")
    for units in config.hidden:
        x = builder.hidden(x, builder.dense(units))
    outputs = builder.dense(dataset.classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name=f"{config.architecture}_{config.technique.replace('+', '_and_')}")
