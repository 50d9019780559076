"""Check a comparison's files against the run store, and optionally retrain stored runs."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from regbench import stats
from regbench.data import load_mnist, split_mnist
from regbench.errors import UsageError
from regbench.store import RunStore, RunTables
from regbench.train import train_run

TIMING = {"train_seconds", "seconds_per_epoch", "seconds", "finished_at",  # differ on every rerun
          "seconds_per_epoch_mean", "seconds_per_epoch_sd", "time_ratio"}
RERUN_SEED = 0  # picks which runs --rerun retrains


def _text(value) -> str:
    """Write a cell as text, with every kind of missing value as ''."""
    return "" if pd.isna(value) else str(value)


def _differences(name: str, written: pd.DataFrame, recomputed: pd.DataFrame, key: str) -> list[str]:
    """Compare two tables cell by cell (numbers to 1e-9 relative), ignoring timing columns."""
    problems = []
    written, recomputed = written.set_index(key), recomputed.set_index(key)
    for row in recomputed.index.difference(written.index):
        problems.append(f"{name}: row {row} is in the store but not in {name}")
    for row in written.index.difference(recomputed.index):
        problems.append(f"{name}: row {row} has no run in the store")
    rows = written.index.intersection(recomputed.index)
    for column in sorted((set(written.columns) & set(recomputed.columns)) - TIMING):
        left, right = written.loc[rows, column], recomputed.loc[rows, column]
        if pd.api.types.is_numeric_dtype(left) and pd.api.types.is_numeric_dtype(right):
            same = np.isclose(left.astype(float), right.astype(float), rtol=1e-9, atol=0, equal_nan=True)
        else:
            same = (left.map(_text) == right.map(_text)).to_numpy()
        problems += [f"{name}: {column} of {row} is {a!r} in the file but {b!r} from the store"
                     for row, a, b, ok in zip(rows, left, right, same) if not ok]
    return problems


def verify_comparison(directory: Path, written: RunTables, manifest: dict, store_path: Path, rerun: int,
                      data: str | None, echo: Callable[[str], None]) -> list[str]:
    """Return every difference between a comparison's tables and what the store says (empty: verified)."""
    # 1. Recompute the tables from the stored runs named in the manifest.
    run_ids = [run_id for ids in manifest["run_ids"].values() for run_id in ids]
    store = RunStore(store_path)
    stored = store.load(run_ids)
    problems = [f"run {run_id} is named in manifest.json but not in {store_path}"
                for run_id in sorted(set(run_ids) - set(stored.runs.get("run_id", [])))]
    problems += _differences("runs.csv", written.runs, stored.runs, "run_id")
    techniques = list(manifest["techniques"])
    summary = stats.summarize(stored.runs, techniques)
    problems += _differences("summary.csv", pd.read_csv(directory / "summary.csv"), summary, "technique")
    echo(f"checked {len(stored.runs)} stored runs and the summary of {len(techniques)} technique(s)")
    # 2. Retrain a few stored runs and compare every number but the timings.
    if rerun:
        problems += _rerun(stored.runs, store, rerun, data, echo)
    return problems


def _rerun(runs: pd.DataFrame, store: RunStore, count: int, data: str | None, echo) -> list[str]:
    """Retrain `count` random stored runs and list every recorded number that came out different."""
    if count > len(runs):
        raise UsageError(f"--rerun {count}: the comparison has only {len(runs)} runs; allowed 0..{len(runs)}")
    chosen = np.random.default_rng(RERUN_SEED).choice(runs["run_id"].to_numpy(), count, replace=False)
    configs = store.configs(list(chosen))
    mnist = load_mnist(data)
    problems = []
    for number, config in enumerate(configs, start=1):
        if config.data != mnist.fingerprint:
            raise UsageError(f"{mnist.source} is not the data run {config.run_id} was trained on; pass --data")
        split = split_mnist(mnist, config.train_size)
        echo(f"[rerun {number}/{count}] {config.technique} seed {config.seed} ({config.run_id})")
        result = train_run(config, split)
        fresh = pd.DataFrame([{"run_id": config.run_id, **result.record}]).drop(columns="weight_histogram")
        problems += _differences(f"rerun of {config.run_id}", runs[runs["run_id"] == config.run_id], fresh, "run_id")
    return problems
