"""One speed lever, timed on full MNIST in this process (run by speed.py; prints one JSON line).

Usage: python levers.py MNIST_NPZ tf-fit THREADS | jax-fit | jax-fused | jax-together RUNS
Times the second epoch (the first compiles) of the default model; seconds per model-epoch, training only.
"""

import json
import sys
import time

from regbench.backend import select_backend

path, lever, *rest = sys.argv[1:]
backend = "tensorflow" if lever.startswith("tf") else "jax"
select_backend(backend, "cpu", tf_threads=int(rest[0]) if lever == "tf-fit" else 1)

from regbench import train  # noqa: E402
from regbench.config import RunConfig  # noqa: E402
from regbench.data import load_images, split_images  # noqa: E402

split = split_images(load_images(path))
runs = int(rest[0]) if lever == "jax-together" else 1
configs = [RunConfig(backend=backend, seed=seed) for seed in range(runs)]
models = []
for config in configs:
    train.seed_globals(config.seed)
    models.append(train.compile_model(config)[0])
x, y = train.training_arrays(split)
seconds = []
for epoch in range(2):
    orders = [train.batch_order(config.seed, epoch, len(split.y_train)) for config in configs]
    started = time.perf_counter()
    if lever in ("tf-fit", "jax-fit"):
        models[0].fit(split.x_train[orders[0]], split.y_train[orders[0]], batch_size=32, epochs=1, shuffle=False,
                      verbose=0)
    elif lever == "jax-fused":
        train.train_epoch(models[0], configs[0], x, y, orders[0])
    else:
        from regbench import fused

        fused.train_epoch_together(train.program_key(configs[0]), models, x, y, orders, 32, train.EVAL_BATCH_SIZE)
    seconds.append(time.perf_counter() - started)
print(json.dumps({"lever": lever, "runs": runs, "seconds_per_model_epoch": seconds[-1] / runs,
                  "first_epoch_seconds": seconds[0]}))
