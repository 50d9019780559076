"""Fault benchmark at full size: kill a real sweep again and again, feed every bad input, print a table.

Usage (REGBENCH_DATA set to the full mnist.npz):
    python benchmarks/faults.py [--kills 20] [--seed 0] [--work DIR]

1. An uninterrupted sweep (3 arms x 3 seeds, 3 epochs, full MNIST) gives the reference runs.
2. The same sweep on a fresh store is started again and again and killed at a random moment
   (SIGKILL or SIGINT, chosen at random) until `--kills` kills have landed on a running process,
   then run to the end; every run must be stored exactly once and equal the reference's numbers.
   A start that finds the sweep finished ends that round, and the next begins on a fresh store.
   This is done twice: in one process, one run at a time, and with `--jobs 2` (two runs at once in
   threads of the one process: a Ctrl-C stops both at their epoch's end; a sweep of TensorFlow runs
   would use a local Dask cluster, whose killed client's worker processes must end with it).
3. Every bad input of tests/test_cli.py's table that is bad for the full data too (one is out of
   range only for the tests' small file), and bad files and places (another application's SQLite
   database as the store, /proc as the output, a gzip file as the data) are tried: each must exit 2
   with one line and leave the store (and the foreign file) untouched.
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["compare", "--technique", "dropout,l2", "--seeds", "3", "--epochs", "3", "--backend", "jax"]
FULL_FILE_MESSAGES = {  # the tests' small file is a subset; the full file is the dataset itself
    "holds images of MNIST, not Fashion-MNIST": "is MNIST, not Fashion-MNIST"}
NUMBERS = ["run_id", "status", "test_accuracy", "test_crossentropy", "train_accuracy", "weights_l2", "best_epoch"]


def regbench(*args: str) -> list[str]:
    """Return the command line that runs regbench with this interpreter."""
    return [sys.executable, "-m", "regbench", *args]


def stored_runs(store: Path) -> list[str]:
    """Return the run ids in a store (none if it does not exist yet)."""
    if not store.exists():
        return []
    with sqlite3.connect(store, timeout=30) as db:
        try:
            return [row[0] for row in db.execute("SELECT run_id FROM runs")]
        except sqlite3.OperationalError:
            return []


def runs_table(out: Path) -> pd.DataFrame:
    """Return the comparable numbers of a comparison's runs."""
    return pd.read_csv(out / "runs.csv")[NUMBERS].sort_values("run_id").reset_index(drop=True)


def kill_loop(work: Path, kills: int, rng: random.Random, jobs: int) -> dict:
    """Start the sweep and kill it at a random moment until `kills` kills have landed; return what survived.

    A start that finds the sweep finished (nothing left to kill) closes the round with a rerun, and the next
    start begins a new round on a fresh store, so that every kill lands on a sweep with runs left to train.
    """
    survived, signals, attempts, orphans, rounds = 0, {"SIGKILL": 0, "SIGINT": 0}, 0, 0, []
    while sum(signals.values()) < kills and attempts < 3 * kills:
        attempts += 1
        if not rounds or rounds[-1]["final_exit"] is not None:
            name = f"killed-jobs{jobs}-{len(rounds) + 1}"
            store, out = work / f"{name}.sqlite", work / name
            rounds.append({"store": store, "out": out, "final_exit": None,
                           "command": regbench(*SWEEP, "--jobs", str(jobs), "--store", str(store), "--out", str(out))})
        store, command = rounds[-1]["store"], rounds[-1]["command"]
        before = len(stored_runs(store))
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
        time.sleep(rng.uniform(2, 15))
        kill = rng.choice([signal.SIGKILL, signal.SIGINT])
        landed = process.poll() is None
        workers = psutil.Process(process.pid).children(recursive=True) if landed else []
        if landed:
            os.kill(process.pid, kill)
            signals[kill.name] += 1
        process.wait()
        orphans += len(psutil.wait_procs(workers, timeout=15)[1])  # a killed client's Dask workers must go too
        after = stored_runs(store)
        survived += landed and len(after) == len(set(after)) and len(after) >= before
        what = kill.name if landed else "none (the sweep had finished)"
        print(f"attempt {attempts} (round {len(rounds)}): kill {what}, runs stored {before} -> {len(after)}",
              flush=True)
        if not landed:
            rounds[-1]["final_exit"] = process.returncode
    if rounds[-1]["final_exit"] is None:
        rounds[-1]["final_exit"] = subprocess.run(rounds[-1]["command"], cwd=ROOT, capture_output=True,
                                                  text=True).returncode
    return {"rounds": rounds, "survived": survived, "signals": signals, "attempts": attempts, "orphans": orphans}


def bad_inputs(work: Path) -> tuple[int, int]:
    """Try every bad input of the CLI test table; return (tried, clear errors)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_cli import BAD_INPUTS

    store = work / "untouched.sqlite"
    clear = 0
    full_data = [(args, FULL_FILE_MESSAGES.get(message, message)) for args, message in BAD_INPUTS
                 if "2500" not in message]  # out of range for the tests' small file only
    for args, message in full_data:
        done = subprocess.run(regbench("compare", *args, "--store", str(store), "--out", str(work / "bad")),
                              cwd=ROOT, capture_output=True, text=True)
        lines = done.stderr.strip().splitlines()
        ok = (done.returncode == 2 and lines and lines[-1].startswith("Error: ") and message in lines[-1]
              and "Traceback" not in done.stderr and not store.exists() and not (work / "bad").exists())
        clear += bool(ok)
        print(f"bad input {' '.join(args)!r}: exit {done.returncode}, {'clear' if ok else 'NOT CLEAR'}", flush=True)
    return len(full_data), clear


def file_faults(work: Path) -> tuple[int, int]:
    """Try the bad files and places (a foreign database as store, /proc as output, a gzip as data); return (tried,
    clear)."""
    foreign, gzipped = work / "someone-elses.sqlite", work / "mnist.npz.gz"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    gzipped.write_bytes(gzip.compress(b"\x00" * 1000))
    before = foreign.read_bytes()
    cases = [(["--store", str(foreign)], "not a regbench run store"), (["--out", "/proc/regbench"], "holds no files"),
             (["--data", str(gzipped)], "a gzip file, not an .npz archive")]
    clear = 0
    for args, message in cases:
        command = ["compare", "--technique", "dropout", "--store", str(work / "untouched.sqlite"), "--out",
                   str(work / "bad"), *args]
        done = subprocess.run(regbench(*command), cwd=ROOT, capture_output=True, text=True)
        lines = done.stderr.strip().splitlines()
        ok = (done.returncode == 2 and lines and message in lines[-1] and "Traceback" not in done.stderr
              and foreign.read_bytes() == before and not (work / "bad").exists())
        clear += bool(ok)
        print(f"bad file {' '.join(args)!r}: exit {done.returncode}, {'clear' if ok else 'NOT CLEAR'}", flush=True)
    return len(cases), clear


def main() -> None:
    """Run the three parts and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None)
    options = parser.parse_args()
    if not os.environ.get("REGBENCH_DATA"):
        sys.exit("set REGBENCH_DATA to the full mnist.npz")
    work = options.work or Path(tempfile.mkdtemp(prefix="regbench-faults-"))
    started = time.perf_counter()
    reference = subprocess.run(regbench(*SWEEP, "--store", str(work / "reference.sqlite"), "--out",
                                        str(work / "reference")), cwd=ROOT, capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr
    expected = runs_table(work / "reference")
    rows, failed = [("sweep", f"{' '.join(SWEEP)} (full MNIST, {len(expected)} runs)")], False
    for jobs in (1, 2):
        result = kill_loop(work, options.kills, random.Random(options.seed + jobs), jobs)
        rounds = result["rounds"]
        stored = [stored_runs(each["store"]) for each in rounds]
        identical = all(runs_table(each["out"]).equals(expected) for each in rounds)
        backends = set().union(*(pd.read_csv(each["out"] / "runs.csv")["keras_backend"] for each in rounds))
        integrity = set()
        for each in rounds:
            with sqlite3.connect(each["store"]) as db:
                integrity.add(db.execute("PRAGMA integrity_check").fetchone()[0])
        lost = sum(len(set(expected["run_id"]) - set(ids)) for ids in stored)
        twice = sum(len(ids) - len(set(ids)) for ids in stored)
        exits = sorted({each["final_exit"] for each in rounds})
        landed = sum(result["signals"].values())
        rows += [
            (f"--jobs {jobs}: kills that landed on a running sweep", f"{landed} ({result['signals']['SIGKILL']} "
             f"SIGKILL, {result['signals']['SIGINT']} SIGINT) in {result['attempts']} starts, {len(rounds)} "
             "sweep(s) from an empty store"),
            (f"--jobs {jobs}: kills survived (store consistent after each)", f"{result['survived']}/{landed}"),
            (f"--jobs {jobs}: runs lost", str(lost)),
            (f"--jobs {jobs}: runs stored twice", str(twice)),
            (f"--jobs {jobs}: exit status of each sweep's last, uninterrupted start", ", ".join(map(str, exits))),
            (f"--jobs {jobs}: resumed runs identical to an uninterrupted sweep", "yes" if identical else "NO"),
            (f"--jobs {jobs}: backend that trained the runs", ", ".join(sorted(backends))),
            (f"--jobs {jobs}: store integrity_check", ", ".join(sorted(integrity))),
            (f"--jobs {jobs}: worker processes left running 15 s after their client was killed",
             str(result["orphans"])),
        ]
        failed |= bool(lost or twice or exits != [0] or not identical or integrity != {"ok"} or backends != {"jax"}
                       or result["survived"] != landed or result["orphans"])
    tried, clear = map(sum, zip(bad_inputs(work), file_faults(work)))
    rows += [
        ("bad inputs tried", str(tried)),
        ("clear errors (exit 2, one line, nothing written)", f"{clear}/{tried}"),
        ("wall time", f"{time.perf_counter() - started:.1f} s"),
    ]
    print("\n| check | result |\n| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")
    sys.exit(1 if failed or clear != tried else 0)


if __name__ == "__main__":
    main()
