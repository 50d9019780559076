"""One speed lever, timed on full MNIST in this process (run by speed.py; prints one JSON line).

Usage: python levers.py MNIST_NPZ LEVER, LEVER one of
    tf-fit THREADS | tf-epoch | jax-fit | jax-fused | jax-together RUNS | tf-run new|shared
Times the second epoch (the first compiles) of the default model; seconds per model-epoch, training only.
tf-fit is Keras' `fit` on the epoch's shuffled arrays; tf-epoch is regbench's TensorFlow epoch (one thread): `fit` of
batches gathered from the training tensors.
tf-run trains a second run of the default model (seed 1, 2 epochs) after a first (seed 0) in this process, on a
model of its own (traced anew) or on the structure's shared model (regbench's path); its first epoch is its
warm-up plus a steady epoch.
"""

import json
import sys
import time

from regbench.backend import select_backend

path, lever, *rest = sys.argv[1:]
backend = "tensorflow" if lever.startswith("tf") else "jax"
select_backend(backend, "cpu", tf_threads=int(rest[0]) if lever == "tf-fit" else 1)

from regbench import train  # noqa: E402
from regbench.config import EVAL_BATCH_SIZE, RunConfig  # noqa: E402
from regbench.data import load_images, split_images  # noqa: E402

split = split_images(load_images(path=path))
if lever == "tf-run":
    first, second = (RunConfig(backend=backend, seed=seed, epochs=2) for seed in (0, 1))
    train.train_run(first, split)
    if rest[0] == "new":
        train._SHARED_MODELS.clear()  # as before runs shared a model: every run traces its functions anew
    record = train.train_run(second, split).record
    print(json.dumps({"lever": lever, "runs": 1, "seconds_per_model_epoch": record["seconds_per_epoch"],
                      "first_epoch_seconds": record["warmup_seconds"] + record["seconds_per_epoch"]}))
    sys.exit()
runs = int(rest[0]) if lever == "jax-together" else 1
configs = [RunConfig(backend=backend, seed=seed) for seed in range(runs)]
models = []
for config in configs:
    train.epoch_runner().seed(config.seed)
    models.append(train.compile_model(config)[0])
x, y = train.epoch_runner().training_arrays(split)
seconds = []
for epoch in range(2):
    orders = [train.batch_order(config.seed, epoch, len(split.y_train)) for config in configs]
    started = time.perf_counter()
    if lever in ("tf-fit", "jax-fit"):
        models[0].fit(split.x_train[orders[0]], split.y_train[orders[0]], batch_size=32, epochs=1, shuffle=False,
                      verbose=0)
    elif lever in ("tf-epoch", "jax-fused"):
        train.epoch_runner().train_epoch(models[0], configs[0], x, y, orders[0])
    else:
        from together import train_epoch_together  # benchmarks/together.py, beside this script

        train_epoch_together(train.program_key(configs[0]), models, x, y, orders, 32, EVAL_BATCH_SIZE)
    seconds.append(time.perf_counter() - started)
print(json.dumps({"lever": lever, "runs": runs, "seconds_per_model_epoch": seconds[-1] / runs,
                  "first_epoch_seconds": seconds[0]}))
