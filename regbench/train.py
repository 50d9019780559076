"""Train one run -> a flat record and per-epoch rows (no files).

The epoch loop (train_run) is the same on every backend; how a backend trains and measures an epoch is its
EpochRunner's (Keras' own fit and evaluate; TensorFlow's batches gathered from tensors and shared models; JAX's
compiled epoch programs), and a study's model variant plugs in through regbench.variants.
"""

from __future__ import annotations

import gc
import math
import random
import tempfile
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np

from regbench.config import MEASURED, WEIGHT_BIN_EDGES, RunConfig
from regbench.data import Split, get_dataset
from regbench.models import SEED_SLOTS, build_model, layer_seed
from regbench.provenance import run_provenance
from regbench.techniques import Hooks, hooks_for
from regbench.variants import variant_of

STEPS_PER_EXECUTION = 100  # training steps fused into one backend call (torch allows only 1)
NEAR_ZERO = 1e-3  # |w| below this counts as near zero
WEIGHT_DECAY_EXCLUDED = ["bias", "gamma", "beta"]  # decay kernels only, as L1/L2 do
TENSORS_KEPT = 2  # the training sets kept as TensorFlow tensors, the most recently used
_TENSORS: OrderedDict[tuple[int, int], tuple] = OrderedDict()  # ids of training arrays -> their tensors (_tensors)
SHARED_STRUCTURES = 16  # TensorFlow: models (with their traced functions) kept per process, the latest used
_SHARED_MODELS: OrderedDict = OrderedDict()  # program key -> the model every TensorFlow run of that structure trains


@dataclass
class RunResult:
    """One finished run: a flat record and one row per epoch."""

    record: dict
    epochs: list[dict]
    model: keras.Model  # the trained model (restored best weights under early stopping); on TensorFlow its
    # structure's shared model (shared_model), which the next run of that structure resets: use it before then


def learning_rate(config: RunConfig) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """Return the run's learning rate: `lr` throughout, or Keras' CosineDecay from `lr` to 0 over the run
    (after `warmup_epochs` of linear warm-up from 0), stepped once per batch."""
    if config.schedule == "constant":
        return config.lr
    steps = math.ceil(config.train_size / config.batch_size)
    warmup = config.warmup_epochs * steps
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else config.lr, decay_steps=config.epochs * steps - warmup,
        warmup_target=config.lr if warmup else None, warmup_steps=warmup)


def make_optimizer(config: RunConfig, hooks: Hooks) -> keras.optimizers.Optimizer:
    """Build the run's Keras optimizer, with its learning-rate schedule and the techniques' options (decoupled
    weight decay, a moving average of the weights)."""
    options = {"learning_rate": learning_rate(config), **hooks.optimizer_options}
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(momentum=config.momentum, nesterov=config.nesterov, **options)
    elif config.optimizer == "rmsprop":
        optimizer = keras.optimizers.RMSprop(momentum=config.momentum, **options)
    elif config.optimizer == "adam":
        optimizer = keras.optimizers.Adam(**options)
    elif config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(**{"weight_decay": 0.0, **options})  # decay only from weight-decay
    else:
        raise ValueError(f"unknown optimizer {config.optimizer!r}")
    optimizer.exclude_from_weight_decay(var_names=WEIGHT_DECAY_EXCLUDED)
    return optimizer


class Crossentropy(keras.losses.Loss):
    """The training cross-entropy of integer labels (one-hot encoded here) or of soft labels (mixup's blends), with
    Keras' label_smoothing; runs whose techniques change neither keep SparseCategoricalCrossentropy."""

    def __init__(self, classes: int, label_smoothing: float = 0.0, name: str = "crossentropy_loss", **options):
        super().__init__(name=name, **options)
        self.classes, self.label_smoothing = classes, label_smoothing

    def call(self, y_true, y_pred):
        return keras.losses.categorical_crossentropy(
            _one_hot(y_true, self.classes), y_pred, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "classes": self.classes, "label_smoothing": self.label_smoothing}


def _one_hot(y_true, classes: int):
    """Return integer labels one-hot encoded; soft labels as they are."""
    if len(y_true.shape) > 1 and y_true.shape[-1] == classes:
        return y_true
    return keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"), classes)


def _hard(y_true):
    """Return integer labels as they are; soft labels as the class each weighs most."""
    return keras.ops.argmax(y_true, axis=-1) if len(y_true.shape) > 1 and y_true.shape[-1] > 1 else y_true


def _soft_label_metrics(classes: int) -> list[keras.metrics.Metric]:
    """Return the accuracy (against each soft label's heaviest class) and cross-entropy of a run trained on soft
    labels; on integer labels they compute what the sparse metrics compute."""
    return [
        keras.metrics.MeanMetricWrapper(
            lambda y_true, y_pred: keras.metrics.sparse_categorical_accuracy(_hard(y_true), y_pred), name="accuracy"),
        keras.metrics.MeanMetricWrapper(
            lambda y_true, y_pred: keras.losses.categorical_crossentropy(_one_hot(y_true, classes), y_pred),
            name="crossentropy"),
    ]


def compile_model(config: RunConfig) -> tuple[keras.Model, Hooks]:
    """Build and compile the run's model; return it with its technique hooks."""
    hooks = hooks_for(config.technique, config.technique_params)
    model = build_model(config, hooks)
    classes = get_dataset(config.dataset).classes
    soft = hooks.epoch_data is not None  # mixup trains on blended (soft) labels
    model.compile(
        optimizer=make_optimizer(config, hooks),
        loss=Crossentropy(classes, **hooks.loss_options) if hooks.loss_options or soft
        else keras.losses.SparseCategoricalCrossentropy(),
        metrics=_soft_label_metrics(classes) if soft else [
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            keras.metrics.SparseCategoricalCrossentropy(name="crossentropy"),
        ],
        steps_per_execution=epoch_runner().steps_per_execution,
    )
    return model, hooks


@contextmanager
def measured_weights(model: keras.Model):
    """Within: the model holds the weights a run is measured with: its optimizer's moving average where it keeps
    one (ema), else its own; the raw weights come back after."""
    if not model.optimizer.use_ema:
        yield
        return
    raw = [keras.ops.convert_to_numpy(variable) for variable in model.trainable_variables]
    model.optimizer.finalize_variable_values(model.trainable_variables)  # Keras' own swap to the average
    try:
        yield
    finally:
        for variable, value in zip(model.trainable_variables, raw):
            variable.assign(value)


class KeepRawWeights(keras.callbacks.Callback):
    """Undo the swap to the averaged weights that Keras' `fit` makes when it ends (finalize_variable_values): the
    epoch loop goes on training the raw weights, and measures the average through measured_weights."""

    def on_epoch_end(self, epoch, logs=None):
        self.raw = [keras.ops.convert_to_numpy(variable) for variable in self.model.trainable_variables]

    def on_train_end(self, logs=None):
        for variable, value in zip(self.model.trainable_variables, self.raw):
            variable.assign(value)


def batch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """Return the order in which a run of `seed` visits its `n` training images in `epoch`."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def program_key(config: RunConfig) -> RunConfig:
    """Return what decides a run's compiled training program: its config without seed and data, and without
    its length unless a learning-rate schedule depends on it (the schedule's steps are compiled in); a partial run
    shares the whole run's program."""
    if config.schedule == "constant":
        return replace(config, seed=0, data="", train_size=0, epochs=0, stop_epoch=0)
    return replace(config, seed=0, data="", stop_epoch=0)


class _ExecutionClock(keras.callbacks.Callback):
    """Time each backend call of a TensorFlow `fit` epoch (steps_per_execution steps each)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.marks, self.steps = [time.perf_counter()], [0]

    def on_train_batch_end(self, batch, logs=None):
        self.marks.append(time.perf_counter())
        self.steps.append(batch + 1)  # steps done so far (Keras reports the execution's last step)

    def warmup(self) -> float:
        """Return how much longer the first call took than a steady call of the same steps (NaN if unknown).

        The first call traces and compiles the step function; the steady rate is the median of the
        later full calls.
        """
        seconds, steps = np.diff(self.marks), np.diff(self.steps)
        full = [time_ / count for time_, count in zip(seconds[1:], steps[1:]) if count == steps[0]]
        if len(seconds) < 2 or not full:
            return math.nan
        return max(0.0, float(seconds[0] - np.median(full) * steps[0]))


def _batches(x, y, order: np.ndarray, batch_size: int):
    """Return the batches of x[order], y[order] as a tf.data pipeline that gathers each batch from the tensors `x`,
    `y`: the batches Keras' `fit` cuts from the shuffled arrays, without copying every image each epoch."""
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(order).batch(batch_size).map(lambda i: (tf.gather(x, i), tf.gather(y, i)))


def epoch_sets(model: keras.Model, config: RunConfig, split: Split) -> dict:
    """Return the sets measured after every epoch by name: validation, the training monitor, and those the run's
    variant adds (the test set for test-curve runs)."""
    sets = {"val": (split.x_val, split.y_val), "train_inference": (split.x_monitor, split.y_monitor)}
    for name in variant_of(config).measured_sets:
        sets[name] = getattr(split, f"x_{name}"), getattr(split, f"y_{name}")
    return sets


def epoch_arrays(runner: EpochRunner, hooks: Hooks, config: RunConfig, split: Split, order: np.ndarray,
                 epoch: int) -> tuple:
    """Return the training images and labels of one epoch made by the techniques' epoch_data hook (mixup's blends),
    in the epoch's visiting `order`, where `runner`'s backend trains from."""
    assert hooks.epoch_data is not None  # called only for techniques that make each epoch's data
    classes = get_dataset(config.dataset).classes
    labels = np.eye(classes, dtype=np.float32)[split.y_train[order]]
    x, y = hooks.epoch_data(split.x_train[order], labels, layer_seed(config.seed, SEED_SLOTS["epoch-data"] + epoch))
    return runner.training_arrays(replace(split, x_train=x, y_train=y))


class EpochRunner:
    """How a backend trains and measures a run's epochs; this one is Keras' own `fit` and `evaluate` on the arrays,
    one step per backend call (PyTorch's path). TensorFlowEpochs and JaxEpochs are the others."""

    steps_per_execution = 1  # training steps fused into one backend call

    def seed(self, seed: int) -> None:
        """Seed the global random streams (every layer and batch order is seeded explicitly as well)."""
        keras.utils.set_random_seed(seed)

    def model_for(self, config: RunConfig, model: keras.Model) -> keras.Model:
        """Return the model run `config` trains, starting from `model`'s state."""
        return model

    def traces_in_epochs(self, config: RunConfig) -> bool:
        """Say whether the run's first epoch traces its functions, so that its warm-up must be told apart."""
        return False

    def training_arrays(self, split: Split) -> tuple:
        """Return the training images and labels where the backend trains from."""
        return split.x_train, split.y_train

    def measure_with_epoch(self, model: keras.Model, sets: dict) -> tuple:
        """Return what train_epoch takes to measure `sets` with the epoch itself; () where they are evaluated
        apart (evaluate)."""
        return ()

    def train_epoch(self, model: keras.Model, config: RunConfig, x, y, order: np.ndarray,
                    measure: tuple = ()) -> tuple[dict, float, float, list[tuple[float, float]] | None]:
        """Train `model` one epoch on batches of x[order], y[order]; return its logs, the warm-up in it, its seconds
        and, where the epoch measured them (measure_with_epoch), the (cross-entropy, accuracy) of each set at the
        epoch's weights (else None: evaluate them). `fit`'s first backend call also traces: its excess over a
        steady call is the warm-up."""
        clock = _ExecutionClock()
        started = time.perf_counter()
        callbacks = [clock, KeepRawWeights()] if model.optimizer.use_ema else [clock]
        history = self._fit(model, config, x, y, order, callbacks)
        seconds = time.perf_counter() - started
        return {name: float(values[0]) for name, values in history.history.items()}, clock.warmup(), seconds, None

    def _fit(self, model: keras.Model, config: RunConfig, x, y, order: np.ndarray, callbacks: list):
        return model.fit(x[order], y[order], batch_size=config.batch_size, epochs=1, shuffle=False, verbose=0,
                         callbacks=callbacks)

    def evaluate(self, model: keras.Model, config: RunConfig, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """Return (cross-entropy, accuracy) of `model` in inference mode; the penalty is left out."""
        logs = model.evaluate(x, y, batch_size=config.eval_batch_size, verbose=0, return_dict=True)
        return float(logs["crossentropy"]), float(logs["accuracy"])

    def release_epoch_data(self) -> None:
        """Free an epoch's own training arrays (mixup's blends) once the epoch is done."""


class TensorFlowEpochs(EpochRunner):
    """TensorFlow: `fit` reads each batch gathered from the training tensors (the same bits as `fit` on x[order],
    tested; 0.1 s faster per epoch and 157 MB less on full MNIST), `evaluate` a tf.data pipeline of the arrays (twice
    as fast here), and every run of one structure trains one shared model, whose traced functions it reuses."""

    steps_per_execution = STEPS_PER_EXECUTION

    def model_for(self, config: RunConfig, model: keras.Model) -> keras.Model:
        """Return this process's model of the run's structure (program_key) set to `model`'s state, so that its
        traced train, test and predict functions serve every run of the structure (tracing them took about a second
        per run here; the same bits, tested).

        The state is every variable of the model (weights, batch statistics, the random streams' seeds) and of a
        newly built optimizer (its step count, moments and averages at their start).
        """
        key = program_key(config)
        shared = _SHARED_MODELS.setdefault(key, model)
        _SHARED_MODELS.move_to_end(key)
        while len(_SHARED_MODELS) > SHARED_STRUCTURES:
            _SHARED_MODELS.popitem(last=False)
        if shared is model:
            return model
        for each in (model, shared):
            if not each.optimizer.built:
                each.optimizer.build(each.trainable_variables)
        targets, sources = shared.variables + shared.optimizer.variables, model.variables + model.optimizer.variables
        if [v.shape for v in targets] != [v.shape for v in sources]:
            raise RuntimeError(f"run {config.run_id}: its model's variables differ from those of its structure's model")
        for target, source in zip(targets, sources):
            target.assign(source.value)
        return shared

    def traces_in_epochs(self, config: RunConfig) -> bool:
        return program_key(config) not in _SHARED_MODELS

    def training_arrays(self, split: Split) -> tuple:
        return _tensors(split.x_train, split.y_train)

    def _fit(self, model: keras.Model, config: RunConfig, x, y, order: np.ndarray, callbacks: list):
        return model.fit(_batches(x, y, order, config.batch_size), epochs=1, shuffle=False, verbose=0,
                         callbacks=callbacks)

    def evaluate(self, model: keras.Model, config: RunConfig, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        import tensorflow as tf

        logs = model.evaluate(tf.data.Dataset.from_tensor_slices((x, y)).batch(config.eval_batch_size), verbose=0,
                              return_dict=True)
        return float(logs["crossentropy"]), float(logs["accuracy"])

    def release_epoch_data(self) -> None:
        gc.collect()  # frees the epoch's tensors, which its tf.data pipeline holds in reference cycles


class JaxEpochs(EpochRunner):
    """JAX: each epoch is one compiled program (regbench.fused) over device-resident arrays, compiled before the
    epoch is timed, and the sets measured after it are one more program fed the epoch's state on the device; the
    same bits as Keras' `fit` and `evaluate` (tested)."""

    steps_per_execution = STEPS_PER_EXECUTION

    def seed(self, seed: int) -> None:
        """Seed Python's and NumPy's streams: keras.utils.set_random_seed would import all of TensorFlow (seconds
        and about 450 MB per process) for a stream no JAX run reads."""
        random.seed(seed)
        np.random.seed(seed)

    def training_arrays(self, split: Split) -> tuple:
        import jax

        return jax.device_put(split.x_train), jax.device_put(split.y_train)  # on the CPU: no copy

    def measure_with_epoch(self, model: keras.Model, sets: dict) -> tuple:
        """Return the sets as device arrays, unless the measured weights are not the trained ones (a moving
        average)."""
        if model.optimizer.use_ema:
            return ()
        from regbench import fused  # imports jax, which other backends' processes never load

        return fused.device_sets(list(sets.values()))

    def train_epoch(self, model: keras.Model, config: RunConfig, x, y, order: np.ndarray,
                    measure: tuple = ()) -> tuple[dict, float, float, list[tuple[float, float]] | None]:
        from regbench import fused

        key = program_key(config)
        warmup = fused.compile_epoch(key, model, x, y, config.batch_size, config.eval_batch_size, len(order), measure)
        logs, seconds, measured = fused.train_epoch(key, model, x, y, order, config.batch_size, config.eval_batch_size,
                                                    measure)
        results = [(each["crossentropy"], each["accuracy"]) for each in measured] if measure else None
        return logs, warmup, warmup + seconds, results

    def evaluate(self, model: keras.Model, config: RunConfig, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        from regbench import fused

        logs = fused.evaluate(program_key(config), model, x, y, config.batch_size, config.eval_batch_size)
        return float(logs["crossentropy"]), float(logs["accuracy"])


EPOCH_RUNNERS = {"jax": JaxEpochs(), "tensorflow": TensorFlowEpochs(), "torch": EpochRunner()}


def epoch_runner() -> EpochRunner:
    """Return the epoch runner of the backend Keras runs on in this process."""
    return EPOCH_RUNNERS[keras.backend.backend()]


def _tensors(x: np.ndarray, y: np.ndarray) -> tuple:
    """Return `x`, `y` as TensorFlow tensors, converted once while both arrays live: every run of a split trains
    from one copy. The epoch's tf.data pipeline (_batches) holds its tensors in reference cycles until Python's
    next full collection; a copy per run would pile up, 157 MB per run on MNIST."""
    key = (id(x), id(y))
    if key not in _TENSORS:
        import tensorflow as tf

        _TENSORS[key] = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
        for array in (x, y):
            weakref.finalize(array, _TENSORS.pop, key, None)  # an id is reused once its array is gone
        if len(_TENSORS) > TENSORS_KEPT:
            _TENSORS.popitem(last=False)
    _TENSORS.move_to_end(key)
    return _TENSORS[key]


def weights_bytes(model: keras.Model) -> bytes:
    """Return the model's weights as the bytes of a Keras .weights.h5 file (to keep, or to send from a worker)."""
    with tempfile.TemporaryDirectory(prefix="regbench-weights-") as directory:
        path = Path(directory) / "run.weights.h5"  # Keras needs this suffix
        model.save_weights(path)
        return path.read_bytes()


def penalty(model: keras.Model) -> float:
    """Return the weight penalty (sum of regularization losses) at the current weights."""
    return float(sum(float(keras.ops.convert_to_numpy(loss)) for loss in model.losses))


def weight_statistics(model: keras.Model) -> dict:
    """Return norms and concentration of every kernel's weights taken together."""
    kernels = [layer.kernel for layer in model.layers if hasattr(layer, "kernel")]
    values = np.abs(np.concatenate([keras.ops.convert_to_numpy(k).ravel() for k in kernels]))
    top = max(1, int(math.ceil(0.01 * values.size)))
    total = values.sum()
    clipped = np.minimum(values, WEIGHT_BIN_EDGES[-1])
    return {
        "weight_histogram": np.histogram(clipped, bins=WEIGHT_BIN_EDGES)[0].tolist(),
        "weights_l1": float(total),
        "weights_l2": float(np.sqrt(np.sum(values.astype(np.float64) ** 2))),
        "weights_max_abs": float(values.max()),
        "weights_near_zero_fraction": float(np.mean(values < NEAR_ZERO)),
        "weights_top1pct_share": float(np.sort(values)[-top:].sum() / total) if total else math.nan,
    }


def train_run(
    config: RunConfig,
    split: Split,
    on_epoch: Callable[[dict], None] | None = None,
) -> RunResult:
    """Train `config` on `split` and measure it; `on_epoch` sees each epoch row as it ends."""
    # 1. Same seed -> same global state; layers and batches are seeded explicitly as well.
    began = time.perf_counter()
    if keras.backend.backend() != config.backend:
        raise RuntimeError(f"run {config.run_id} names backend {config.backend!r} but this process runs Keras on "
                           f"{keras.backend.backend()!r}; a run trains only on the backend of its id")
    runner, variant = epoch_runner(), variant_of(config)
    runner.seed(config.seed)
    model, hooks = compile_model(config)
    traces = runner.traces_in_epochs(config)  # JAX: compiled ahead of the epoch, and measured there
    model = runner.model_for(config, model)
    callbacks = [make() for make in hooks.callbacks]
    for callback in callbacks:
        callback.set_model(model)
        callback.on_train_begin()
    # 2. One training epoch at a time, on batches in an order this module controls.
    x_train, y_train = runner.training_arrays(split)
    sets = epoch_sets(model, config, split)
    measure = runner.measure_with_epoch(model, sets) if variant.train_epoch is None else ()
    rows, status, diverged_epoch = [], "ok", None
    best: dict[str, Any] = {"epoch": None, "val_accuracy": -math.inf, "val_crossentropy": math.inf, "weights": None}
    for epoch in range(config.stop_epoch or config.epochs):  # a partial run stops at its stop_epoch
        order = batch_order(config.seed, epoch, len(split.y_train))
        if variant.train_epoch is not None:
            logs, warmup, seconds = variant.train_epoch(runner, model, config, x_train, y_train, split.x_train, order)
            measurements = None
        elif hooks.epoch_data is not None:
            x_epoch, y_epoch = epoch_arrays(runner, hooks, config, split, order, epoch)
            logs, warmup, seconds, measurements = runner.train_epoch(model, config, x_epoch, y_epoch,
                                                                     np.arange(len(order)), measure)
            del x_epoch, y_epoch
            runner.release_epoch_data()
        else:
            logs, warmup, seconds, measurements = runner.train_epoch(model, config, x_train, y_train, order, measure)
        if epoch == 0:  # only the first epoch of a run compiles or traces
            first_warmup = warmup
            seconds -= warmup if math.isfinite(warmup) else 0.0
        row = {
            "epoch": epoch + 1,
            "train_crossentropy": logs["crossentropy"],
            "train_accuracy": logs["accuracy"],
            "penalty": penalty(model),
            "seconds": seconds,
        }
        if not math.isfinite(logs["crossentropy"]) or not math.isfinite(logs["loss"]):
            status, diverged_epoch = "diverged", epoch + 1
            row.update({f"{name}_{metric}": math.nan for name in sets for metric in ("crossentropy", "accuracy")})
            rows.append(row)
            break
        with measured_weights(model):
            for name, (crossentropy, accuracy) in zip(sets, measurements or [
                    runner.evaluate(model, config, x, y) for x, y in sets.values()]):
                row[f"{name}_crossentropy"], row[f"{name}_accuracy"] = crossentropy, accuracy
            if (row["val_accuracy"], -row["val_crossentropy"]) > (best["val_accuracy"], -best["val_crossentropy"]):
                best = {**row, "weights": model.get_weights()}  # the best validation epoch so far
            rows.append(row)
            if on_epoch:
                on_epoch(row)
            # 3. Keras' own EarlyStopping decides when to stop (and restores the best weights at the end).
            for callback in callbacks:
                callback.on_epoch_end(epoch, {"val_crossentropy": row["val_crossentropy"]})
        if model.stop_training:
            break
    if model.optimizer.use_ema:
        model.optimizer.finalize_variable_values(model.trainable_variables)  # the run ends on its averaged weights
    for callback in callbacks:
        callback.on_train_end()
    if variant.finish is not None:
        variant.finish(model, split.x_train)  # e.g. the final weights' population statistics
    warmup = _separate_warmup(rows, first_warmup)
    # The final measurements evaluate the training set as the backend holds it: no copy of it.
    measured = replace(split, x_train=x_train, y_train=y_train)
    if status == "ok" and config.stop_epoch:
        status = "partial"  # a tuning rung's prefix of a run: validation numbers only, never a finished run
    record = _run_record(model, config, measured, rows, status, diverged_epoch, warmup)
    record["best_val_epoch"] = best["epoch"]
    record.update(_partial_record(rows, best) if status == "partial"
                  else _best_validation_record(model, config, measured, record, best))
    record["wall_seconds"] = time.perf_counter() - began  # all of it: building, compiling, training, evaluating
    record["warmup_in_epochs"] = traces and math.isnan(warmup)  # it traced, too few backend calls to tell apart
    return RunResult(record, rows, model)


def _separate_warmup(rows: list[dict], measured: float) -> float:
    """Take the one-off warm-up out of the first epoch's seconds; return it (NaN where it cannot be told).

    `measured` is the warm-up seen within the first epoch (NaN when its backend calls were too few
    to tell); then the first epoch's excess over the median later epoch is the warm-up. A one-epoch
    run whose warm-up cannot be told keeps it in its epoch's seconds.
    """
    if math.isnan(measured) and len(rows) > 1:
        measured = max(0.0, rows[0]["seconds"] - float(np.median([row["seconds"] for row in rows[1:]])))
        rows[0]["seconds"] -= measured
    return measured


def _run_record(model, config: RunConfig, split: Split, rows: list[dict], status: str, diverged_epoch,
                warmup: float) -> dict:
    """Measure the final (or restored best) weights on the test and training sets."""
    record = {
        "status": status,
        "keras_backend": keras.backend.backend(),  # the backend that trained it (always config.backend)
        "warmup_seconds": warmup,  # one-off compile/trace time, kept out of every per-epoch time
        "diverged_epoch": diverged_epoch,
        "epochs_run": len(rows),
        "best_epoch": _best_epoch(rows),
        "train_seconds": float(sum(row["seconds"] for row in rows)),
        "seconds_per_epoch": float(np.mean([row["seconds"] for row in rows])),
        "parameter_count": int(model.count_params()),
        "final_penalty": penalty(model) if status == "ok" else math.nan,
        **run_provenance(config.backend),
    }
    record.update(_measure(model, config, split) if status == "ok" else dict.fromkeys(MEASURED, math.nan))
    record.update(weight_statistics(model))
    return record


def _partial_record(rows: list[dict], best: dict) -> dict:
    """Return a partial run's measured numbers: validation at its last epoch and at its best validation epoch
    (what a tuning rung reads); the test and training sets are not measured (NaN)."""
    last = rows[-1]
    record = {name: last.get(name, math.nan) if name.startswith("val_") else math.nan for name in MEASURED}
    return {**record, **{f"best_{name}": best.get(name, math.nan) if name.startswith("val_") else math.nan
                         for name in MEASURED}}


def _measure(model, config: RunConfig, split: Split, known: dict | None = None) -> dict:
    """Measure the model's current weights on the validation, test and training sets (validation numbers
    already `known` for these weights are taken as they are)."""
    measured = {name: known[name] for name in ("val_crossentropy", "val_accuracy")} if known else {}
    for part, x, y in (("val", split.x_val, split.y_val), ("test", split.x_test, split.y_test),
                       ("train", split.x_train, split.y_train)):
        if f"{part}_accuracy" not in measured:
            crossentropy, accuracy = epoch_runner().evaluate(model, config, x, y)
            measured[f"{part}_crossentropy"], measured[f"{part}_accuracy"] = crossentropy, accuracy
    measured["gap"] = measured["train_accuracy"] - measured["test_accuracy"]
    return measured


def _best_validation_record(model, config: RunConfig, split: Split, record: dict, best: dict) -> dict:
    """Measure the weights of the best validation epoch (highest validation accuracy, ties to the lower
    validation cross-entropy) as `best_*` fields, so that a comparison can select either the final or the
    best-validation weights of every run alike."""
    if record["status"] != "ok" or best["weights"] is None:
        return {f"best_{name}": math.nan for name in MEASURED}
    final = model.get_weights()
    if all(np.array_equal(a, b) for a, b in zip(final, best["weights"])):  # the final weights are the best ones
        return {f"best_{name}": record[name] for name in MEASURED}
    model.set_weights(best["weights"])
    measured = _measure(model, config, split, known=best)
    model.set_weights(final)
    return {f"best_{name}": value for name, value in measured.items()}


def _best_epoch(rows: list[dict]) -> int | None:
    """Return the 1-based epoch with the lowest validation cross-entropy."""
    finite = [row for row in rows if math.isfinite(row["val_crossentropy"])]
    return min(finite, key=lambda row: row["val_crossentropy"])["epoch"] if finite else None
