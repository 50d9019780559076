"""Run in a JAX process by test_fused.py: fused epochs against Keras' own fit, printed as JSON."""

import json
import sys
from pathlib import Path

from regbench.backend import jax_cache_dir, select_backend

select_backend("jax", "cpu")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from helpers import config_for  # noqa: E402

from regbench import fused, jax_ops  # noqa: E402
from regbench.config import EVAL_BATCH_SIZE  # noqa: E402
from regbench.data import read_images, split_images  # noqa: E402
from regbench.train import (  # noqa: E402
    KeepRawWeights,
    batch_order,
    compile_model,
    epoch_arrays,
    epoch_runner,
    measured_weights,
    program_key,
)

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from together import train_epoch_together  # noqa: E402  (benchmarks/together.py: many runs in one program)

runner = epoch_runner()

CHECKS = [("batchnorm+dropout+l2+gaussian-noise+label-smoothing", 0, 1, {"params": {"input_noise_stddev": 0.1}}),
          ("batchnorm+dropout+l2+gaussian-noise+label-smoothing", 1, 2, {"params": {"input_noise_stddev": 0.1}}),
          # seed 1 runs on the program that seed 0's model made
          ("weight-decay+max-norm", 0, 1, {"schedule": "cosine"}),  # a schedule's steps are compiled into the
          ("weight-decay+max-norm", 0, 2, {"schedule": "cosine", "warmup_epochs": 1}),  # program: a longer run
          # needs its own
          ("ema+mixup", 0, 2, {"params": {"ema_horizon": 5.0, "mixup_alpha": 0.4}}),  # raw weights train on; each
          # epoch blends its own images
          ("spatial-dropout", 0, 1, {"architecture": "cnn", "hidden": (16,)}),  # convolutions on the CPU: steps apart
          ("augment+spatial-dropout", 0, 1, {"architecture": "cnn", "hidden": (16,)})]  # rounding apart (test_fused)


def weights(model):
    return [keras.ops.convert_to_numpy(v) for v in model.trainable_variables + model.non_trainable_variables]


def fresh(config):
    runner.seed(config.seed)
    return compile_model(config)[0]


def fresh_with_hooks(config):
    runner.seed(config.seed)
    return compile_model(config)


def averaged_weights(model):
    with measured_weights(model):
        return weights(model)


def largest_difference(first, second):
    return max(float(np.max(np.abs(a - b))) for a, b in zip(weights(first), weights(second)))


def largest_kernel_difference(first, second):
    return max(float(np.max(np.abs(keras.ops.convert_to_numpy(a) - keras.ops.convert_to_numpy(b))))
               for a, b in zip(first.trainable_variables, second.trainable_variables))


split = split_images(read_images(Path(sys.argv[1])), train_size=300)
x, y = runner.training_arrays(split)
repeats = -(-EVAL_BATCH_SIZE // len(split.y_val)) + 1  # full evaluation batches and a smaller last one
x_eval, y_eval = np.concatenate([split.x_val] * repeats), np.concatenate([split.y_val] * repeats)
assert len(y_eval) > EVAL_BATCH_SIZE and len(y_eval) % EVAL_BATCH_SIZE
report = {"fit_vs_fused": {}, "together_vs_alone": None}
for setting, seed, epochs, changes in CHECKS:
    params = changes.get("params", {})
    config = config_for(setting, params, seed=seed, backend="jax", batch_size=32, epochs=epochs,
                        **{name: value for name, value in changes.items() if name != "params"})
    (by_fit, hooks), by_program = fresh_with_hooks(config), fresh(config)
    callbacks = [KeepRawWeights()] if by_fit.optimizer.use_ema else []
    x_test, y_test = (split.x_val, split.y_val) if config.architecture == "cnn" else (x_eval, y_eval)  # the cnn:
    # one smaller batch is enough, and its full ones are slow on a CPU
    for epoch in range(epochs):
        order = batch_order(seed, epoch, len(split.y_train))
        x_fit, y_fit, x_program, y_program = split.x_train[order], split.y_train[order], x, y
        if hooks.epoch_data is not None:  # mixup: the epoch's blends, in visiting order
            x_program, y_program = epoch_arrays(runner, hooks, config, split, order, epoch)
            x_fit, y_fit, order = np.asarray(x_program), np.asarray(y_program), np.arange(len(order))
        history = by_fit.fit(x_fit, y_fit, batch_size=32, epochs=1, shuffle=False, verbose=0,
                             callbacks=callbacks).history
        measure = fused.device_sets([(x_test, y_test)]) if epoch == epochs - 1 else ()  # measured with the epoch
        logs, _, with_epoch = fused.train_epoch(program_key(config), by_program, x_program, y_program, order, 32,
                                                EVAL_BATCH_SIZE, measure)
    keras_logs = by_fit.evaluate(x_test, y_test, batch_size=EVAL_BATCH_SIZE, verbose=0, return_dict=True)
    program_logs = fused.evaluate(program_key(config), by_program, x_test, y_test, 32, EVAL_BATCH_SIZE)
    report["fit_vs_fused"][f"{setting} seed {seed} {epochs} epochs {changes}"] = {
        "weights": largest_difference(by_fit, by_program),
        "averaged": max(float(np.max(np.abs(a - b))) for a, b in zip(averaged_weights(by_fit),
                                                                       averaged_weights(by_program))),
        "evaluation": [[keras_logs[name], program_logs[name]] for name in ("crossentropy", "accuracy", "loss")],
        "measured_with_epoch": [with_epoch[0] == program_logs, with_epoch[0]],
        "accuracy": [history["accuracy"][0], logs["accuracy"]],
        "loss": [history["loss"][0], logs["loss"]],
    }
config = config_for("dropout", backend="jax")
alone = [fresh(config_for("dropout", seed=seed, backend="jax")) for seed in (2, 3)]
together = [fresh(config_for("dropout", seed=seed, backend="jax")) for seed in (2, 3)]
for model, seed in zip(alone, (2, 3)):
    fused.train_epoch(program_key(config), model, x, y, batch_order(seed, 0, 300), 32, EVAL_BATCH_SIZE)
train_epoch_together(program_key(config), together, x, y, [batch_order(seed, 0, 300) for seed in (2, 3)], 32,
                     EVAL_BATCH_SIZE)
report["together_vs_alone"] = [largest_kernel_difference(a, t) for a, t in zip(alone, together)]
report["alone_seeds_apart"] = largest_kernel_difference(alone[0], alone[1])


def trained_by_program(config):
    model = fresh(config)
    for epoch in range(config.epochs):
        fused.train_epoch(program_key(config), model, x, y, batch_order(config.seed, epoch, 300), 32, EVAL_BATCH_SIZE)
    return model, fused.evaluate(program_key(config), model, x_eval, y_eval, 32, EVAL_BATCH_SIZE)


def no_tracing(*args, **kwargs):
    raise AssertionError("traced a program the program cache holds")


# A later process loads each program from the user's program cache instead of tracing it again: the same bits.
config = config_for("batchnorm+dropout+l2+gaussian-noise+label-smoothing", {"input_noise_stddev": 0.1}, seed=4,
                    backend="jax", batch_size=32, epochs=2)
traced, traced_logs = trained_by_program(config)
fused._PROGRAMS.clear()  # as in a new process
kept = len(list((jax_cache_dir() / "programs").glob("*.jaxexport")))
tracing, jax.export.export = jax.export.export, no_tracing
loaded, loaded_logs = trained_by_program(config)
report["loaded_vs_traced"] = {"programs": kept, "weights": largest_difference(traced, loaded),
                              "evaluation": [traced_logs == loaded_logs, loaded_logs]}
# Beyond PROGRAMS_KEPT structures the least recently used programs are dropped and their compiled code freed: the
# process's memory mappings stay flat (each program holds about 500)
jax.export.export = tracing  # new structures from here on
fused.PROGRAMS_KEPT = 2
mappings = []
for index in range(6):
    config = config_for("dropout", {"rate": 0.11 + index / 100}, seed=0, backend="jax", batch_size=32, epochs=1)
    fused.train_epoch(program_key(config), fresh(config), x, y, batch_order(0, 0, 300), 32, EVAL_BATCH_SIZE)
    mappings.append(len(Path("/proc/self/maps").read_text().splitlines()))
report["programs_dropped"] = {"kept": len(fused._PROGRAMS), "mappings": mappings}
# The cnn's 2x2 max-pooling on JAX (regbench.jax_ops) against Keras' own: the same numbers and the same gradient,
# ties included (relu's zeros, and a tie at a positive maximum), bit for bit, signed zeros too
pooled = {}
rng = np.random.default_rng(0)
for shape in ((4, 28, 28, 8), (4, 14, 14, 16)):
    images = jax.numpy.asarray(np.maximum(rng.standard_normal(shape), 0).astype(np.float32))
    images = images.at[0, 0, 0, 0].set(1.0).at[0, 0, 1, 0].set(1.0).at[0, 1, 1, 0].set(1.0)
    upstream = jax.numpy.asarray(rng.standard_normal((shape[0], shape[1] // 2, shape[2] // 2, shape[3]))
                                 .astype(np.float32))
    results = []
    for pool in (lambda images: keras.ops.max_pool(images, 2, 2), jax_ops.max_pool_2x2):
        values, backward = jax.vjp(jax.jit(pool), images)
        results.append([np.asarray(values).view(np.uint32), np.asarray(backward(upstream)[0]).view(np.uint32)])
    pooled[str(shape)] = [bool(np.array_equal(mine, keras_own)) for mine, keras_own in zip(*results)]
report["max_pool"] = pooled
print(json.dumps(report))
