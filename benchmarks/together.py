"""Many runs of one architecture trained together in one JAX program, against one after another.

Usage: python benchmarks/together.py [--runs 1,10,100] [--epochs 2] [--device auto|cpu|gpu] [--data PATH]

For each count N: N default-MLP runs (seeds 0..N-1, full MNIST, batch 32, Adam) trained one
after another through regbench's fused epoch, then the same N trained together (jax.vmap over
Keras' train_step, train_epoch_together below). Prints model-epochs per second of
each, timed after a first, compiling epoch, and the ratio. The GPU target (issue 5): 100 runs
together at least 20x the throughput of 100 one after another.
"""

from __future__ import annotations

import argparse
import os
import time

from regbench.backend import select_backend

_STACKED = {}  # id of a fused program -> its epoch vmapped over a leading model axis, compiled once


def train_epoch_together(key, models: list, x, y, orders: list, batch_size: int, eval_batch_size: int) -> list[dict]:
    """Train several models of one structure one epoch each in one program (jax.vmap); return their logs.

    Each model sees its own batch order. The batched matrix products round differently from
    one run's, so a run trained together matches its lone twin to about 1e-5, not bit for bit.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from regbench import fused

    program = fused._program(key, models[0], x, y, batch_size, eval_batch_size)
    if id(program) not in _STACKED:
        _STACKED[id(program)] = jax.jit(jax.vmap(program._epoch, in_axes=(0, None, None, 0)))
    states = [fused._state(model, program) for model in models]
    stacked = jax.tree.map(lambda *values: jnp.stack(values), *states)
    logs, stacked = _STACKED[id(program)](stacked, x, y, jnp.asarray(np.stack(orders)))
    results = []
    for index, model in enumerate(models):
        fused._store_state(model, jax.tree.map(lambda values, i=index: values[i], stacked))
        results.append(fused._as_floats(jax.tree.map(lambda values, i=index: values[i], logs)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="1,10,100", help="comma-separated run counts")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs (after one compiling epoch)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    parser.add_argument("--data", default=os.environ.get("REGBENCH_DATA"))
    args = parser.parse_args()
    device = select_backend("jax", args.device)

    import jax

    from regbench import train
    from regbench.config import EVAL_BATCH_SIZE, RunConfig
    from regbench.data import load_images, split_images

    split = split_images(load_images(args.data))
    x, y = train.epoch_runner().training_arrays(split)
    print(f"device: {device} ({jax.devices()[0].device_kind}); {len(split.y_train):,} images, batch 32, "
          f"{args.epochs} timed epochs after one compiling epoch")
    print("| runs | one after another, model-epochs/s | together, model-epochs/s | together / one after another |")
    print("| --- | --- | --- | --- |")
    for count in (int(part) for part in args.runs.split(",")):
        configs = [RunConfig(backend="jax", device=device, seed=seed, train_size=len(split.y_train))
                   for seed in range(count)]

        def fresh_models(configs=configs):
            models = []
            for config in configs:
                train.epoch_runner().seed(config.seed)
                models.append(train.compile_model(config)[0])
            return models

        def orders(epoch, configs=configs):
            return [train.batch_order(config.seed, epoch, len(split.y_train)) for config in configs]

        # 1. One after another: every run through the same compiled epoch program.
        models = fresh_models()
        for model, order in zip(models, orders(0)):
            train.epoch_runner().train_epoch(model, configs[0], x, y, order)  # compiles once, on the first
        started = time.perf_counter()
        for epoch in range(1, args.epochs + 1):
            for model, config, order in zip(models, configs, orders(epoch)):
                train.epoch_runner().train_epoch(model, config, x, y, order)
        alone = count * args.epochs / (time.perf_counter() - started)
        # 2. Together: one program, the runs stacked on a leading axis.
        models = fresh_models()
        key = train.program_key(configs[0])
        train_epoch_together(key, models, x, y, orders(0), 32, EVAL_BATCH_SIZE)
        started = time.perf_counter()
        for epoch in range(1, args.epochs + 1):
            train_epoch_together(key, models, x, y, orders(epoch), 32, EVAL_BATCH_SIZE)
        together = count * args.epochs / (time.perf_counter() - started)
        print(f"| {count} | {alone:.2f} | {together:.2f} | {together / alone:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
