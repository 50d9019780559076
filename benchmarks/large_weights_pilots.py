"""Which training design makes a few input pixels carry weights 10x the rest? The pilots behind large-weights.

Usage (REGBENCH_DATA set to the full mnist.npz):
    python benchmarks/large_weights_pilots.py [--seeds 1000,1001] [--jobs 2] [--store ~/.cache/regbench/pilots.sqlite]

Trains the untreated baseline (128-64 MLP, Adam at a constant rate as the study does, batch 32, JAX) with 10
planted pixels (data.plant_features) under
each design below, on tuning seeds only, and measures its first layer as the study does
(studies.large_weights.measure): the planted pixels' outgoing weight norm over the median live pixel's, the
largest such ratio, and the largest planted single weight over the median live weight. Only weights are read, no
validation or test score: the choice of design cannot favour a technique. Writes benchmarks/LARGE_WEIGHTS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DESIGNS = {  # name -> RunConfig changes
    "2,000 images, 30 epochs, lr 1e-3 (the study before)": {"train_size": 2_000, "epochs": 30},
    "2,000 images, 120 epochs, lr 1e-3": {"train_size": 2_000, "epochs": 120},
    "2,000 images, 30 epochs, lr 3e-3": {"train_size": 2_000, "epochs": 30, "lr": 3e-3},
    "500 images, 120 epochs, lr 1e-3": {"train_size": 500, "epochs": 120},
    "500 images, 400 epochs, lr 1e-3": {"train_size": 500, "epochs": 400},
    "8,000 images, 30 epochs, lr 1e-3": {"train_size": 8_000, "epochs": 30},
    "32,000 images, 30 epochs, lr 1e-3": {"train_size": 32_000, "epochs": 30},
    "50,000 images, 40 epochs, lr 1e-3": {"train_size": 50_000, "epochs": 40},
    "50,000 images, 40 epochs, lr 3e-3": {"train_size": 50_000, "epochs": 40, "lr": 3e-3},
    "50,000 images, 40 epochs, lr 1e-2": {"train_size": 50_000, "epochs": 40, "lr": 1e-2},
}
PLANTED = 10
TARGET = 10  # the factor the study's question is about


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1000,1001", help="tuning seeds, comma-separated")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--store", default=str(Path.home() / ".cache/regbench/pilots.sqlite"))
    parser.add_argument("--data", default=os.environ.get("REGBENCH_DATA"))
    args = parser.parse_args()
    seeds = [int(text) for text in args.seeds.split(",")]

    from regbench.backend import select_backend

    select_backend("jax", "cpu")
    from regbench.config import RunConfig
    from regbench.data import Splits, load_images
    from regbench.executor import executor_for
    from regbench.runner import trained_models
    from regbench.store import RunStore
    from regbench.studies.large_weights import weight_measures
    from regbench.wording import markdown_table

    splits = Splits(load_images(path=args.data))
    base = RunConfig(backend="jax", device="cpu", data=splits.images.fingerprint, planted=PLANTED)
    designs = {name: [replace(base, seed=seed, **changes) for seed in seeds] for name, changes in DESIGNS.items()}
    store = RunStore(args.store)
    started = time.perf_counter()
    with executor_for(args.jobs, None, {}, send_data=False, backend="jax") as executor:
        models, trained = trained_models([c for configs in designs.values() for c in configs], splits, store,
                                         lambda line: print(line, file=sys.stderr), executor)
    wall = time.perf_counter() - started
    rows, models_left = [], iter(models)
    for name, configs in designs.items():
        measured = []
        for config in configs:
            split = splits.get(*config.split_key)
            live = np.any(split.x_train.reshape(len(split.x_train), -1) > 0, axis=0)
            measured.append(weight_measures(next(models_left), live, PLANTED))
        frame = pd.DataFrame(measured)
        rows.append([name, f"{frame['planted_over_median'].min():.1f}-{frame['planted_over_median'].max():.1f}",
                     f"{frame['planted_largest_over_median'].min():.1f}-"
                     f"{frame['planted_largest_over_median'].max():.1f}",
                     f"{frame['planted_weight_over_median'].min():.0f}-{frame['planted_weight_over_median'].max():.0f}",
                     "yes" if (frame["planted_over_median"] >= TARGET).all() else "no"])
    table = markdown_table(["design", "planted / median live pixel ‖w‖₂ (median planted)", "largest planted / median",
                            "largest planted |w| / median live |w|", f"≥ {TARGET}x in norm on every seed"], rows)
    report = (f"# Pilots of the large-weights study\n\n`python benchmarks/large_weights_pilots.py --seeds {args.seeds} "
              f"--jobs {args.jobs}` ({trained} runs trained, {wall:.0f} s), the baseline with {PLANTED} planted "
              f"pixels on tuning seeds {args.seeds}; ranges over the seeds:\n\n{table}\n\n"
              "Longer runs at a constant rate change nothing once the training loss reaches 0 (a run of 80 epochs "
              "at 50,000 images and 3e-3 ended with the 40-epoch run's weights).\n")
    (ROOT / "benchmarks" / "LARGE_WEIGHTS.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
