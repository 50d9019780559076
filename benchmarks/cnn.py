"""The cnn's speed on both backends against a plain Keras convnet script, side by side in one run (issue 39).

Usage (REGBENCH_DATA set to the full mnist.npz):
    python benchmarks/cnn.py [--train-size 50000] [--epochs 2] [--batch-size 32] [--before GIT-REF]

Each row is a fresh process that trains one model for `--epochs` epochs on the first `--train-size` training images
with the 10,000 held-out images as validation after every epoch, and times each epoch from its start to the end of
its validation (the first epoch compiles; the table takes the later ones):
- a plain Keras script, as a course writes it, on the TensorFlow and on the JAX backend: `fit` with
  `validation_data`, the same layers as regbench's cnn (conv 32 - pool - conv 64 - pool - dense 128 - dense 10,
  3x3 convolutions with same padding, 2x2 max-pooling, relu, Adam at 1e-3);
- regbench's cnn (`train.train_run`) on both backends; its epoch also evaluates the training monitor (up to 10,000
  training images), which the plain script does not; and `regbench compare --jobs 2` of the cnn, two runs at once;
- with `--before`, regbench's rows again on that commit's code (a temporary git worktree).
Prints the table, the targets and every figure as JSON; benchmarks/speed.py (`make bench`, or `--cnn-only`) keeps
them in RESULTS.md and RESULTS.json.
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
BACKENDS = ("tensorflow", "jax")


def plain(backend: str, data: str, train_size: int, epochs: int, batch_size: int) -> dict:
    """Fit the plain convnet in this process (Keras on `backend`); return each epoch's seconds."""
    os.environ["KERAS_BACKEND"] = backend
    import keras

    keras.utils.set_random_seed(0)
    with np.load(data) as arrays:
        x, y = arrays["x_train"].astype("float32") / 255.0, arrays["y_train"]
    x_train, y_train, x_val, y_val = x[:train_size], y[:train_size], x[50_000:], y[50_000:]
    model = keras.Sequential([
        keras.Input(shape=(28, 28)),
        keras.layers.Reshape((28, 28, 1)),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    clock = EpochClock()
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, validation_data=(x_val, y_val), verbose=0,
              callbacks=[clock.keras_callback(keras)])
    return {"epoch_seconds": clock.seconds}


def regbench_cnn(backend: str, data: str, train_size: int, epochs: int, batch_size: int) -> dict:
    """Train regbench's cnn in this process; return each epoch's seconds, with and without its measurements."""
    from regbench.backend import select_backend

    select_backend(backend, "cpu")
    from regbench import train
    from regbench.config import RunConfig
    from regbench.data import Splits, load_images

    images = load_images("mnist", data)
    split = Splits.of(images).get(train_size)
    config = RunConfig(architecture="cnn", hidden=(128,), backend=backend, epochs=epochs, batch_size=batch_size,
                       train_size=train_size, data=images.fingerprint)
    clock = EpochClock()
    training = []
    train.train_run(config, split, on_epoch=lambda row: (clock.tick(), training.append(row["seconds"])))
    return {"epoch_seconds": clock.seconds, "training_seconds": training,
            "steps_apart": getattr(config, "steps_apart", False)}  # (code before steps apart: none)


class EpochClock:
    """Seconds between the ends of consecutive epochs (the first from the clock's start)."""

    def __init__(self):
        self.last, self.seconds = time.perf_counter(), []

    def tick(self) -> None:
        now = time.perf_counter()
        self.seconds.append(now - self.last)
        self.last = now

    def keras_callback(self, keras):
        clock = self

        class Tick(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                clock.last = time.perf_counter()  # fit's own set-up before the first epoch is not the epoch's

            def on_epoch_end(self, epoch, logs=None):  # after fit's validation
                clock.tick()

        return Tick()


def measure(tree: Path, row: str, backend: str, args) -> dict:
    """Run one row in a fresh process on the code of `tree`; return what it printed."""
    environment = {**os.environ, "PYTHONPATH": str(tree)}
    environment.pop("KERAS_BACKEND", None)
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", row, backend, "--data",
                           args.data, "--train-size", str(args.train_size), "--epochs", str(args.epochs),
                           "--batch-size", str(args.batch_size)],
                          cwd=tree, env=environment, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{row} on {backend} ({tree}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_rows(data: str, train_size: int = 50_000, epochs: int = 2, batch_size: int = 32,
                 before: str | None = None) -> list[dict]:
    """Measure every row, one fresh process each (regbench's rows also on the code of git ref `before`)."""
    settings = argparse.Namespace(data=data, train_size=train_size, epochs=epochs, batch_size=batch_size)
    rows = []
    with tempfile.TemporaryDirectory(prefix="regbench-before-") as scratch:
        trees, worktree = {"this tree": ROOT}, Path(scratch) / "before"
        if before:
            trees[f"before ({before})"] = worktree
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(worktree), before],
                           check=True)
        try:
            for backend in BACKENDS:
                rows.append({"what": f"plain Keras convnet, {backend}", **measure(ROOT, "plain", backend, settings)})
                for label, tree in trees.items():
                    rows.append({"what": f"regbench cnn, {backend}, {label}",
                                 **measure(tree, "regbench", backend, settings)})
                rows.append({"what": f"regbench compare --jobs 2, {backend}, this tree",
                             **two_at_once(backend, settings)})
        finally:
            if before:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=True)
    return rows


def two_at_once(backend: str, settings: argparse.Namespace) -> dict:
    """Time `regbench compare --technique dropout --seeds 1 --jobs 2` of the cnn (its two runs at once: threads of
    one process on JAX, a local Dask cluster on TensorFlow) on an empty store, one more epoch than the other rows
    so that the compiling first is shared by more; return its whole wall time per model-epoch (start-up,
    compiling, final measurements and reports included) as the row's one epoch figure."""
    epochs = settings.epochs + 1
    with tempfile.TemporaryDirectory(prefix="regbench-cnn-") as scratch:
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "regbench", "compare", "--technique", "dropout", "--seeds", "1", "--jobs", "2",
             "--architecture", "cnn", "--backend", backend, "--epochs", str(epochs), "--batch-size",
             str(settings.batch_size), "--train-size", str(settings.train_size), "--data", settings.data,
             "--store", f"{scratch}/runs.sqlite", "--out", f"{scratch}/out"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
        wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"regbench compare --jobs 2 on {backend} failed:\n{done.stderr[-3000:]}")
    return {"epoch_seconds": [wall / (2 * epochs)], "wall": wall, "model_epochs": 2 * epochs}


def later(seconds: list[float]) -> float:
    """Return the median seconds of the epochs after the first (the first compiles)."""
    return float(np.median(seconds[1:] if len(seconds) > 1 else seconds))


def plain_seconds(rows: list[dict]) -> dict[str, float]:
    """Return the plain convnet's seconds per epoch on each backend."""
    return {backend: later(next(row for row in rows if row["what"] == f"plain Keras convnet, {backend}")
                           ["epoch_seconds"]) for backend in BACKENDS}


def table(rows: list[dict]) -> str:
    """Return the rows as a Markdown table, each against the plain convnet on TensorFlow and Keras' own fit."""
    plain = plain_seconds(rows)
    lines = ["| what | s per epoch, with validation | vs plain convnet on TensorFlow | vs Keras' own fit on its "
             "backend | training alone |", "| --- | --- | --- | --- | --- |"]
    for row in rows:
        backend = "jax" if ", jax" in row["what"] else "tensorflow"
        per_epoch = later(row["epoch_seconds"])
        alone = f"{later(row['training_seconds']):.2f}" if "training_seconds" in row else ""
        lines.append(f"| {row['what']} | {per_epoch:.2f} | {per_epoch / plain['tensorflow']:.2f}x | "
                     f"{per_epoch / plain[backend]:.2f}x | {alone} |")
    return "\n".join(lines)


def targets(rows: list[dict]) -> str:
    """Say, per backend, whether regbench's cnn meets issue 39's two targets (met, or NO)."""
    plain = plain_seconds(rows)
    lines = []
    for backend in BACKENDS:
        setups = {row["what"]: later(row["epoch_seconds"]) for row in rows
                  if row["what"].startswith("regbench") and f", {backend}, this tree" in row["what"]}
        best = min(setups, key=setups.__getitem__)  # regbench's fastest setup on this backend
        mine = setups[best]
        for target, yardstick in (("the plain convnet on TensorFlow", plain["tensorflow"]),
                                  (f"Keras' own fit on {backend}", plain[backend])):
            verdict = "met" if mine <= yardstick else "NO"
            lines.append(f"- {backend}: at least as fast as {target}: {mine:.2f} s against {yardstick:.2f} s per "
                         f"model-epoch ({mine / yardstick:.2f}x, {best}): {verdict}")
    return "\n".join(lines)


PROTOCOL = ("Each row is a fresh process training one model on {train_size:,} training images (batch {batch_size}, "
            "{epochs} epochs) with the 10,000 held-out images as validation after every epoch; seconds per epoch "
            "from its start to the end of its validation, the median of the epochs after the first (which "
            "compiles). The plain script is Keras' `fit` with `validation_data`, the layers of regbench's cnn "
            "(conv 32 - pool - conv 64 - pool - dense 128 - dense 10), on the machine's threads; regbench trains "
            "each run on one thread (its bits do not depend on the core count; `--jobs 2` trains two runs at "
            "once) and its epoch also evaluates the training monitor (10,000 training images). 'Training alone' "
            "is the epoch's own seconds as runs.csv records them. The `--jobs 2` rows are a whole `compare` of two "
            "runs at once (one epoch more each, to share the compiling) on an empty store, its wall time per "
            "model-epoch: start-up, "
            "compiling, final measurements and reports included. Each target takes regbench's faster setup.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=50_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--before", help="a git ref whose regbench code to measure too")
    parser.add_argument("--data", default=os.environ.get("REGBENCH_DATA"))
    parser.add_argument("--child", nargs=2, metavar=("ROW", "BACKEND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        row, backend = args.child
        run = plain if row == "plain" else regbench_cnn
        print(json.dumps(run(backend, args.data, args.train_size, args.epochs, args.batch_size)))
        return
    rows = measure_rows(args.data, args.train_size, args.epochs, args.batch_size, args.before)
    print(PROTOCOL.format(**vars(args)), table(rows), targets(rows), json.dumps(rows), sep="\n\n")


if __name__ == "__main__":
    main()
