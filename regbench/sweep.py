"""Train a to-do list of runs with an executor (regbench.executor: this process, one run at a time or several in
threads, or a Dask cluster), with progress and leases: the state every executor's loop shares is one `Sweep`.

Every run is claimed in the store (a lease, renewed while it trains) before it trains, and this
process stores it the moment it ends, so several regbench processes, on one host or many, share one
to-do list safely.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from regbench.config import RunConfig
from regbench.data import Splits
from regbench.errors import Interrupted
from regbench.progress import Echo
from regbench.store import LEASE_SECONDS, RunStore

if TYPE_CHECKING:  # annotations only: the executors' module loads Dask's pieces when it trains there
    from regbench.executor import Executor

CLAIM_POLL_SECONDS = 2.0  # how often to look again for runs another process is training


class _Progress:
    """Show where the sweep stands after every epoch, with an estimate of what remains: a progress bar where one is
    seen (progress.Echo), else a line per epoch; name the executor in what is stored of each run."""

    def __init__(self, todo: list[RunConfig], echo: Callable[[str], None], executor: str):
        self.todo, self.echo, self.executor = todo, echo, executor
        self.started = time.perf_counter()
        self.epochs_done: dict[int, int] = {}  # run index -> epochs finished
        self.ended: set[int] = set()  # run indices stored (or left to another process)
        self.bar = echo.bar(sum(c.stop_epoch or c.epochs for c in todo), f"{len(todo)} runs") \
            if isinstance(echo, Echo) else None

    def epoch_done(self, index: int, row: dict) -> None:
        """Show run `index`'s epoch and the time left, estimated from the throughput so far."""
        done = row["epoch"] - self.epochs_done.get(index, 0)
        self.epochs_done[index] = row["epoch"]
        config = self.todo[index]
        measured = (f"train ce {row['train_crossentropy']:.4f} acc {row['train_accuracy']:.4f} | val ce "
                    f"{row['val_crossentropy']:.4f} acc {row['val_accuracy']:.4f}")
        where = f"[run {index + 1}/{len(self.todo)}] {describe_run(config)} epoch {row['epoch']}/" \
                f"{config.stop_epoch or config.epochs}"
        if self.bar is not None:
            self.bar.set_postfix_str(f"{where}: {measured}", refresh=False)
            self.bar.update(done)
            return
        remaining_epochs = sum((c.stop_epoch or c.epochs) - self.epochs_done.get(i, 0)
                               for i, c in enumerate(self.todo) if i not in self.ended)
        per_epoch = (time.perf_counter() - self.started) / sum(self.epochs_done.values())
        self.echo(f"{where}: {measured} | {row['seconds']:.1f}s | "
                  f"at most ~{format_duration(remaining_epochs * per_epoch)} left")

    def run_ended(self, index: int) -> None:
        """Note that run `index` needs no more epochs (stored, stopped early, or done elsewhere)."""
        self.ended.add(index)
        if self.bar is not None:  # epochs it will not train (stopped early, or trained elsewhere) count as done
            config = self.todo[index]
            self.bar.update((config.stop_epoch or config.epochs) - self.epochs_done.get(index, 0))
            self.epochs_done[index] = config.stop_epoch or config.epochs

    def close(self) -> None:
        """Close the progress bar, if one is shown."""
        if isinstance(self.echo, Echo):
            self.echo.close()


def describe_run(config: RunConfig) -> str:
    """Name a run in a progress line: technique, parameters, variant, seed, size and model."""
    params = "".join(f" {name}={value:g}" for name, value in config.technique_params)
    variant = f" [{config.variant}]" if config.variant else ""
    widths = "-".join(map(str, config.hidden))
    partial = f" [first {config.stop_epoch} of {config.epochs} epochs]" if config.stop_epoch else ""
    return (f"{config.technique}{params}{variant}{partial} seed {config.seed} ({config.train_size:,} images, "
            f"batch {config.batch_size}, {config.architecture} {widths})")


def format_duration(seconds: float) -> str:
    """Format seconds as e.g. '1h02m', '3m05s' or '12s'."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def train_todo(todo: list[RunConfig], splits: Splits, store: RunStore, executor: Executor,
               echo: Callable[[str], None], keep_weights: bool = False) -> int:
    """Train and store the runs of `todo` (each on its split from `splits`) that no other process is training;
    return how many this process stored.

    Runs another process holds are waited for; Ctrl-C keeps every stored run and says how to resume.
    `keep_weights` also keeps each trained model's weights.
    """
    if not todo:
        return 0
    progress = _Progress(todo, echo, executor.name)
    try:
        with _CtrlC() as ctrl_c, _Leases(store) as leases:
            return executor.train(Sweep(todo, splits, store, progress, keep_weights, ctrl_c, leases))
    except KeyboardInterrupt:  # wherever it lands, between runs too
        progress.close()
        echo(f"interrupted: {_stored(store, todo)} (the runs in progress are lost); rerun the same command to resume")
        raise Interrupted from None
    finally:
        progress.close()


def _stored(store: RunStore, todo: list[RunConfig]) -> str:
    """Say how many runs of `todo` are stored and how many are left."""
    done = len(store.finished([config.run_id for config in todo]))
    return f"{done} of {len(todo)} runs stored, {len(todo) - done} left"


class _CtrlC:
    """Remember a Ctrl-C as well as raise it, so that one swallowed where Python cannot raise (in a finalizer or a
    callback from C, where it is printed as ignored) still stops the sweep before its next run."""

    def __init__(self):
        self.pressed = False
        self.previous = None

    def __enter__(self):
        if (threading.current_thread() is threading.main_thread()
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


class _Leases:
    """Renew this process's leases on the runs it has training, from a background thread, until they end."""

    def __init__(self, store: RunStore):
        self.store, self.lock = store, threading.Lock()
        self.held: set[str] = set()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._renew, name="regbench-leases", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def _renew(self) -> None:
        while not self.stopped.wait(LEASE_SECONDS / 4):
            with self.lock:
                held = list(self.held)
            try:
                self.store.renew(held)
            except sqlite3.Error:  # the store is busy or its disk full: the next round tries again
                pass

    def hold(self, run_id: str) -> None:
        with self.lock:
            self.held.add(run_id)

    def drop(self, run_id: str) -> None:
        with self.lock:
            self.held.discard(run_id)

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join()
        for run_id in self.held:  # runs that did not end: free for anyone at once
            self.store.release(run_id)
        return False


@dataclass
class Sweep:
    """What every executor's training loop shares: the runs to train, their data, the store, the progress shown,
    whether to keep weights, Ctrl-C and the leases held. An executor claims each run, trains it where it trains
    runs, and hands the result back here to be stored."""

    todo: list[RunConfig]
    splits: Splits
    store: RunStore
    progress: _Progress
    keep_weights: bool
    ctrl_c: _CtrlC
    leases: _Leases

    def claim(self, index: int, pending: dict[int, RunConfig]) -> bool:
        """Claim run `index` for this process; drop it from `pending` if it is ours now or stored by another."""
        config = self.todo[index]
        if self.store.claim(config.run_id):
            self.leases.hold(config.run_id)
            del pending[index]
            return True
        if self.store.finished([config.run_id]):
            del pending[index]  # another process finished it
            self.progress.run_ended(index)
        return False

    def store_result(self, index: int, record: dict, epochs: list[dict], weights: bytes | None) -> None:
        """Store a finished run (and its kept weights), with the executor that trained it; say so if it diverged."""
        config = self.todo[index]
        if weights is not None:
            self.store.save_weights(config.run_id, weights)
        self.store.save(config, {**record, "executor": self.progress.executor}, epochs)
        self.leases.drop(config.run_id)
        self.progress.run_ended(index)
        if record["status"] == "diverged":
            self.progress.echo(f"run {config.run_id} ({config.technique} seed {config.seed}) diverged at epoch "
                               f"{record['diverged_epoch']}: stored, left out of the statistics")

    def store_failure(self, index: int, message: str) -> None:
        """Record that run `index` failed where it trained (it trains again on the next invocation)."""
        config = self.todo[index]
        self.store.record_failure(config.run_id, message)
        self.leases.drop(config.run_id)
        self.progress.run_ended(index)
        self.progress.echo(f"run {config.run_id} ({config.technique} seed {config.seed}) failed on the workers: "
                           f"{message}; the sweep goes on")

    def wait_for_others(self, pending: dict[int, RunConfig]) -> None:
        """Say that the runs left are held by another process, and wait a moment before looking again."""
        self.progress.echo(f"waiting for {len(pending)} run(s) that another regbench process is training")
        time.sleep(CLAIM_POLL_SECONDS)

    def stored(self) -> str:
        """Say how many runs are stored and how many are left."""
        return _stored(self.store, self.todo)
