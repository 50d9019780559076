"""Study-only model variants (never used by `compare`), plugged into the model builder and the epoch loop.

A variant is a `Variant`: the dropout or batch-normalization layer it builds instead of Keras' own, the sets it
also measures after every epoch, and how it trains an epoch and ends a run. regbench.models and regbench.train ask
the run's variant for these; they do not branch on its name. A run's `variant` field names it ("" is the standard
model), so a variant's runs have ids of their own.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from regbench.config import EVAL_BATCH_SIZE, STATISTICS_REFRESH_STEPS, RunConfig


class ClassicDropout(keras.layers.Dropout):
    """Dropout as first published: kept units are not rescaled in training; inference multiplies by keep.

    `scale_at_inference=False` is the classic mistake of forgetting that factor (for studies).
    """

    def __init__(self, rate, scale_at_inference: bool = True, **options):
        super().__init__(rate, **options)
        self.scale_at_inference = scale_at_inference

    def call(self, inputs, training=False):
        keep = 1.0 - self.rate
        if training and self.rate > 0:
            return super().call(inputs, training=True) * keep  # the inverted mask, times keep: mask only
        return inputs * keep if self.scale_at_inference else inputs

    def get_config(self):
        return {**super().get_config(), "scale_at_inference": self.scale_at_inference}


class RescaledDense(keras.layers.Dense):
    """Dense whose kernel in use is its stored kernel times `scale`: after classic dropout with scale = 1/keep,
    the same arithmetic as inverted dropout reordered (a gradient step on the stored kernel moves the used one
    scale² as far, and it starts scale times as large)."""

    def __init__(self, units, scale: float = 1.0, **options):
        super().__init__(units, **options)
        self.scale = scale

    def call(self, inputs, training=None):
        outputs = keras.ops.matmul(inputs, self.kernel * self.scale)
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs) if self.activation is not None else outputs

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


class PopulationBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization that uses its stored (population) statistics in training too: no batch noise, and no
    gradient through the statistics.

    The statistics are set from the whole training set by refresh_population_statistics, every
    STATISTICS_REFRESH_STEPS steps.
    """

    def call(self, inputs, training=None, mask=None):
        return super().call(inputs, training=False, mask=mask)


_STATISTICS_PROBES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its statistics layers' inputs


def refresh_population_statistics(model: keras.Model, x: np.ndarray) -> None:
    """Set every PopulationBatchNormalization layer's statistics to those of its input over `x`."""
    layers = [layer for layer in model.layers if isinstance(layer, PopulationBatchNormalization)]
    if not layers:
        return
    if model not in _STATISTICS_PROBES:  # one probe per model: its predict program is compiled once
        _STATISTICS_PROBES[model] = keras.Model(model.input, [layer.input for layer in layers])
    outputs = _STATISTICS_PROBES[model].predict(x, batch_size=EVAL_BATCH_SIZE, verbose=0)
    for layer, values in zip(layers, outputs if len(layers) > 1 else [outputs]):
        axes = tuple(range(values.ndim - 1))  # every axis but the channels
        layer.moving_mean.assign(values.mean(axis=axes, dtype=np.float64))
        layer.moving_variance.assign(values.var(axis=axes, dtype=np.float64))


def train_epoch_refreshing(runner, model: keras.Model, config: RunConfig, x, y, x_all: np.ndarray,
                           order: np.ndarray) -> tuple[dict, float, float]:
    """Train one epoch with `runner` (train.EpochRunner) in pieces of STATISTICS_REFRESH_STEPS steps, setting the
    population statistics from `x_all` before each; return the epoch's logs (image-weighted means of the pieces'),
    warm-up and seconds."""
    piece = STATISTICS_REFRESH_STEPS * config.batch_size
    totals: dict[str, float] = {}
    warmups, seconds = [], 0.0
    for start in range(0, len(order), piece):
        part = order[start:start + piece]
        began = time.perf_counter()
        refresh_population_statistics(model, x_all)  # part of this variant's training time
        logs, warmup, _, _ = runner.train_epoch(model, config, x, y, part)
        seconds += time.perf_counter() - began
        warmups.append(warmup)
        for name, value in logs.items():
            totals[name] = totals.get(name, 0.0) + value * len(part)
    return {name: total / len(order) for name, total in totals.items()}, float(np.nansum(warmups)), seconds


@dataclass(frozen=True)
class Variant:
    """What a model variant changes; each empty field leaves the standard model's behaviour."""

    description: str
    dropout: Callable[[float], tuple[type, float]] | None = None  # rate -> (its dropout layer, the next kernel's scale)
    batchnorm: type | None = None  # the BatchNormalization layer it uses
    measured_sets: tuple[str, ...] = ()  # sets measured after every epoch besides validation and the monitor
    train_epoch: Callable | None = None  # (runner, model, config, x, y, training images, order) -> logs, warmup, s
    finish: Callable[[keras.Model, np.ndarray], None] | None = None  # (model, training images): before measuring


STANDARD = Variant("the standard model")
VARIANTS = {
    "": STANDARD,
    "classic-dropout": Variant(
        "Dropout as first published: no 1/keep rescale in training, activations times keep at inference",
        dropout=lambda rate: (ClassicDropout, 1.0)),
    "classic-dropout-matched": Variant(
        "classic dropout with every kernel after a dropout layer used as stored / keep: inverted dropout's "
        "arithmetic, reordered",
        dropout=lambda rate: (ClassicDropout, 1.0 / (1.0 - rate))),
    "exact-statistics-bn": Variant(
        "BatchNormalization that normalizes with the whole training set's statistics, recomputed every "
        f"{STATISTICS_REFRESH_STEPS} steps and used as constants in training and inference",
        batchnorm=PopulationBatchNormalization, train_epoch=train_epoch_refreshing,
        finish=refresh_population_statistics),
    "test-curve": Variant(
        "the standard model, also measured on the test set after every epoch (for stopping-rule studies)",
        measured_sets=("test",)),
}


def variant_of(config: RunConfig) -> Variant:
    """Return the variant run `config` names, or raise ValueError listing the known ones."""
    if config.variant not in VARIANTS:
        raise ValueError(f"unknown model variant {config.variant!r}; choose from {', '.join(v for v in VARIANTS if v)}")
    return VARIANTS[config.variant]
