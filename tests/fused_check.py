"""Run in a JAX process by test_fused.py: fused epochs against Keras' own fit, printed as JSON."""

import json
import sys
from pathlib import Path

from regbench.backend import select_backend

select_backend("jax", "cpu")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from regbench import fused  # noqa: E402
from regbench.data import read_npz, split_mnist  # noqa: E402
from regbench.train import (  # noqa: E402
    EVAL_BATCH_SIZE, batch_order, compile_model, program_key, seed_globals, training_arrays,
)
from helpers import config_for  # noqa: E402

CHECKS = [("weight-decay+max-norm", 0, 1, {}), ("batchnorm+dropout+l2", 0, 1, {}),
          ("batchnorm+dropout+l2", 1, 2, {}),  # seed 1 runs on the program that seed 0's model made
          ("weight-decay", 0, 1, {"schedule": "cosine"}),  # a schedule's steps are compiled into the program:
          ("weight-decay", 0, 2, {"schedule": "cosine"}),  # a longer run needs its own
          ("weight-decay", 0, 2, {"schedule": "cosine", "warmup_epochs": 1})]


def weights(model):
    return [keras.ops.convert_to_numpy(v) for v in model.trainable_variables + model.non_trainable_variables]


def fresh(config):
    seed_globals(config.seed)
    return compile_model(config)[0]


def largest_difference(first, second):
    return max(float(np.max(np.abs(a - b))) for a, b in zip(weights(first), weights(second)))


def largest_kernel_difference(first, second):
    return max(float(np.max(np.abs(keras.ops.convert_to_numpy(a) - keras.ops.convert_to_numpy(b))))
               for a, b in zip(first.trainable_variables, second.trainable_variables))


split = split_mnist(read_npz(Path(sys.argv[1])), train_size=300)
x, y = training_arrays(split)
repeats = -(-EVAL_BATCH_SIZE // len(split.y_val)) + 1  # full evaluation batches and a smaller last one
x_eval, y_eval = np.concatenate([split.x_val] * repeats), np.concatenate([split.y_val] * repeats)
assert len(y_eval) > EVAL_BATCH_SIZE and len(y_eval) % EVAL_BATCH_SIZE
report = {"fit_vs_fused": {}, "together_vs_alone": None}
for setting, seed, epochs, changes in CHECKS:
    config = config_for(setting, seed=seed, backend="jax", batch_size=32, epochs=epochs, **changes)
    by_fit, by_program = fresh(config), fresh(config)
    for epoch in range(epochs):
        order = batch_order(seed, epoch, len(split.y_train))
        history = by_fit.fit(split.x_train[order], split.y_train[order], batch_size=32, epochs=1,
                             shuffle=False, verbose=0).history
        logs = fused.train_epoch(program_key(config), by_program, x, y, order, 32, EVAL_BATCH_SIZE)
    keras_logs = by_fit.evaluate(x_eval, y_eval, batch_size=EVAL_BATCH_SIZE, verbose=0, return_dict=True)
    program_logs = fused.evaluate(program_key(config), by_program, x_eval, y_eval, 32, EVAL_BATCH_SIZE)
    report["fit_vs_fused"][f"{setting} seed {seed} {epochs} epochs {changes}"] = {
        "weights": largest_difference(by_fit, by_program),
        "evaluation": [[keras_logs[name], program_logs[name]] for name in ("crossentropy", "accuracy", "loss")],
        "accuracy": [history["accuracy"][0], logs["accuracy"]],
        "loss": [history["loss"][0], logs["loss"]],
    }
config = config_for("dropout", backend="jax")
alone = [fresh(config_for("dropout", seed=seed, backend="jax")) for seed in (2, 3)]
together = [fresh(config_for("dropout", seed=seed, backend="jax")) for seed in (2, 3)]
for model, seed in zip(alone, (2, 3)):
    fused.train_epoch(program_key(config), model, x, y, batch_order(seed, 0, 300), 32, EVAL_BATCH_SIZE)
fused.train_epoch_together(program_key(config), together, x, y, [batch_order(seed, 0, 300) for seed in (2, 3)], 32,
                           EVAL_BATCH_SIZE)
report["together_vs_alone"] = [largest_kernel_difference(a, t) for a, t in zip(alone, together)]
report["alone_seeds_apart"] = largest_kernel_difference(alone[0], alone[1])
print(json.dumps(report))
