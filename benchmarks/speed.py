"""Speed of regbench against a plain Keras script on full MNIST, side by side in one run.

Usage: python benchmarks/speed.py [--seeds 5] [--epochs 10] [--repeats 1] [--data PATH] [--out FILE] [--short-only]
                                  [--warm-only] [--cnn-only] [--cnn-before GIT-REF]

Rows: (a) benchmarks/plain_keras.py, one process per seed, as a course runs it (the first half of the seeds timed
before the regbench rows, the rest after them: its own speed drifts); (b) `regbench
compare --technique dropout` on the default TensorFlow backend; (c) the same with `--backend
jax`; each regbench row also with `--jobs 2` (TensorFlow: a local Dask cluster; JAX: two runs at once in threads
of one process) where two cores are free; (d) floors measured
here: the protocol's FLOPs over this machine's sgemm rate, and Adam's bytes per step over the
memory bandwidth at the optimizer's working-set size. Then the levers one by one, the short
commands (2 runs x 3 and 10 epochs, JAX cold and warm, fixed costs), regbench.compare called again in one warm
process, the cnn on both backends against a plain Keras convnet (benchmarks/cnn.py), and the targets. Prints the
tables and writes them, with the machine and the command, to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import cnn  # benchmarks/cnn.py: the cnn rows
import numpy as np
import pandas as pd
import psutil

HERE = Path(__file__).resolve().parent
WIDTHS = (784, 128, 64, 10)  # the protocol's MLP
VALIDATION_IMAGES, TRAIN_IMAGES, BATCH = 10_000, 50_000, 32
ADAM_BYTES_PER_PARAMETER = 7 * 4  # reads weight, gradient, m, v; writes weight, m, v (float32)


REPLACED_JOBS_2 = {  # what --jobs 2 ran on before, as this benchmark measured it here (benchmarks/RESULTS.json)
    "(b) regbench compare, TensorFlow, --jobs 2": {"before": "the home-made process pool (2026-11-22)",
                                                   "s_per_model_epoch": 1.804, "peak_rss": 3855319040},
    "(c) regbench compare --backend jax --jobs 2": {"before": "a local Dask cluster (2026-11-25T01:38)",
                                                    "s_per_model_epoch": 0.520, "peak_rss": 1896374272},
}
LANES_WARM = "regbench compare --backend jax --jobs 2, warm (two runs at once in threads, a new store)"
PLAIN_SHORT = "the plain tf.keras script, two models (two processes)"


@dataclass
class Measured:
    """One command: wall seconds, peak memory of its whole process tree, its output."""

    wall: float
    peak_rss: int  # bytes, resident, summed over the process and all its children at the worst moment
    peak_pss: int  # bytes, proportional (each shared page split among the processes that map it), likewise
    processes: int  # the most processes the tree held at once
    stdout: str
    returncode: int


def measure(command: list[str], env: dict, poll_seconds: float = 0.05) -> Measured:
    """Run `command`, sampling the resident and proportional memory of its process tree until it ends."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = psutil.Popen(command, stdout=out, stderr=err, env=env, text=True)
        peak, peak_pss, processes = 0, 0, 1
        while process.poll() is None:
            total, total_pss = 0, 0
            try:
                members = [process, *process.children(recursive=True)]
                for member in members:
                    memory = member.memory_full_info()
                    total += memory.rss
                    total_pss += memory.pss
                processes = max(processes, len(members))
            except psutil.NoSuchProcess:
                pass
            peak, peak_pss = max(peak, total), max(peak_pss, total_pss)
            time.sleep(poll_seconds)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout = out.read()
        if process.returncode != 0:
            sys.exit(f"failed ({process.returncode}): {shlex.join(command)}\n{err.read()[-3000:]}")
        return Measured(wall, peak, peak_pss, processes, stdout, process.returncode)


def machine_description() -> dict:
    """Describe this machine and the library versions the figures depend on."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {
        "cpu": model, "cores usable": len(os.sched_getaffinity(0)),
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB", "os": platform.platform(),
        "python": platform.python_version(),
        **{name: version(name) for name in ("keras", "tensorflow", "jax", "numpy")},
        "gpu": "none",
    }


def parameter_count() -> int:
    """Return the weights and biases of the protocol's MLP."""
    return sum(fan_in * fan_out + fan_out for fan_in, fan_out in zip(WIDTHS, WIDTHS[1:]))


def flops_per_epoch() -> float:
    """Return the protocol's FLOPs per epoch: train steps (forward + backward) and one validation pass."""
    multiply_adds = sum(fan_in * fan_out for fan_in, fan_out in zip(WIDTHS, WIDTHS[1:]))
    return 2 * multiply_adds * (3 * TRAIN_IMAGES + VALIDATION_IMAGES)


def sgemm_rate(sizes: tuple[int, ...] = (1024, 2048, 4096), repeats: int = 5) -> float:
    """Return this machine's best float32 matrix-product rate in FLOP/s (numpy's BLAS, all cores)."""
    rng = np.random.default_rng(0)
    rates = []
    for size in sizes:
        a, b = rng.random((size, size), dtype=np.float32), rng.random((size, size), dtype=np.float32)
        rates.append(2 * size**3 / min(_timed(lambda a=a, b=b: a @ b) for _ in range(repeats)))
    return max(rates)


def copy_bandwidth(size_bytes: int, repeats: int = 7) -> float:
    """Return the best bytes/s (read + write) of copying an array of `size_bytes`, many times if small."""
    source = np.ones(size_bytes // 4, dtype=np.float32)
    target = np.empty_like(source)
    copies = max(1, 2**28 // size_bytes)  # about 256 MB of traffic per timing
    best = min(_timed(lambda: [np.copyto(target, source) for _ in range(copies)]) for _ in range(repeats))
    return 2 * size_bytes * copies / best


def _timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def floors() -> dict:
    """Measure the two floors of one model-epoch on this machine."""
    rate = sgemm_rate()
    parameters = parameter_count()
    working_set = 4 * 4 * parameters  # weights, gradients, m and v, float32
    cache_bandwidth, memory_bandwidth = copy_bandwidth(working_set), copy_bandwidth(2**28)
    steps = -(-TRAIN_IMAGES // BATCH)
    optimizer_bytes = ADAM_BYTES_PER_PARAMETER * parameters * steps
    return {
        "flops_per_epoch": flops_per_epoch(), "sgemm_flops_per_second": rate,
        "compute_floor": flops_per_epoch() / rate,
        "optimizer_bytes_per_epoch": optimizer_bytes, "working_set_bytes": working_set,
        "bandwidth_at_working_set": cache_bandwidth, "bandwidth_main_memory": memory_bandwidth,
        "optimizer_floor": optimizer_bytes / cache_bandwidth,
        "optimizer_floor_from_main_memory": optimizer_bytes / memory_bandwidth,
    }


def plain_keras(data: str, seeds: range, epochs: int, env: dict, count: int) -> list[dict]:
    """Run the plain script once per seed in `seeds`, each in its own process; return what each printed, with
    its process's wall time and peaks (`count`: the seeds in all, for the progress line)."""
    runs = []
    for seed in seeds:
        print(f"(a) plain Keras script, seed {seed + 1}/{count} ...", flush=True)
        done = measure([sys.executable, str(HERE / "plain_keras.py"), data, str(seed), str(epochs)], env)
        runs.append({**json.loads(done.stdout.strip().splitlines()[-1]), "wall": done.wall,
                     "peak_rss": done.peak_rss, "peak_pss": done.peak_pss})
    return runs


def plain_rows(runs: list[dict], epochs: int, before: int) -> tuple[dict, dict]:
    """Rows (a) from the plain script's runs (the first `before` timed before the regbench rows, the rest after):
    its fit alone, and whole; medians over seeds."""
    common = {"processes": 1, "model_epochs": len(runs) * epochs, "peak_rss": max(run["peak_rss"] for run in runs),
              "peak_pss": max(run["peak_pss"] for run in runs),
              "baseline_acc": [run["test_accuracy"] for run in runs],
              "fit_per_epoch": [run["fit_seconds"] / epochs for run in runs], "timed_before": before,
              "command": f"python benchmarks/plain_keras.py DATA SEED {epochs}  # seeds 0..{len(runs) - 1}"}
    fit = {**common, "row": "(a) plain Keras script: its fit calls (training + validation per epoch)",
           "s_per_model_epoch": statistics.median(common["fit_per_epoch"])}
    whole = {**common, "row": "(a) plain Keras script: the whole process (start-up, data, fit, test)",
             "s_per_model_epoch": statistics.median(run["wall"] / epochs for run in runs)}
    return fit, whole


def regbench_compare(label: str, extra: list[str], data: str, seeds: int, epochs: int, repeats: int,
                     env: dict) -> dict:
    """A regbench row: `compare --technique dropout` on an empty store, `repeats` times."""
    walls, peaks, pss_peaks, processes = [], [], [], 1
    for repeat in range(repeats):
        with tempfile.TemporaryDirectory() as scratch:
            command = ["regbench", "compare", "--technique", "dropout", "--seeds", str(seeds),
                       "--epochs", str(epochs), "--data", data, *extra]
            print(f"{label}: {shlex.join(command)} (repeat {repeat + 1}/{repeats}) ...", flush=True)
            done = measure([str(Path(sys.executable).with_name("regbench")), *command[1:], "--store",
                            f"{scratch}/store.sqlite", "--out", f"{scratch}/out"], env)
            runs = pd.read_csv(f"{scratch}/out/runs.csv")
        walls.append(done.wall)
        peaks.append(done.peak_rss)
        pss_peaks.append(done.peak_pss)
        processes = max(processes, done.processes)
    model_epochs = int(runs["epochs_run"].sum())
    return {"row": label, "processes": processes,  # with --jobs: the client, its workers and their helpers
            "model_epochs": model_epochs, "wall": statistics.median(walls),
            "s_per_model_epoch": statistics.median(walls) / model_epochs, "peak_rss": max(peaks),
            "peak_pss": max(pss_peaks),
            "baseline_acc": list(runs.loc[runs["technique"] == "none", "test_accuracy"]),
            "dropout_acc": list(runs.loc[runs["technique"] == "dropout", "test_accuracy"]),
            "command": shlex.join(command)}


def levers(data: str, env: dict) -> list[dict]:
    """Time each lever alone: the second epoch of the default model, training only."""
    rows = []
    for lever, label in [
        (["tf-fit", "2"], "TF Keras fit, steps_per_execution 100, verbose 0, 2 threads"),
        (["tf-fit", "1"], "TF Keras fit, steps_per_execution 100, verbose 0, 1 thread"),
        (["tf-epoch"], "TF fit of batches gathered from the training tensors, 1 thread (regbench's path)"),
        (["tf-run", "new"], "TF run of a structure already trained in the process: a model of its own, traced anew"),
        (["tf-run", "shared"], "TF run of a structure already trained in the process: its shared model (regbench's "
                               "path)"),
        (["jax-fit"], "JAX Keras fit, steps_per_execution 100, verbose 0 (one jitted step per batch)"),
        (["jax-fused"], "JAX whole epoch in one program, data on the device (regbench's path)"),
        (["jax-together", "5"], "JAX 5 runs in one program (jax.vmap), per model"),
        (["jax-together", "10"], "JAX 10 runs in one program (jax.vmap), per model"),
    ]:
        print(f"lever: {label} ...", flush=True)
        done = measure([sys.executable, str(HERE / "levers.py"), data, *lever], env)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append({"lever": label, "s_per_model_epoch": result["seconds_per_model_epoch"],
                     "first_epoch": result["first_epoch_seconds"], "peak_rss": done.peak_rss})
        print(f"  {rows[-1]['s_per_model_epoch']:.3f} s per model-epoch", flush=True)
    return rows


def spread(values: list[float]) -> tuple[float, float]:
    """Return mean and sample SD (0 for one value)."""
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def main_table(rows: list[dict], floor: dict, reference: dict) -> str:
    """Render the side-by-side table as Markdown."""
    a_mean, a_sd = spread(reference["baseline_acc"])
    lines = ["| setup | processes | model-epochs | s per model-epoch | speed-up over (a) | peak RSS | peak PSS | "
             "test acc, baseline (mean ± SD) | within seed spread of (a) | test acc, dropout |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        mean, sd = spread(row["baseline_acc"])
        matches = "(reference)" if row["row"].startswith("(a)") else (
            "yes" if abs(mean - a_mean) <= max(sd, a_sd) else "NO")
        dropout = f"{spread(row['dropout_acc'])[0] * 100:.2f}%" if "dropout_acc" in row else ""
        lines.append(f"| {row['row']} | {row['processes']} | {row['model_epochs']} | {row['s_per_model_epoch']:.3f} | "
                     f"{reference['s_per_model_epoch'] / row['s_per_model_epoch']:.2f}x | "
                     f"{row['peak_rss'] / 2**30:.2f} GiB ({row['peak_rss'] / reference['peak_rss']:.2f}x) | "
                     f"{row['peak_pss'] / 2**30:.2f} GiB ({row['peak_pss'] / reference['peak_pss']:.2f}x) | "
                     f"{mean * 100:.2f} ± {sd * 100:.2f}% | {matches} | {dropout} |")
    for key, label in (("compute_floor", "(d) compute floor: FLOPs per epoch / sgemm rate"),
                       ("optimizer_floor", "(d) optimizer floor: Adam bytes per epoch / bandwidth at its working set")):
        lines.append(f"| {label} | | | {floor[key]:.3f} | "
                     f"{reference['s_per_model_epoch'] / floor[key]:.2f}x | | | | | |")
    return "\n".join(lines)


def targets_table(rows: list[dict], floor: dict, reference: dict, seeds: int, epochs: int) -> tuple[str, bool]:
    """Render every regbench row against each target; return the table and whether some row of each backend meets
    all."""
    a_mean, a_sd = spread(reference["baseline_acc"])
    floor_per_model_epoch = max(floor["compute_floor"], floor["optimizer_floor"])
    lines = [f"| setup | speed-up over (a) (TF: 2x, JAX: 6x) | `compare --technique dropout --seeds {seeds}` wall "
             "vs the floor (4x) | peak PSS vs (a) (1.5x) | baseline accuracy within the seed spread of (a) | "
             "all met |", "| --- | --- | --- | --- | --- | --- |"]
    met_by_backend = {}
    for row in rows:
        if row["row"].startswith("(a)"):
            continue
        backend = "jax" if "jax" in row["row"] else "tensorflow"
        speed_up = reference["s_per_model_epoch"] / row["s_per_model_epoch"]
        to_floor = row["wall"] / (floor_per_model_epoch * row["model_epochs"])
        memory = row["peak_pss"] / reference["peak_pss"]
        mean, sd = spread(row["baseline_acc"])
        checks = [speed_up >= (6 if backend == "jax" else 2), to_floor <= 4 or backend != "jax", memory <= 1.5,
                  abs(mean - a_mean) <= max(sd, a_sd)]
        met_by_backend[backend] = met_by_backend.get(backend, False) or all(checks)
        marks = ["" if ok else " (NO)" for ok in checks]
        lines.append(f"| {row['row']} | {speed_up:.2f}x{marks[0]} | {row['wall']:.1f} s = {to_floor:.2f}x{marks[1]} | "
                     f"{memory:.2f}x{marks[2]} | {abs(mean - a_mean) * 100:.2f} pp apart, spread "
                     f"{max(sd, a_sd) * 100:.2f} pp{marks[3]} | {'yes' if all(checks) else 'no'} |")
    lines.append("")
    lines.append(f"The floor of {seeds * 2} runs of {epochs} epochs: "
                 f"{floor_per_model_epoch * seeds * 2 * epochs:.1f} s "
                 f"({floor_per_model_epoch:.3f} s per model-epoch, the larger of the two floors below). The 4x target "
                 "is set for the fastest backend (JAX); TensorFlow's figure is shown for comparison.")
    return "\n".join(lines), all(met_by_backend.values())


STARTUP = """
import json, time
from regbench.executor import DaskCluster
started = time.perf_counter()
cluster = DaskCluster(jobs=2)
client = cluster.client()
client.wait_for_workers(2)
ready = time.perf_counter() - started
client.submit(sum, [1, 2]).result()
first = time.perf_counter() - started
cluster.close()
print(json.dumps({"workers_ready": ready, "first_task": first, "closed": time.perf_counter() - started}))
"""


TRACED_AGAIN = ("regbench compare --backend jax, warm compilation cache, programs traced again (the program cache "
                "emptied)")
SHORT_TARGETS = {3: {"jax": 6.0, "tensorflow": 2.5}, 10: {"jax": 8.0, "tensorflow": 3.0}}  # x the plain script
STORED_UP_TO_DATE = "compare, every run stored (its directory up to date)"
STORED_NEW_DIRECTORY = "compare, every run stored, a new output directory (everything drawn)"
SHORT_COMMAND_TARGETS = {STORED_UP_TO_DATE: 2.0, STORED_NEW_DIRECTORY: 2.0, "regbench --help": 0.5,
                         "regbench list": 0.5}  # seconds


def short_commands(data: str, env: dict, epochs_list: tuple[int, ...] = (3, 10)) -> list[dict]:
    """The commands a user types while exploring, whole processes side by side: 2 runs (the baseline and dropout,
    seed 0) of `epochs` each, against the plain script's two processes (timed before and after the commands; the
    ratios are to the mean); JAX cold (an empty compilation cache)
    and warm (a second process on the cache the first filled, a new store), and warm with --jobs 2 (the two runs
    at once); then `compare` with every run stored, `--help` and `list`."""
    rows = []
    regbench = str(Path(sys.executable).with_name("regbench"))

    def plain_script(epochs: int, when: str) -> float:
        print(f"short: the plain script, 2 processes x {epochs} epochs ({when} the commands) ...", flush=True)
        return sum(measure([sys.executable, str(HERE / "plain_keras.py"), data, str(seed), str(epochs)], env).wall
                   for seed in (0, 1))

    for epochs in epochs_list:
        before = plain_script(epochs, "before")
        plain_row = {"epochs": epochs, "row": PLAIN_SHORT, "walls": [before]}
        rows.append(plain_row)
        with tempfile.TemporaryDirectory() as scratch:
            compare = [regbench, "compare", "--technique", "dropout", "--seed-list", "0", "--epochs", str(epochs),
                       "--data", data]
            for label, extra, cache, store in (
                    ("regbench compare, TensorFlow", [], "off", "tf"),
                    ("regbench compare --backend jax, cold (empty compilation cache)", ["--backend", "jax"],
                     f"{scratch}/jax", "cold"),
                    (TRACED_AGAIN, ["--backend", "jax"], f"{scratch}/jax", "traced"),
                    ("regbench compare --backend jax, warm (a second process, a new store)", ["--backend", "jax"],
                     f"{scratch}/jax", "warm"),
                    (LANES_WARM, ["--backend", "jax", "--jobs", "2"], f"{scratch}/jax", "lanes")):
                print(f"short: {label}, {epochs} epochs ...", flush=True)
                if label == TRACED_AGAIN:  # compiled programs kept, exported ones not: the lever alone
                    shutil.rmtree(f"{scratch}/jax/programs")
                done = measure([*compare, *extra, "--store", f"{scratch}/{store}.sqlite", "--out",
                                f"{scratch}/{store}"], {**env, "REGBENCH_JAX_CACHE": cache})
                rows.append({"epochs": epochs, "row": label, "wall": done.wall,
                             "command": shlex.join(["regbench", *compare[1:-2], *extra])})
            if epochs == epochs_list[0]:  # the fixed costs, measured once
                for label, out in ((STORED_UP_TO_DATE, "tf"), (STORED_NEW_DIRECTORY, "tf-new")):
                    stored = measure([*compare, "--store", f"{scratch}/tf.sqlite", "--out", f"{scratch}/{out}"], env)
                    rows.append({"row": label, "wall": stored.wall})
                for name, arguments in (("regbench --help", ["--help"]), ("regbench list", ["list"])):
                    rows.append({"row": name, "wall": statistics.median(measure([regbench, *arguments], env).wall
                                                                        for _ in range(3))})
        # The plain script's own speed drifts (38.4 s and 59.3 s for the same 3-epoch pair within an hour): timed
        # again after the commands, the ratios are to the mean of the two.
        plain_row["walls"].append(plain_script(epochs, "after"))
        plain_row["wall"] = statistics.mean(plain_row["walls"])
        for row in rows:
            if row.get("epochs") == epochs and row is not plain_row:
                row["ratio"] = plain_row["wall"] / row["wall"]
    return rows


WARM_TARGETS = {3: {"jax": 8.0, "tensorflow": 3.0}, 10: {"jax": 10.0, "tensorflow": 3.5}}  # x the plain script
WARM_CALLS = 3  # regbench.compare calls per process: the first pays start-up; the second and third are warm
WARM_SETUPS = (("tensorflow", 1), ("jax", 1), ("jax", 2))  # (backend, jobs): JAX's jobs=2 trains the two runs at
# once in threads of the process (TensorFlow's would start a Dask cluster per call: not a warm process)


def warm_process(data: str, env: dict, epochs_list: tuple[int, ...] = (3, 10)) -> list[dict]:
    """`regbench.compare` called three times in one process (benchmarks/warm.py), each 2 runs (the baseline and
    dropout, seed 0) of `epochs` into a new store, per backend, against the plain script's two processes (timed
    before and after; the ratios are to the mean)."""
    rows = []
    for epochs in epochs_list:
        plain = [_plain_pair(data, env, epochs, "before")]
        for backend, jobs in WARM_SETUPS:
            print(f"warm: regbench.compare x {WARM_CALLS} in one {backend} process, jobs={jobs}, {epochs} epochs ...",
                  flush=True)
            done = measure([sys.executable, str(HERE / "warm.py"), data, backend, str(jobs), str(epochs),
                            str(WARM_CALLS)], env)
            walls = json.loads(done.stdout.strip().splitlines()[-1])["walls"]
            rows += [{"epochs": epochs, "backend": backend, "jobs": jobs, "call": call, "wall": wall}
                     for call, wall in enumerate(walls, start=1)]
        plain.append(_plain_pair(data, env, epochs, "after"))
        rows.append({"epochs": epochs, "row": PLAIN_SHORT, "walls": plain, "wall": statistics.mean(plain)})
        for row in rows:
            if row.get("epochs") == epochs and "call" in row:
                row["ratio"] = statistics.mean(plain) / row["wall"]
    return rows


def _plain_pair(data: str, env: dict, epochs: int, when: str) -> float:
    """Time the plain script for seeds 0 and 1, one process each (`when`: before or after the measured rows)."""
    print(f"the plain script, 2 processes x {epochs} epochs ({when}) ...", flush=True)
    return sum(measure([sys.executable, str(HERE / "plain_keras.py"), data, str(seed), str(epochs)], env).wall
               for seed in (0, 1))


def warm_table(rows: list[dict]) -> str:
    """Render the warm process's calls: wall seconds, the ratio to the plain script, and the target met or not."""
    lines = ["| call of regbench.compare in one process | epochs | wall (s) | vs plain | target | met |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        if "call" not in row:
            lines.append(f"| {row['row']} (mean of {' s and '.join(f'{wall:.1f}' for wall in row['walls'])} s, "
                         f"before and after) | {row['epochs']} | {row['wall']:.1f} | 1.00x | | |")
            continue
        target = WARM_TARGETS[row["epochs"]][row["backend"]] if row["call"] > 1 else None
        met = "–" if target is None else ("yes" if row["ratio"] >= target else "NO")
        what = "first (start-up, data, compile)" if row["call"] == 1 else "warm"
        jobs = ", jobs=2" if row.get("jobs", 1) > 1 else ""
        lines.append(f"| {row['backend']}{jobs}, call {row['call']}: {what} | {row['epochs']} | {row['wall']:.1f} | "
                     f"{row['ratio']:.2f}x | {'–' if target is None else f'>= {target:g}x'} | {met} |")
    return "\n".join(lines)


def short_table(rows: list[dict]) -> str:
    """Render the short commands: wall seconds, the ratio to the plain script, and the target met or not."""
    lines = ["| command | epochs | wall (s) | vs plain | target | met |", "|---|---|---|---|---|---|"]
    for row in rows:
        backend = "jax" if "jax" in row["row"] else "tensorflow"
        if "ratio" in row:
            target = SHORT_TARGETS[row["epochs"]][backend] if "cold" not in row["row"] and row["row"] != TRACED_AGAIN \
                else None
            met = "–" if target is None else ("yes" if row["ratio"] >= target else "NO")
            lines.append(f"| {row['row']} | {row['epochs']} | {row['wall']:.1f} | {row['ratio']:.2f}x | "
                         f"{'–' if target is None else f'>= {target:g}x'} | {met} |")
        elif "epochs" in row:
            timed = f" (mean of {' s and '.join(f'{wall:.1f}' for wall in row['walls'])} s, before and after the " \
                    "commands)" if len(row.get("walls", [])) > 1 else ""
            lines.append(f"| {row['row']}{timed} | {row['epochs']} | {row['wall']:.1f} | 1.00x | | |")
        else:
            limit = SHORT_COMMAND_TARGETS[row["row"]]
            lines.append(f"| {row['row']} | | {row['wall']:.2f} | | <= {limit:g} s | "
                         f"{'yes' if row['wall'] <= limit else 'NO'} |")
    return "\n".join(lines)


def cluster_startup(env: dict, repeats: int = 3) -> dict:
    """Time regbench's local Dask cluster of 2 workers: until both are ready, until a first task returns, and
    until it is closed again (median of `repeats` fresh processes; imports included)."""
    times = [json.loads(measure([sys.executable, "-c", STARTUP], env).stdout.strip().splitlines()[-1])
             for _ in range(repeats)]
    return {key: statistics.median(time_[key] for time_ in times) for key in times[0]}


def jobs_table(rows: list[dict], startup: dict) -> str:
    """Render the --jobs 2 rows against what they ran on before, and the local cluster's start-up time."""
    lines = ["| setup | ran on before | s per model-epoch: before | now (this run) | now / before | peak RSS: before "
             "| now | peak PSS: now |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        before = REPLACED_JOBS_2.get(row["row"])
        if before:
            lines.append(f"| {row['row']} | {before['before']} | {before['s_per_model_epoch']:.3f} | "
                         f"{row['s_per_model_epoch']:.3f} | "
                         f"{row['s_per_model_epoch'] / before['s_per_model_epoch']:.2f}x"
                         f" | {before['peak_rss'] / 2**30:.2f} GiB | {row['peak_rss'] / 2**30:.2f} GiB | "
                         f"{row['peak_pss'] / 2**30:.2f} GiB |")
    lines += ["", "TensorFlow's `--jobs 2` is a local Dask cluster of two one-core worker processes; JAX's is two runs "
              "at once in threads of the one process (regbench.executor.InProcess). The figures before are those "
              "this benchmark measured on this machine on the dates shown (`--jobs 2` no longer runs on either, so "
              f"they cannot be run side by side). Local cluster start-up (`DaskCluster(jobs=2)`, median of 3 fresh "
              f"processes, imports included): both workers ready after {startup['workers_ready']:.2f} s, a first "
              f"task back after {startup['first_task']:.2f} s, closed again after {startup['closed']:.2f} s; "
              "TensorFlow's `--jobs 2` row above includes it once."]
    return "\n".join(lines)


def levers_table(rows: list[dict], reference: dict) -> str:
    lines = ["| lever (one process, second epoch, training only) | s per model-epoch | first epoch (compiles) "
             "| ratio to (a) | peak RSS |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {row['lever']} | {row['s_per_model_epoch']:.3f} | {row['first_epoch']:.2f} s | "
              f"{reference['s_per_model_epoch'] / row['s_per_model_epoch']:.1f}x | {row['peak_rss'] / 2**30:.2f} GiB |"
              for row in rows]
    return "\n".join(lines)


def bench_environment() -> dict:
    """Return the environment every measured process runs in: the backend its own flags choose, no TensorFlow
    chatter, and JAX's compilation cache off (the long rows compile as a machine's first process does; the short
    JAX rows set their own cache, cold and warm)."""
    env = {key: value for key, value in os.environ.items() if key != "KERAS_BACKEND"}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "3", "REGBENCH_JAX_CACHE": "off"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds per arm (and plain-script processes)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1, help="times each regbench command runs (median taken)")
    parser.add_argument("--data", default=os.environ.get("REGBENCH_DATA"), help="full MNIST (mnist.npz)")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    parser.add_argument("--no-levers", action="store_true", help="skip the one-lever-at-a-time table")
    parser.add_argument("--render", metavar="JSON", help="only rewrite --out from a run's saved figures")
    parser.add_argument("--short-only", action="store_true",
                        help="measure only the short commands, into the figures of --out's last run (RESULTS.json)")
    parser.add_argument("--warm-only", action="store_true",
                        help="measure only regbench.compare in a warm process, into the figures of --out's last run")
    parser.add_argument("--cnn-only", action="store_true",
                        help="measure only the cnn against a plain Keras convnet, into the figures of --out's last run")
    parser.add_argument("--cnn-before", metavar="GIT-REF", help="also measure the cnn rows on this commit's code")
    args = parser.parse_args()
    command = shlex.join(["python", "benchmarks/speed.py", *sys.argv[1:]])
    if args.cnn_only:
        if not args.data or not Path(args.data).is_file():
            parser.error("give the full MNIST file with --data PATH or $REGBENCH_DATA")
        figures = Path(args.out).with_suffix(".json")
        measured = json.loads(figures.read_text())
        measured["cnn"] = cnn_figures(command, args.data, args.cnn_before)
        figures.write_text(json.dumps(measured, indent=1) + "\n")
        Path(args.out).write_text(render(measured))
        print(cnn.table(measured["cnn"]["rows"]), cnn.targets(measured["cnn"]["rows"]), sep="\n\n")
        return
    if args.warm_only:
        if not args.data or not Path(args.data).is_file():
            parser.error("give the full MNIST file with --data PATH or $REGBENCH_DATA")
        figures = Path(args.out).with_suffix(".json")
        measured = json.loads(figures.read_text())
        measured["warm"] = {"command": command, "date": datetime.now(UTC).isoformat(timespec="seconds"),
                            "rows": warm_process(args.data, bench_environment())}
        figures.write_text(json.dumps(measured, indent=1) + "\n")
        Path(args.out).write_text(render(measured))
        print(warm_table(measured["warm"]["rows"]))
        return
    if args.short_only:
        if not args.data or not Path(args.data).is_file():
            parser.error("give the full MNIST file with --data PATH or $REGBENCH_DATA")
        env = bench_environment()
        figures = Path(args.out).with_suffix(".json")
        measured = json.loads(figures.read_text())
        measured["short"] = {"command": command,
                             "date": datetime.now(UTC).isoformat(timespec="seconds"),
                             "rows": short_commands(args.data, env)}
        figures.write_text(json.dumps(measured, indent=1) + "\n")
        text = render(measured)
        Path(args.out).write_text(text)
        print(short_table(measured["short"]["rows"]))
        return
    if args.render:
        measured = json.loads(Path(args.render).read_text())
        text = render(measured)
        Path(args.out).write_text(text)
        print(text)
        return
    if not args.data or not Path(args.data).is_file():
        parser.error("give the full MNIST file with --data PATH or $REGBENCH_DATA")
    started = time.perf_counter()
    env = bench_environment()
    # 1. Floors first, on a quiet machine; then every setup, one at a time.
    print("floors: sgemm rate and copy bandwidth ...", flush=True)
    floor = floors()
    # The plain script's own speed drifts: its first seeds are timed before the regbench rows, the rest after.
    before = (args.seeds + 1) // 2
    plain = plain_keras(args.data, range(before), args.epochs, env, args.seeds)
    rows = []
    two_cores = len(os.sched_getaffinity(0)) >= 2
    for label, extra in [("(b) regbench compare, TensorFlow (default backend)", []),
                         ("(b) regbench compare, TensorFlow, --jobs 2", ["--jobs", "2"]),
                         ("(c) regbench compare --backend jax", ["--backend", "jax"]),
                         ("(c) regbench compare --backend jax --jobs 2", ["--backend", "jax", "--jobs", "2"])]:
        if "--jobs" in extra and not two_cores:
            continue
        rows.append(regbench_compare(label, extra, args.data, args.seeds, args.epochs, args.repeats, env))
        print(f"  {rows[-1]['wall']:.1f} s, {rows[-1]['s_per_model_epoch']:.3f} s per model-epoch, "
              f"peak {rows[-1]['peak_rss'] / 2**30:.2f} GiB", flush=True)
    plain += plain_keras(args.data, range(before, args.seeds), args.epochs, env, args.seeds)
    reference, reference_whole = plain_rows(plain, args.epochs, before)
    print(f"(a) fit {reference['s_per_model_epoch']:.3f}, whole process {reference_whole['s_per_model_epoch']:.3f} "
          f"s per model-epoch, peak {reference['peak_rss'] / 2**30:.2f} GiB", flush=True)
    rows = [reference, reference_whole, *rows]
    print("local Dask cluster start-up ...", flush=True)
    startup = cluster_startup(env)
    lever_rows = [] if args.no_levers else levers(args.data, env)
    short = {"command": command, "date": datetime.now(UTC).isoformat(timespec="seconds"),
             "rows": short_commands(args.data, env)}
    warm = {"command": command, "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "rows": warm_process(args.data, env)}
    convnet = cnn_figures(command, args.data, args.cnn_before)
    # 2. Keep every figure (JSON), then write the tables with the machine and the command.
    measured = {"command": command,
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "seconds": round(time.perf_counter() - started), "seeds": args.seeds, "epochs": args.epochs,
                "repeats": args.repeats, "machine": machine_description(), "floors": floor, "rows": rows,
                "cluster_startup": startup, "levers": lever_rows, "short": short, "warm": warm, "cnn": convnet}
    Path(args.out).with_suffix(".json").write_text(json.dumps(measured, indent=1) + "\n")
    text = render(measured)
    Path(args.out).write_text(text)
    print(text)
    print(f"wrote {args.out} and its figures as JSON beside it")


def cnn_figures(command: str, data: str, before: str | None) -> dict:
    """Measure the cnn on both backends against the plain Keras convnet (benchmarks/cnn.py), full MNIST."""
    print("the cnn against a plain Keras convnet, both backends ...", flush=True)
    return {"command": command, "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "settings": {"train_size": TRAIN_IMAGES, "epochs": 2, "batch_size": BATCH},
            "rows": cnn.measure_rows(data, TRAIN_IMAGES, 2, BATCH, before)}


def plain_timing(reference: dict) -> str:
    """Say when row (a)'s seeds were timed (runs before that split them around the regbench rows: nothing)."""
    if "timed_before" not in reference:
        return ""
    before, fits = reference["timed_before"], [f"{seconds:.3f}" for seconds in reference["fit_per_epoch"]]
    return (f"; seeds 0..{before - 1} timed before the regbench rows and the rest after them, as its own speed "
            f"drifts: its fit calls took {', '.join(fits[:before])} s per epoch before and "
            f"{', '.join(fits[before:])} s after")


def short_plain_timing(rows: list[dict]) -> str:
    """Say that the short commands' plain script was timed before and after them (runs before timed it once)."""
    if not any(len(row.get("walls", [])) > 1 for row in rows):
        return ""
    return ("; timed before and after the commands, whose ratios are to the mean of the two, as the plain script's "
            "own speed drifts")


def render(measured: dict) -> str:
    """Return RESULTS.md for one run's figures."""
    rows, floor, seeds, epochs = measured["rows"], measured["floors"], measured["seeds"], measured["epochs"]
    reference = rows[0]
    targets, all_met = targets_table(rows, floor, reference, seeds, epochs)
    sections = [
        "# Speed: regbench against the plain Keras script",
        f"Measured by `{measured['command']}` (= `make bench`) on {measured['date']}, in {measured['seconds']} s.",
        "## Machine", "\n".join(f"- {key}: {value}" for key, value in measured["machine"].items()),
        "## Protocol",
        f"Full MNIST: {TRAIN_IMAGES:,} training images, {VALIDATION_IMAGES:,} validation images evaluated every "
        f"epoch, batch {BATCH}, Adam (lr 1e-3), the 784-128-64-10 MLP, {epochs} epochs, seeds 0..{seeds - 1}. "
        "For every regbench row, seconds per model-epoch are the whole command's wall time divided by the "
        "model-epochs it trained: start-up, data loading, evaluation, statistics, figures and reports "
        f"included. (a) runs once per seed, each in its own process (median over seeds{plain_timing(reference)}"
        "); the ratios are to "
        "its fit calls alone, the stricter yardstick, and its whole-process figure is shown below it. Every "
        f"regbench row is one `compare --technique dropout` of {2 * seeds} runs on an empty store (median "
        f"of {measured['repeats']} repeat(s)). Peak RSS and peak PSS are the resident and the proportional "
        "memory (psutil's memory_full_info) summed over the whole process tree (client and workers) at its "
        "largest, sampled every 50 ms. Baseline test accuracy is compared: (a) "
        "is the same model, with Keras' own initialization and shuffling, float64 pixels as a course divides "
        "them (`x / 255.0`), and the last 10k training images as validation. Every figure is also in "
        "RESULTS.json beside this file.",
        "## Side by side", main_table(rows, floor, reference),
        "## Targets", targets,
        "Every target is met by at least one setup of each backend." if all_met
        else "For at least one backend no setup meets every target (marked NO).",
        "Memory targets are judged on PSS, which splits each shared page among the processes that map it; "
        "summed RSS counts the images that `--jobs` workers share (one read-only memory-mapped float32 copy "
        "of each split) once per worker.",
        "## `--jobs 2` against what it ran on before", jobs_table(rows, measured["cluster_startup"]),
        "## Floors",
        f"- compute: {floor['flops_per_epoch'] / 1e9:.1f} GFLOP per epoch (training forward + backward on "
        f"{TRAIN_IMAGES:,} images, one validation pass) / {floor['sgemm_flops_per_second'] / 1e9:.0f} GFLOP/s "
        f"(numpy float32 matrix products, the best rate measured) = {floor['compute_floor']:.3f} s",
        f"- optimizer: {floor['optimizer_bytes_per_epoch'] / 1e9:.2f} GB per epoch (Adam touches 28 bytes per "
        f"parameter per step, {parameter_count():,} parameters, {-(-TRAIN_IMAGES // BATCH):,} steps) / "
        f"{floor['bandwidth_at_working_set'] / 1e9:.1f} GB/s (copy bandwidth at the optimizer's "
        f"{floor['working_set_bytes'] / 2**20:.1f} MiB working set, which stays in cache) = "
        f"{floor['optimizer_floor']:.3f} s; from main memory ({floor['bandwidth_main_memory'] / 1e9:.1f} GB/s) "
        f"it would be {floor['optimizer_floor_from_main_memory']:.3f} s",
        "- the floor of a run is the larger of the two, per model-epoch",
    ]
    if measured["levers"]:
        sections += ["## Levers, one at a time", levers_table(measured["levers"], reference)]
    if measured.get("short"):
        short = measured["short"]
        sections += ["## Short commands (whole processes)",
                     f"Measured by `{short['command']}` on {short['date']}: the commands a user types while "
                     "exploring, where the fixed costs dominate. Two runs (the baseline and dropout, seed 0) against "
                     f"the plain script run twice (two processes{short_plain_timing(short['rows'])}); JAX cold on "
                     "an empty compilation cache "
                     "(`REGBENCH_JAX_CACHE` set to a new directory), warm in a later process on the cache the "
                     "first filled (a new store, so everything trains again: XLA's compiled programs and the "
                     "exported, traced ones loaded), and between them, to measure the exported programs alone, a "
                     "warm process after their folder was emptied (compiled programs loaded, Keras' steps traced "
                     "again and exported anew), and warm with `--jobs 2` (the two runs at once, in threads of the "
                     "one process); TensorFlow with the cache off (it "
                     "has none). `compare, every run stored` is the TensorFlow command again on its store, with "
                     "the output directory it wrote (nothing changed: the files are kept) and with a new one; "
                     "`--help` and `list` are the median of three.",
                     short_table(short["rows"])]
    if measured.get("warm"):
        warm = measured["warm"]
        sections += ["## A warm process (a notebook, a script's loop)",
                     f"Measured by `{warm['command']}` on {warm['date']}: `regbench.compare` called {WARM_CALLS} "
                     "times in one process (benchmarks/warm.py), each comparing dropout with the baseline on seed 0 "
                     "(2 runs) into a new store, so that both runs train every time, and reading the summary "
                     "(nothing written: figures are drawn when asked for). The first call pays the imports, the "
                     "backend's start, reading the data and compiling; later calls reuse them. The plain script "
                     "runs twice (two processes), timed before and after the calls; the ratios are to the mean.",
                     warm_table(warm["rows"])]
    if measured.get("cnn"):
        convnet = measured["cnn"]
        sections += ["## The cnn against a plain Keras convnet",
                     f"Measured by `{convnet['command']}` on {convnet['date']} (benchmarks/cnn.py). "
                     + cnn.PROTOCOL.format(**convnet["settings"]),
                     cnn.table(convnet["rows"]), "Targets (issue 39):", cnn.targets(convnet["rows"])]
    return "\n\n".join(sections) + "\n"


if __name__ == "__main__":
    main()
