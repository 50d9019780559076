"""Every path that trains trains on the backend its run id names (JAX, through the command line)."""

import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import SMALL_MNIST

TINY = ["--train-size", "200", "--epochs", "1", "--backend", "jax", "--data", str(SMALL_MNIST)]
NUMBERS = ["run_id", "test_accuracy", "test_crossentropy", "train_accuracy", "weights_l2", "best_epoch"]


def regbench(tmp_path, *args):
    """Run regbench in a fresh process (as a user does), with no backend preset; return the finished process."""
    env = {key: value for key, value in os.environ.items() if key != "KERAS_BACKEND"}
    done = subprocess.run([sys.executable, "-m", "regbench", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def dead_owner() -> str:
    """Return a claim owner whose process has ended (as a killed worker's would be)."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    return f"{socket.gethostname()}:{ended.pid}"


def test_every_path_trains_on_the_backend_of_the_run_id(tmp_path):
    pytest.importorskip("jax")
    store = tmp_path / "s.sqlite"
    # 1. In this process (--jobs 1): four runs, the first of each structure compiles; l2 = 0 is the baseline.
    regbench(tmp_path, "compare", "--technique", "l2", "--param", "l2=0", "--seeds", "2", *TINY, "--store", str(store),
             "--out", "a")
    first = pd.read_csv(tmp_path / "a" / "runs.csv")
    assert set(first["keras_backend"]) == {"jax"} and set(first["backend"]) == {"jax"}
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["device"]["keras_backend"] == "jax"
    zero = first.pivot_table(index="seed", columns="technique", values="test_crossentropy")
    assert (zero["l2"] == zero["none"]).all()
    by_seed = first[first["technique"] == "none"].set_index("seed")
    assert by_seed.loc[0, "warmup_seconds"] > by_seed.loc[1, "warmup_seconds"]  # seed 1 reuses the program
    assert by_seed.loc[0, "warmup_seconds"] > by_seed.loc[0, "seconds_per_epoch"]  # compile kept out of the epoch
    cache = Path(os.environ["HOME"]) / ".cache" / "regbench" / "jax" / "threads-1"  # the user's compilation cache
    assert len(list((cache / "programs").glob("*.jaxexport"))) >= 3  # the epoch and two evaluations, exported
    assert any(path.name.startswith("jit_call") for path in cache.iterdir())  # and compiled (the next process
    # loads both)
    # 2. A run lost from the store and held by a process that died, resumed with --jobs 2 (JAX: runs at once in
    #    threads of this process; Dask workers once, where an old bug trained it in the parent, on TensorFlow): on
    #    JAX, to the same numbers as one run at a time. The dry run names the run left.
    lost = by_seed.loc[1, "run_id"]
    with sqlite3.connect(store) as db:
        db.execute("DELETE FROM runs WHERE run_id = ?", (lost,))
        db.execute("INSERT INTO claims VALUES (?, ?, ?, ?)", (lost, dead_owner(), "2026-01-01T00:00:00+00:00",
                                                              "2099-01-01T00:00:00+00:00"))  # unexpired
    again = ["compare", "--technique", "l2", "--param", "l2=0", "--seeds", "2", *TINY, "--store", str(store),
             "--out", "b", "--jobs", "2"]
    plan = regbench(tmp_path, *again, "--dry-run").stdout
    assert [line.split()[0] for line in plan.splitlines() if line.endswith("to train")] == [lost]
    assert "1 to train on jax/cpu" in plan and not (tmp_path / "b").exists()
    done = regbench(tmp_path, *again)
    assert "1 runs trained, 3 reused" in done.stdout and "TensorFlow" not in done.stderr
    assert "in this process, 2 runs at once" in done.stderr
    resumed = pd.read_csv(tmp_path / "b" / "runs.csv")  # trained from the cached programs: the same numbers
    assert set(resumed["keras_backend"]) == {"jax"}
    pd.testing.assert_frame_equal(resumed[NUMBERS].sort_values("run_id").reset_index(drop=True),
                                  first[NUMBERS].sort_values("run_id").reset_index(drop=True), check_exact=True)


def test_a_run_refuses_a_process_of_another_backend():
    from helpers import config_for

    from regbench.train import train_run

    with pytest.raises(RuntimeError, match="names backend 'jax' but this process runs Keras on 'tensorflow'"):
        train_run(config_for("none", backend="jax"), split=None)
