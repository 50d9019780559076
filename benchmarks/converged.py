"""Where the seconds of a converged run go: the profile behind issue 35's "make it affordable".

Usage (REGBENCH_DATA set to the full mnist.npz):
    python benchmarks/converged.py [--before GIT-REF] [--repeats 2] [--runs 2]

Trains the baseline under the `converged` protocol (40 epochs, cosine decay, batch 32, the 128-64 MLP, full MNIST,
JAX) `--runs` times (seeds 0, 1, ...) in one fresh process, and splits each run's wall time into its one-off
warm-up (compiling, or loading compiled programs), its training epochs, and the rest (per-epoch validation and
monitor evaluation, the final measurements, building the model). With `--before`, the same process is also run on
that commit's code (a temporary git worktree), alternating with this tree's, `--repeats` times each, so that both
are measured side by side on the machine as it is. Medians go to benchmarks/CONVERGED.md beside the compute floor
that benchmarks/RESULTS.json states.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 40  # the converged protocol's budget


def child(runs: int, data: str) -> None:
    """Train the runs in this process; print each one's seconds as JSON."""
    from regbench.backend import select_backend

    select_backend("jax", "cpu")
    from regbench import train
    from regbench.config import PROTOCOLS, RunConfig
    from regbench.data import Splits, load_images

    images = load_images("mnist", data)
    split = Splits(images).get(None)
    protocol = PROTOCOLS["converged"]
    results = []
    for seed in range(runs):
        config = RunConfig(backend="jax", epochs=protocol["epochs"], schedule=protocol["schedule"], seed=seed,
                           train_size=len(split.y_train), data=images.fingerprint)
        record = train.train_run(config, split).record
        results.append({name: record[name] for name in (
            "wall_seconds", "train_seconds", "warmup_seconds", "epochs_run", "best_val_accuracy", "test_accuracy")})
    print(json.dumps(results))


def measure(tree: Path, runs: int, data: str) -> list[dict]:
    """Run the child in a fresh process on the code of `tree`; return its runs' seconds."""
    environment = {**os.environ, "PYTHONPATH": str(tree)}  # the tree's regbench before the installed one
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", "--runs", str(runs),
                           "--data", data], cwd=tree, env=environment, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(label: str, measured: list[list[dict]], floor: float) -> dict:
    """Return the medians over repeats of the first run of a process and of the later ones."""
    first = [runs[0] for runs in measured]
    later = [run for runs in measured for run in runs[1:]]

    def per_epoch(runs: list[dict], name: str) -> float:
        return float(np.median([run[name] / run["epochs_run"] for run in runs]))

    rest = [(run["wall_seconds"] - run["train_seconds"] - run["warmup_seconds"]) / run["epochs_run"]
            for run in first + later]
    return {
        "code": label,
        "s_per_model_epoch": per_epoch(first + later, "wall_seconds"),
        "training_per_epoch": per_epoch(first + later, "train_seconds"),
        "rest_per_epoch": float(np.median(rest)),
        "warmup_first_run": float(np.median([run["warmup_seconds"] for run in first])),
        "warmup_later_runs": float(np.median([run["warmup_seconds"] for run in later])) if later else float("nan"),
        "to_floor": per_epoch(first + later, "wall_seconds") / floor,
        "test_accuracy": sorted({run["test_accuracy"] for run in first + later}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="a git ref whose code to measure side by side with this tree's")
    parser.add_argument("--repeats", type=int, default=2, help="fresh processes per code")
    parser.add_argument("--runs", type=int, default=2, help="runs per process (seeds 0, 1, ...)")
    parser.add_argument("--data", default=os.environ.get("REGBENCH_DATA"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.runs, args.data)
        return
    floor = json.loads((ROOT / "benchmarks" / "RESULTS.json").read_text())["floors"]
    floor_per_model_epoch = max(floor["compute_floor"], floor["optimizer_floor"])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="regbench-before-") as scratch:
        trees = {"this tree": ROOT}
        if args.before:
            before = Path(scratch) / "before"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(before), args.before],
                           check=True)
            trees = {f"before ({args.before})": before, "this tree": ROOT}
        measured: dict[str, list] = {label: [] for label in trees}
        try:
            for _ in range(args.repeats):
                for label, tree in trees.items():  # alternating, so that drift hits both alike
                    measured[label].append(measure(tree, args.runs, args.data))
        finally:
            if args.before:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=True)
    rows = [summary(label, runs, floor_per_model_epoch) for label, runs in measured.items()]
    write(rows, args, floor_per_model_epoch, time.perf_counter() - started)


def write(rows: list[dict], args, floor: float, seconds: float) -> None:
    """Write the table to benchmarks/CONVERGED.md (and the figures to CONVERGED.json)."""
    lines = [
        "# Where a converged run's seconds go",
        "",
        f"Measured by `python benchmarks/converged.py{' --before ' + args.before if args.before else ''} "
        f"--repeats {args.repeats} --runs {args.runs}` on {time.strftime('%Y-%m-%dT%H:%M:%S%z')}, in {seconds:.0f} s.",
        "",
        f"One fresh process per measurement trains the baseline under the converged protocol ({EPOCHS} epochs, "
        f"cosine decay, batch 32, the 128-64 MLP, full MNIST, JAX) {args.runs} time(s), seeds 0.., alternating "
        "between the codes. Per model-epoch: the run's wall time (building, warm-up, training, per-epoch "
        "validation and monitor evaluation, final measurements), its training epochs alone, and the rest apart "
        "from the warm-up; medians over every run. The warm-up is the one-off compile (or load of compiled "
        "programs) a run pays; a later run of the same structure in the process should pay none. The floor is "
        f"benchmarks/RESULTS.json's: {floor:.3f} s per model-epoch (training forward and backward on 50,000 images "
        "and one validation pass; the per-epoch measurement here evaluates two 10,000-image sets).",
        "",
        "| code | s per model-epoch (wall) | vs floor | training per epoch | rest per epoch | warm-up, first run "
        "| warm-up, later runs | test accuracy |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        accuracy = ", ".join(f"{value:.4f}" for value in row["test_accuracy"])
        lines.append(f"| {row['code']} | {row['s_per_model_epoch']:.3f} | {row['to_floor']:.2f}x | "
                     f"{row['training_per_epoch']:.3f} | {row['rest_per_epoch']:.3f} | {row['warmup_first_run']:.2f} s "
                     f"| {row['warmup_later_runs']:.2f} s | {accuracy} |")
    (ROOT / "benchmarks" / "CONVERGED.md").write_text("\n".join(lines) + "\n")
    (ROOT / "benchmarks" / "CONVERGED.json").write_text(json.dumps({"rows": rows, "floor": floor}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
