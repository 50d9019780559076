"""How far do retrained runs land from the stored ones when the CPU's kernels round differently?

Usage (REGBENCH_DATA set to the full mnist.npz):
    python benchmarks/rounding.py [--dir results] [--runs 6] [--isa AVX2 --isa SSE4_2]

Another processor runs other float kernels (vector width, fused multiply-add), which round
differently, and training amplifies the difference. This retrains `--runs` random runs of a
committed comparison (JAX) once as they were made (the control: must be exact on this machine)
and once per `--isa`, with XLA told to use at most that instruction set, as a CPU without the
wider instructions would; it prints the largest difference per recorded number and writes
benchmarks/ROUNDING.md. regbench.verify's cross-CPU tolerance is set from these figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
NUMBERS = ["test_accuracy", "train_accuracy", "gap", "test_crossentropy", "train_crossentropy", "final_penalty",
           "weights_l1", "weights_l2", "weights_max_abs", "weights_near_zero_fraction", "weights_top1pct_share",
           "best_epoch", "epochs_run"]


def retrain(directory: Path, run_ids: list[str]) -> list[dict]:
    """Retrain `run_ids` of `directory`'s runs.csv in this process; return their records (child mode)."""
    from regbench.backend import select_backend

    select_backend("jax", "cpu")
    from regbench.data import load_images, split_images
    from regbench.train import train_run
    from regbench.verify import config_from_row

    runs = pd.read_csv(directory / "runs.csv").set_index("run_id", drop=False)
    images = load_images()
    records = []
    for run_id in run_ids:
        config = config_from_row(runs.loc[run_id].to_dict())
        record = train_run(config, split_images(images, config.train_size)).record
        records.append({"run_id": run_id, **{name: record[name] for name in NUMBERS}})
        print(f"retrained {run_id}", file=sys.stderr, flush=True)
    return records


def retrained_under(isa: str | None, directory: Path, run_ids: list[str]) -> pd.DataFrame:
    """Retrain the runs in a child process whose XLA uses at most instruction set `isa` (None: as made)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if isa:
        env["XLA_FLAGS"] = f"--xla_cpu_max_isa={isa}"
    done = subprocess.run([sys.executable, __file__, "--child", str(directory), *run_ids], env=env,
                          capture_output=True, text=True, check=True)
    return pd.DataFrame(json.loads(done.stdout)).set_index("run_id")


def _cell(value) -> str:
    """Format a table cell."""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def main() -> None:
    """Retrain, compare, print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=ROOT / "results")
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--isa", action="append", default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--child", nargs="+", default=None)
    options = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if options.child:
        print(json.dumps(retrain(Path(options.child[0]), options.child[1:])))
        return
    from regbench.wording import markdown_table

    stored = pd.read_csv(options.dir / "runs.csv").set_index("run_id", drop=False)
    chosen = list(np.random.default_rng(options.seed).choice(stored.index.to_numpy(), options.runs, replace=False))
    rows = []
    for isa in [None, *(options.isa or ["AVX2", "SSE4_2"])]:
        fresh = retrained_under(isa, options.dir, chosen)
        for name in NUMBERS:
            difference = (fresh[name] - stored.loc[chosen, name]).abs()
            relative = difference / stored.loc[chosen, name].abs().where(lambda values: values > 0)
            scale = 100 if "accuracy" in name or name == "gap" else 1
            rows.append({"kernels": isa or "as made (control)", "number": name,
                         "largest |difference|": difference.max() * scale,
                         "largest relative": relative.max(), "runs differing": int((difference > 0).sum())})
    table = pd.DataFrame(rows)
    text = (f"# Retrained runs under other CPU kernels\n\n`python benchmarks/rounding.py --runs {options.runs}` on "
            f"{len(chosen)} runs of `{options.dir.name}/runs.csv` ({', '.join(chosen)}); accuracies and gap in "
            "percentage points.\n\n" + markdown_table(list(table.columns), table.map(_cell).values.tolist()) + "\n")
    (ROOT / "benchmarks" / "ROUNDING.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
