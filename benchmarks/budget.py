"""Where does the baseline plateau? The measurement behind the `converged` protocol's epoch budget.

Usage (REGBENCH_DATA set to the full mnist.npz):
    python benchmarks/budget.py [--epochs 20,40,60] [--seeds 2] [--jobs 2] [--store ~/.cache/regbench/budget.sqlite]

Trains the baseline (the course's 128-64 MLP, Adam 1e-3, batch 32, full MNIST, JAX) under cosine
decay to 0 at each budget, and at the largest budget also at a constant learning rate; prints the
final and best validation accuracy per budget, the spread of validation accuracy over each run's
last 10% of epochs, and the rule's choice: the smallest budget whose mean best-validation accuracy
is within `--within` pp of the largest budget's. Runs are kept in the store (rerunning reuses them)
and the table is written to benchmarks/BUDGET.md. Only validation numbers are read.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", default="20,40,60", help="epoch budgets, comma-separated")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--within", type=float, default=0.05, help="pp of the largest budget's best-val accuracy")
    parser.add_argument("--store", default=str(Path.home() / ".cache/regbench/budget.sqlite"))
    parser.add_argument("--data", default=os.environ.get("REGBENCH_DATA"))
    args = parser.parse_args()
    budgets = sorted(int(text) for text in args.epochs.split(","))

    from regbench.config import RunConfig
    from regbench.data import Splits, load_images
    from regbench.executor import executor_for
    from regbench.runner import train_missing
    from regbench.store import RunStore
    from regbench.wording import markdown_table

    splits = Splits(load_images(path=args.data))
    base = RunConfig(train_size=len(splits.get(None).y_train), backend="jax", device="cpu",
                     data=splits.images.fingerprint, schedule="cosine")
    arms = [(f"cosine {epochs}", replace(base, epochs=epochs)) for epochs in budgets]
    arms.append((f"constant {budgets[-1]}", replace(base, epochs=budgets[-1], schedule="constant")))
    configs = [replace(config, seed=seed) for _, config in arms for seed in range(args.seeds)]
    store = RunStore(args.store)
    started = time.perf_counter()
    with executor_for(args.jobs, None, {}, send_data=False, backend="jax") as executor:
        trained = train_missing(configs, splits, store, lambda line: print(line, file=sys.stderr), executor)
    wall = time.perf_counter() - started
    tables = store.load([config.run_id for config in configs])
    rows = []
    for name, config in arms:
        ids = [replace(config, seed=seed).run_id for seed in range(args.seeds)]
        runs = tables.runs.set_index("run_id").loc[ids]
        epochs = tables.epochs[tables.epochs["run_id"].isin(ids)]
        tail = epochs[epochs["epoch"] > config.epochs * 0.9]
        rows.append({
            "budget": name, "epochs": config.epochs,
            "final val acc %": 100 * runs["val_accuracy"].mean(),
            "best-val val acc %": 100 * runs["best_val_accuracy"].mean(),
            "best-val epoch": runs["best_val_epoch"].mean(),
            "val acc SD over last 10% epochs, pp": 100 * tail.groupby("run_id")["val_accuracy"].std(ddof=1).mean(),
            "s/epoch": runs["seconds_per_epoch"].mean(),
        })
    table = pd.DataFrame(rows)
    cosine = table[table["budget"].str.startswith("cosine")]
    top = cosine["best-val val acc %"].iloc[-1]
    chosen = int(cosine.loc[cosine["best-val val acc %"] >= top - args.within, "epochs"].min())
    table["epochs"] = table["epochs"].astype(str)
    text = markdown_table(list(table.columns), [[value if isinstance(value, str) else f"{value:.3f}"
                                                 for value in row] for row in table.itertuples(index=False)])
    report = (f"# Epoch budget of the `converged` protocol\n\n`python benchmarks/budget.py --epochs {args.epochs} "
              f"--seeds {args.seeds} --jobs {args.jobs}` ({trained} runs trained, {wall:.0f} s):\n\n{text}\n\n"
              f"Rule: the smallest cosine budget whose mean best-validation accuracy is within {args.within} pp of "
              f"the largest budget's ({top:.3f}%): **{chosen} epochs**. Validation numbers only; "
              f"{args.seeds} seeds per budget, so differences of a few hundredths of a point are noise.\n")
    (ROOT / "benchmarks" / "BUDGET.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
