"""Train a to-do list of runs, in this process or in worker processes, with progress and claims.

Every run is claimed in the store before it trains and stored the moment it ends, so several
processes (other invocations, or this module's workers) share one to-do list safely.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import traceback
from typing import Callable

from regbench.backend import select_backend
from regbench.config import RunConfig
from regbench.data import Split, load_mnist, split_mnist
from regbench.store import RunStore

CLAIM_POLL_SECONDS = 2.0  # how often to look again for runs another process is training


class _Progress:
    """Echo one line per epoch with where the sweep stands and an estimate of what remains."""

    def __init__(self, todo: list[RunConfig], echo: Callable[[str], None]):
        self.todo, self.echo = todo, echo
        self.started = time.perf_counter()
        self.epochs_done = {}  # run index -> epochs finished
        self.ended = set()  # run indices stored (or left to another process)

    def epoch_done(self, index: int, row: dict) -> None:
        """Echo run `index`'s epoch and the time left, estimated from the throughput so far."""
        self.epochs_done[index] = row["epoch"]
        config = self.todo[index]
        remaining_epochs = sum(c.epochs - self.epochs_done.get(i, 0)
                               for i, c in enumerate(self.todo) if i not in self.ended)
        per_epoch = (time.perf_counter() - self.started) / sum(self.epochs_done.values())
        self.echo(
            f"[run {index + 1}/{len(self.todo)}] {describe_run(config)} "
            f"epoch {row['epoch']}/{config.epochs}: train ce {row['train_crossentropy']:.4f} "
            f"acc {row['train_accuracy']:.4f} | val ce {row['val_crossentropy']:.4f} "
            f"acc {row['val_accuracy']:.4f} | {row['seconds']:.1f}s | "
            f"at most ~{format_duration(remaining_epochs * per_epoch)} left"
        )

    def run_ended(self, index: int) -> None:
        """Note that run `index` needs no more epochs (stored, stopped early, or done elsewhere)."""
        self.ended.add(index)


class _ForwardedProgress:
    """A worker's progress: every event goes to the parent process, which echoes it."""

    def __init__(self, events):
        self.events = events

    def epoch_done(self, index: int, row: dict) -> None:
        self.events.put(("epoch", index, row))

    def run_ended(self, index: int) -> None:
        self.events.put(("ended", index))

    def echo(self, line: str) -> None:
        self.events.put(("line", line))


def describe_run(config: RunConfig) -> str:
    """Name a run in a progress line: technique, parameters, variant, seed, size and model."""
    params = "".join(f" {name}={value:g}" for name, value in config.technique_params)
    variant = f" [{config.variant}]" if config.variant else ""
    widths = "-".join(map(str, config.hidden))
    return (f"{config.technique}{params}{variant} seed {config.seed} ({config.train_size:,} images, "
            f"batch {config.batch_size}, {config.architecture} {widths})")


def format_duration(seconds: float) -> str:
    """Format seconds as e.g. '1h02m', '3m05s' or '12s'."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def train_todo(todo: list[RunConfig], split_for: Callable[[RunConfig], Split], store: RunStore, echo, jobs: int,
           data: str | None, keep_weights: bool = False) -> int:
    """Train and store `todo`, in this process or in `jobs` worker processes (those read the file `data`); return how many.

    With `jobs` > 1 this process never trains, even a single run: it may not run the runs' backend.
    """
    if jobs > 1 and todo:
        trained = _train_in_workers(todo, jobs, data, store, echo, keep_weights, wait_for_others=False)
        finished = store.finished([c.run_id for c in todo])
        left = [c for c in todo if c.run_id not in finished]
        if left:  # held by another process (or left by a worker that died): one worker waits for them
            trained += _train_in_workers(left, 1, data, store, echo, keep_weights, wait_for_others=True)
        return trained
    return _train_missing(todo, split_for, store, _Progress(todo, echo), keep_weights)


class _CtrlC:
    """Remember a Ctrl-C as well as raise it, so that one swallowed where Python cannot raise (in a finalizer or a
    callback from C, where it is printed as ignored) still stops the sweep before its next run."""

    def __init__(self):
        self.pressed = False
        self.previous = None

    def __enter__(self):
        if (threading.current_thread() is threading.main_thread()  # not where Ctrl-C is ignored (workers)
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self.previous = signal.signal(signal.SIGINT, self._press)
        return self

    def _press(self, signum, frame):
        self.pressed = True
        raise KeyboardInterrupt

    def check(self) -> None:
        """Raise KeyboardInterrupt if Ctrl-C was pressed (even if its first raise was lost)."""
        if self.pressed:
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


def _train_missing(todo: list[RunConfig], split_for: Callable[[RunConfig], Split], store: RunStore, progress,
                   keep_weights: bool = False, wait_for_others: bool = True) -> int:
    """Train and store each run of `todo` that no other process is training; return how many.

    Runs claimed by another live process are waited for (unless `wait_for_others` is off: then
    they are left to it); Ctrl-C keeps every finished run and says how to resume.
    `keep_weights` also keeps each trained model's weights.
    """
    try:
        with _CtrlC() as ctrl_c:
            return _train_pending(dict(enumerate(todo)), split_for, store, progress, keep_weights, wait_for_others,
                                  ctrl_c)
    except KeyboardInterrupt:  # wherever it lands, between runs too
        done = len(store.finished([config.run_id for config in todo]))
        progress.echo(f"interrupted: {done} of {len(todo)} runs stored, {len(todo) - done} left "
             "(the run in progress is lost); rerun the same command to resume")
        raise


def _train_pending(pending: dict, split_for, store: RunStore, progress, keep_weights: bool, wait_for_others: bool,
                   ctrl_c: _CtrlC) -> int:
    """Train the runs of `pending` (index -> config) one by one, as _train_missing says; return how many."""
    from regbench.train import train_run  # here, not at the top: a --jobs parent never loads Keras

    echo = progress.echo
    trained = 0
    while pending:
        started = trained
        for index, config in list(pending.items()):
            ctrl_c.check()
            if not store.claim(config.run_id):
                if store.finished([config.run_id]):
                    del pending[index]  # another process finished it
                    progress.run_ended(index)
                continue
            try:
                result = train_run(config, split_for(config),
                                   on_epoch=lambda row: progress.epoch_done(index, row))
                if keep_weights:
                    store.save_weights(config.run_id, result.model)
                store.save(config, result.record, result.epochs)
            except BaseException:
                store.release(config.run_id)
                raise
            del pending[index]
            progress.run_ended(index)
            trained += 1
            if result.record["status"] != "ok":
                echo(f"run {config.run_id} ({config.technique} seed {config.seed}) diverged at epoch "
                     f"{result.record['diverged_epoch']}: stored, left out of the statistics")
        if pending and trained == started:
            if not wait_for_others:
                break
            echo(f"waiting for {len(pending)} run(s) that another regbench process is training")
            time.sleep(CLAIM_POLL_SECONDS)
    return trained


def _train_in_workers(todo: list[RunConfig], jobs: int, data: str | None, store: RunStore,
                      echo: Callable[[str], None], keep_weights: bool, wait_for_others: bool) -> int:
    """Train `todo` in `jobs` worker processes, one CPU core and one thread each; return how many.

    Workers share the runs through the store's claims and report every epoch here; this process
    never trains (it may not have the runs' backend). Ctrl-C stops them; each finished run is
    already stored, and the runs in progress are lost.
    """
    # 1. Start the workers: fresh processes, so each starts its backend pinned to its own core.
    jobs = min(jobs, len(todo))
    context = multiprocessing.get_context("spawn")
    events = context.Queue()
    workers = [context.Process(target=_worker_main, daemon=True,
                               args=(core, data, store.path, todo, keep_weights, wait_for_others, events))
               for core in _worker_cores(jobs)]
    for worker in workers:
        worker.start()
    echo(f"training in {jobs} worker processes, one CPU core each")
    # 2. Echo their progress until all have stopped; a worker's error stops the sweep.
    progress, trained = _Progress(todo, echo), 0
    try:
        while any(worker.is_alive() for worker in workers) or not events.empty():
            try:
                kind, *payload = events.get(timeout=0.5)
            except queue.Empty:
                continue
            if kind == "epoch":
                progress.epoch_done(*payload)
            elif kind == "ended":
                progress.run_ended(*payload)
            elif kind == "line":
                echo(payload[0])
            elif kind == "trained":
                trained += payload[0]
            elif kind == "error":
                raise RuntimeError(f"a worker process failed:\n{payload[0]}")
    except BaseException:
        for worker in workers:
            worker.terminate()
        if sys.exc_info()[0] is KeyboardInterrupt:
            stored = len(store.finished([c.run_id for c in todo]))
            echo(f"interrupted: {stored} of {len(todo)} runs stored, {len(todo) - stored} left "
                 "(runs in progress are lost); rerun the same command to resume")
        raise
    return trained


def _worker_cores(jobs: int) -> list[int]:
    """Return the CPU core for each of `jobs` workers, spread over the cores this process may use."""
    cores = sorted(os.sched_getaffinity(0))
    return [cores[index % len(cores)] for index in range(jobs)]


def _worker_main(core: int, data: str | None, store_path, todo: list[RunConfig], keep_weights: bool,
                 wait_for_others: bool, events) -> None:
    """Train runs of `todo` that no one else has claimed, on one core and one thread; report to `events`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the workers
    os.sched_setaffinity(0, {core})  # before the backend starts, so it sizes its thread pools to one core
    try:
        select_backend(todo[0].backend, todo[0].device)
        mnist, splits = load_mnist(data), {}  # read once; a study's training sizes split it in turn

        def split_for(config: RunConfig) -> Split:
            key = (config.train_size, config.data_draw)
            if key not in splits:
                splits[key] = split_mnist(mnist, *key)
            return splits[key]

        progress = _ForwardedProgress(events)
        trained = _train_missing(todo, split_for, RunStore(store_path), progress, keep_weights, wait_for_others)
        events.put(("trained", trained))
    except BaseException:
        events.put(("error", traceback.format_exc()))
        raise SystemExit(1)
