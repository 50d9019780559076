"""Where runs train beyond one at a time: JAX's --jobs in threads of one process, Dask distributed (loopback
only: a local cluster for TensorFlow's --jobs, a real scheduler and worker for --scheduler), and what happens when a
worker, the scheduler, a second client or a Ctrl-C comes."""

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pandas as pd
import psutil
import pytest
from conftest import SMALL_MNIST

from regbench.errors import Interrupted

SWEEP = ["compare", "--technique", "dropout", "--train-size", "200", "--epochs", "6", "--hidden", "8",
         "--batch-size", "50", "--backend", "jax", "--data", str(SMALL_MNIST)]  # JAX: workers start and compile fast
TF_SWEEP = [*SWEEP[:-4], "--backend", "tensorflow", *SWEEP[-2:]]  # TensorFlow's --jobs is a local Dask cluster
NUMBERS = ["run_id", "test_accuracy", "test_crossentropy", "train_accuracy", "weights_l2", "best_epoch", "status"]


def start(tmp_path, *args, log="cli"):
    """Start regbench in a fresh process, its stderr going to a file; return the process and that file."""
    stderr = tmp_path / f"{log}.stderr"
    process = subprocess.Popen([sys.executable, "-m", "regbench", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=stderr.open("w"), text=True)
    return process, stderr


def finish(process, stderr, expect=0):
    """Wait for a started regbench; assert its exit status; return its stdout and stderr."""
    stdout, _ = process.communicate(timeout=300)
    assert process.returncode == expect, stderr.read_text()[-3000:]
    return stdout, stderr.read_text()


def invoke(*args, expect=0):
    """Run regbench in this process; return the result."""
    from click.testing import CliRunner

    from regbench.cli import cli

    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == expect, result.output
    return result


def wait_for(condition, limit=120):
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def numbers(directory):
    return pd.read_csv(directory / "runs.csv")[NUMBERS].sort_values("run_id").reset_index(drop=True)


def stored(store):
    if not store.exists():
        return []
    with sqlite3.connect(store) as db:
        return [row[0] for row in db.execute("SELECT run_id FROM runs")]


def integrity(store):
    with sqlite3.connect(store) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def dask_workers(process):
    """Return the Dask worker processes a regbench process started (its local cluster's)."""
    return [child for child in psutil.Process(process.pid).children(recursive=True)
            if "resource_tracker" not in " ".join(child.cmdline())]


def trained_one_at_a_time(path, sweep):
    """Return the numbers of `sweep`'s runs trained in one process, one after another."""
    path.mkdir(exist_ok=True)
    finish(*start(path, *sweep, "--seeds", "2", "--store", str(path / "s.sqlite"), "--out", "out"))
    return numbers(path / "out")


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The JAX sweep's runs trained in this process, the reference every executor must match."""
    pytest.importorskip("jax")
    return trained_one_at_a_time(tmp_path_factory.mktemp("one-process"), SWEEP)


def test_jax_jobs_2_trains_in_threads_of_one_process_with_the_numbers_of_one_run_at_a_time(tmp_path, one_process):
    stdout, log = finish(*start(tmp_path, *SWEEP, "--seeds", "2", "--jobs", "2", "--store", str(tmp_path / "s.sqlite"),
                                "--out", "out"))
    assert "4 to train on jax/cpu in this process, 2 runs at once (a thread each" in log and "Dask" not in log
    assert "4 runs trained, 0 reused" in stdout
    pd.testing.assert_frame_equal(numbers(tmp_path / "out"), one_process, check_exact=True)


class NoSplits:
    """Splits for a stand-in for training, which needs none."""

    def get(self, *key):
        return None


@pytest.mark.parametrize("stop", ["ctrl-c", "error"])
def test_runs_in_threads_train_at_once_are_stored_as_they_end_and_stop_together(tmp_path, monkeypatch, stop):
    """The lanes themselves, with a stand-in for training whose epochs take 20 ms: two at a time, each stored as it
    ends; a Ctrl-C (raised from a lane; Python handles it in the main thread, as a terminal's) or a lane's error
    stops the others at their next epoch, and the error is raised."""
    from helpers import config_for

    from regbench import executor, sweep, train
    from regbench.executor import InProcess
    from regbench.store import RunStore

    short = replace(config_for("none"), epochs=2)
    todo = [short, *(replace(config_for("none"), seed=seed, epochs=500) for seed in (1, 2, 3))]  # 10 s unless stopped
    lock, training, most, pressed, epochs_after = threading.Lock(), set(), [0], threading.Event(), []

    def stand_in(config, split, on_epoch):
        with lock:
            training.add(config.seed)
            most[0] = max(most[0], len(training))
        try:
            for epoch in range(1, config.epochs + 1):
                time.sleep(0.02)
                if pressed.is_set():
                    epochs_after.append(config.seed)
                if config.seed == 1 and epoch == 25:  # long after the short run ended
                    pressed.set()
                    if stop == "error":
                        raise RuntimeError("a bug in training")
                    signal.raise_signal(signal.SIGINT)
                on_epoch({"epoch": epoch, "train_crossentropy": 1.0, "train_accuracy": 0.5, "val_crossentropy": 1.0,
                          "val_accuracy": 0.5, "seconds": 0.02})
        finally:
            with lock:
                training.discard(config.seed)
        return train.RunResult({"status": "ok"}, [], None)

    monkeypatch.setattr(train, "train_run", stand_in)
    monkeypatch.setattr(executor, "select_backend", lambda *args: "cpu")
    store, lines = RunStore(tmp_path / "s.sqlite"), []
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (pytest may ignore it)
    started = time.monotonic()
    try:
        with pytest.raises(Interrupted if stop == "ctrl-c" else RuntimeError):
            sweep.train_todo(todo, NoSplits(), store, InProcess(lanes=2), lines.append)
    finally:
        signal.signal(signal.SIGINT, outer)
    assert time.monotonic() - started < 5 and len(epochs_after) <= 10  # not the 500 epochs each had left
    assert most[0] == 2 and not training  # two at a time, and every lane ended
    assert store.finished([config.run_id for config in todo]) == {short.run_id} and store.claims() == {}
    assert stop == "error" or lines[-1] == ("interrupted: 1 of 4 runs stored, 3 left (the runs in progress are lost); "
                                            "rerun the same command to resume")


def test_tensorflow_jobs_2_matches_one_process_and_survives_a_killed_worker(tmp_path):
    one_process = trained_one_at_a_time(tmp_path / "one", TF_SWEEP)
    store = tmp_path / "s.sqlite"
    process, stderr = start(tmp_path, *TF_SWEEP, "--seeds", "2", "--jobs", "2", "--store", str(store), "--out", "out")
    wait_for(lambda: "epoch 3/6" in stderr.read_text())
    workers = dask_workers(process)
    assert len(workers) == 2
    workers[0].send_signal(signal.SIGKILL)  # mid-run: both workers are training (4 runs, 2 at a time)
    stdout, log = finish(process, stderr)
    assert "on a local Dask cluster of 2 worker processes" in log
    assert "4 runs trained, 0 reused" in stdout
    assert sorted(stored(store)) == sorted(set(stored(store))) and len(stored(store)) == 4
    assert integrity(store) == "ok"
    # the killed run, retried, too
    pd.testing.assert_frame_equal(numbers(tmp_path / "out"), one_process, check_exact=True)
    assert not any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in workers[1:])


@pytest.fixture
def cluster(tmp_path):
    """A real Dask scheduler and one worker process (one thread), both on 127.0.0.1; yields the address."""
    info = tmp_path / "scheduler.json"
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                  "--port", "0", "--no-dashboard", "--scheduler-file", str(info)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: info.exists() and info.stat().st_size > 0, limit=60)
    address = json.loads(info.read_text())["address"]
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--host", "127.0.0.1",
                               "--nworkers", "1", "--nthreads", "1", "--no-dashboard"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield address, scheduler
    for process in (worker, scheduler):
        process.kill()
        process.wait()


def test_a_scheduler_gives_the_same_numbers_to_two_clients_and_its_loss_is_one_line(tmp_path, one_process, cluster):
    address, scheduler = cluster
    store = tmp_path / "s.sqlite"
    # 1. Two regbench processes on one store and one cluster (one reads the data by path, the other sends it):
    #    each run trained once, the numbers of one process.
    first = start(tmp_path, *SWEEP, "--seeds", "1", "--scheduler", address, "--store", str(store), "--out", "a",
                  log="a")
    second = start(tmp_path, *SWEEP, "--seeds", "1", "--scheduler", address, "--send-data", "--store", str(store),
                   "--out", "b", log="b")
    outputs = [finish(*first), finish(*second)]
    trained = [int(stdout.split(" runs trained")[0].split()[-1]) for stdout, _ in outputs]
    assert sum(trained) == 2 and sorted(stored(store)) == sorted(set(stored(store)))
    seed_0 = one_process[one_process["run_id"].isin(stored(store))].reset_index(drop=True)
    assert len(seed_0) == 2
    pd.testing.assert_frame_equal(numbers(tmp_path / "a"), seed_0, check_exact=True)
    pd.testing.assert_frame_equal(numbers(tmp_path / "b"), seed_0, check_exact=True)
    # 2. Kept weights (as studies keep them) come back from the worker, and this process stores them.
    from regbench.data import Splits, read_images
    from regbench.errors import SweepError
    from regbench.executor import DaskCluster
    from regbench.store import RunStore
    from regbench.sweep import train_todo

    config = RunStore(store).configs([seed_0["run_id"][0]])[0]
    kept, splits = RunStore(tmp_path / "kept.sqlite"), Splits(read_images(SMALL_MNIST))
    broken = replace(config, variant="no-such-variant")  # its worker raises, and raises again when retried
    with DaskCluster(scheduler=address) as cluster:
        assert train_todo([config], splits, kept, cluster, print, keep_weights=True) == 1
        with pytest.raises(SweepError, match="1 of 1 runs failed on the workers .*unknown model variant"):
            train_todo([broken], splits, kept, cluster, print)
    assert kept.weights_path(config.run_id).read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"  # Keras' .weights.h5
    assert "unknown model variant" in kept.failures([broken.run_id])[broken.run_id]  # a rerun tries it again
    assert kept.finished([broken.run_id]) == set() and kept.claims() == {}
    # 3. The scheduler killed mid-sweep: one line, a non-zero exit, the finished runs kept; a rerun resumes.
    more = [*SWEEP, "--epochs", "150", "--seed-list", "5", "--store", str(store), "--out", "c"]  # runs of seconds
    process, stderr = start(tmp_path, *more, "--scheduler", address, log="c")
    wait_for(lambda: len(stored(store)) > 2)  # the first of the two runs: the second is training
    scheduler.send_signal(signal.SIGKILL)
    _, log = finish(process, stderr, expect=1)
    errors = [line for line in log.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "lost the Dask scheduler" in errors[0] and "rerun the same command" in errors[0]
    assert "Traceback" not in log
    assert len(stored(store)) == 3 and integrity(store) == "ok"
    assert "1 runs trained, 1 reused" in finish(*start(tmp_path, *more, log="d"))[0]


@pytest.mark.parametrize("address, message", [
    ("tcp://127.0.0.1:9", "cannot connect (Connection refused); is `dask scheduler` running there?"),
    ("127.0.0.1:8786x", "not a scheduler address; expected e.g. tcp://HOST:8786"),
    ("http", "no Dask handshake from there within 1 s (something may listen there"),  # hung for minutes
    ("silent", "no Dask handshake from there within 1 s"),
    ("talker", "what answers there is not a Dask scheduler (it began with b'SSH-2.0-')"),  # an exabyte allocation
])
def test_a_bad_scheduler_address_is_one_line_and_exit_2_within_seconds(tmp_path, listeners, address, message):
    address = listeners.get(address, address)
    started = time.monotonic()
    result = invoke(*SWEEP, "--seeds", "1", "--scheduler", address, "--scheduler-timeout", "1", "--store",
                    str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "out"), expect=2)
    assert time.monotonic() - started < 5
    assert result.output.startswith(f"Error: --scheduler {address}") and message in result.output
    assert result.output.count("\n") == 1
    assert not (tmp_path / "out").exists() and stored(tmp_path / "s.sqlite") == []


def test_a_worker_whose_copy_of_the_data_differs_refuses_naming_the_file():
    from helpers import config_for

    from regbench.errors import UsageError
    from regbench.workers import WorkerOrders, _split

    orders = WorkerOrders(fingerprint="0" * 16, path=str(SMALL_MNIST), shared=None, topic="t", pin_cores=False)
    with pytest.raises(UsageError, match=f"{SMALL_MNIST}: this worker's copy has content fingerprint [0-9a-f]{{16}}, "
                                         "not 0000000000000000"):
        _split(config_for("none"), orders, None)

