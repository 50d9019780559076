"""Train a to-do list of runs with an executor (this process, one run at a time or several in threads, or a Dask
cluster), with progress and leases.

Every run is claimed in the store (a lease, renewed while it trains) before it trains, and this
process stores it the moment it ends, so several regbench processes, on one host or many, share one
to-do list safely.
"""

from __future__ import annotations

import importlib
import queue
import signal
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable
from concurrent import futures

from regbench.backend import select_backend
from regbench.config import RunConfig
from regbench.data import Splits
from regbench.errors import Interrupted, SweepError, UsageError
from regbench.executor import DaskCluster, InProcess
from regbench.progress import Echo
from regbench.store import LEASE_SECONDS, RunStore

CLAIM_POLL_SECONDS = 2.0  # how often to look again for runs another process is training
RESULT_POLL_SECONDS = 0.5  # how often to echo the workers' progress while their runs train


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


def train_todo(todo: list[RunConfig], splits: Splits, store: RunStore, executor: InProcess | DaskCluster,
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
            if isinstance(executor, DaskCluster):
                return _train_on_cluster(todo, splits, store, executor, progress, keep_weights, ctrl_c, leases)
            if executor.lanes > 1:
                return _train_in_lanes(todo, splits, store, progress, keep_weights, ctrl_c, leases, executor.lanes)
            return _train_in_process(todo, splits, store, progress, keep_weights, ctrl_c, leases)
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
        self.store, self.held, self.lock = store, set(), threading.Lock()
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


def _claim(index: int, config: RunConfig, store: RunStore, pending: dict, progress: _Progress, leases: _Leases) -> bool:
    """Claim run `config` for this process; drop it from `pending` if it is ours now or stored by another."""
    if store.claim(config.run_id):
        leases.hold(config.run_id)
        del pending[index]
        return True
    if store.finished([config.run_id]):
        del pending[index]  # another process finished it
        progress.run_ended(index)
    return False


def _store_result(index: int, config: RunConfig, record: dict, epochs: list[dict], weights: bytes | None,
                  store: RunStore, progress: _Progress, leases: _Leases) -> None:
    """Store a finished run (and its kept weights), with the executor that trained it, and say so if it diverged."""
    if weights is not None:
        store.save_weights(config.run_id, weights)
    store.save(config, {**record, "executor": progress.executor}, epochs)
    leases.drop(config.run_id)
    progress.run_ended(index)
    if record["status"] == "diverged":
        progress.echo(f"run {config.run_id} ({config.technique} seed {config.seed}) diverged at epoch "
                      f"{record['diverged_epoch']}: stored, left out of the statistics")


def _wait_for_others(pending: dict, progress: _Progress) -> None:
    """Say that the runs left are held by another process, and wait a moment before looking again."""
    progress.echo(f"waiting for {len(pending)} run(s) that another regbench process is training")
    time.sleep(CLAIM_POLL_SECONDS)


def _start_backend(todo: list[RunConfig], splits: Splits) -> None:
    """Start the runs' backend and Keras in this process (compare starts them here, as a first run trains), making
    the first run's split meanwhile (new memory for the images as floats: about 0.5 s)."""
    with futures.ThreadPoolExecutor(max_workers=1) as helper:
        first_split = helper.submit(splits.get, *todo[0].split_key)
        select_backend(todo[0].backend, todo[0].device)
        importlib.import_module("regbench.train")  # Keras: not at the top, as a cluster's client never loads it
        first_split.result()


def _train_in_process(todo, splits, store, progress, keep_weights, ctrl_c, leases) -> int:
    """Train the runs of `todo` here, one by one, as train_todo says; return how many."""
    _start_backend(todo, splits)
    from regbench.train import train_run, weights_bytes

    pending, trained = dict(enumerate(todo)), 0
    while pending:
        for index, config in list(pending.items()):
            ctrl_c.check()
            if not _claim(index, config, store, pending, progress, leases):
                continue
            result = train_run(config, splits.get(*config.split_key),
                               on_epoch=lambda row, index=index: progress.epoch_done(index, row))
            _store_result(index, config, result.record, result.epochs,
                          weights_bytes(result.model) if keep_weights else None, store, progress, leases)
            trained += 1
        if pending:
            _wait_for_others(pending, progress)
    return trained


class _Stopped(Exception):
    """Raised in a lane at the end of an epoch once the sweep is stopping (Ctrl-C, or another lane's error)."""


def _train_in_lanes(todo, splits, store, progress, keep_weights, ctrl_c, leases, lanes: int) -> int:
    """Train the runs of `todo` here, `lanes` at once, each in a thread of its own, as train_todo says; return how
    many. This thread claims, echoes and stores; a lane's error stops the others at their next epoch and is
    raised here."""
    _start_backend(todo, splits)
    from regbench.train import train_run, weights_bytes

    epochs, stopping = queue.SimpleQueue(), threading.Event()

    def train(index: int, config: RunConfig, split) -> tuple:
        def on_epoch(row: dict) -> None:
            epochs.put((index, row))
            if stopping.is_set():
                raise _Stopped

        result = train_run(config, split, on_epoch=on_epoch)
        return result.record, result.epochs, weights_bytes(result.model) if keep_weights else None

    pending, running, trained = dict(enumerate(todo)), {}, 0
    with futures.ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="regbench-lane") as pool:
        try:
            while pending or running:
                ctrl_c.check()
                for index, config in list(pending.items()):
                    if len(running) < lanes and _claim(index, config, store, pending, progress, leases):
                        running[pool.submit(train, index, config, splits.get(*config.split_key))] = index, config
                if not running:
                    _wait_for_others(pending, progress)
                    continue
                done = futures.wait(running, timeout=RESULT_POLL_SECONDS, return_when=futures.FIRST_COMPLETED).done
                while not epochs.empty():
                    progress.epoch_done(*epochs.get())
                for future in done:
                    index, config = running.pop(future)
                    _store_result(index, config, *future.result(), store, progress, leases)
                    trained += 1
        except BaseException:
            stopping.set()  # the pool waits for each lane to end its epoch
            raise
    return trained


def _train_on_cluster(todo, splits, store, cluster: DaskCluster, progress, keep_weights, ctrl_c, leases) -> int:
    """Train the runs of `todo` on the Dask cluster, as many at once as its workers have threads; return how
    many. A run that fails on the workers (after Dask's retries) is recorded as failed and the sweep goes on."""
    from distributed import CancelledError, wait
    from distributed.comm import CommClosedError

    client = cluster.client()
    orders, sent = cluster.orders(splits, todo)
    events = queue.SimpleQueue()
    client.subscribe_topic(orders.topic, lambda event: events.put(event[1]))
    pending, running, failed, trained = dict(enumerate(todo)), {}, {}, 0
    try:
        while pending or running:
            ctrl_c.check()
            # 1. Claim and submit runs while the workers have room.
            slots = cluster.slots
            for index, config in list(pending.items()):
                if len(running) >= slots:
                    break
                if _claim(index, config, store, pending, progress, leases):
                    running[cluster.submit(config, index, keep_weights, orders, sent)] = index, config
            if not running:
                if pending:
                    _wait_for_others(pending, progress)
                continue
            # 2. Wait a moment for runs to end, echoing the workers' epochs meanwhile; store each that ends.
            try:
                done = wait(list(running), timeout=RESULT_POLL_SECONDS, return_when="FIRST_COMPLETED").done
            except TimeoutError:
                done = ()
            while not events.empty():
                progress.epoch_done(*events.get())
            for future in done:
                index, config = running.pop(future)
                if future.status == "finished":
                    _store_result(index, config, *future.result(), store, progress, leases)
                    trained += 1
                elif future.status == "cancelled" or client.status != "running":
                    raise _scheduler_lost(cluster, store, todo)
                elif isinstance(future.exception(), UsageError):  # e.g. a worker's copy of the data differs
                    raise future.exception()
                else:
                    failed[index] = _failure(future.exception())
                    store.record_failure(config.run_id, failed[index])
                    leases.drop(config.run_id)
                    progress.run_ended(index)
                    progress.echo(f"run {config.run_id} ({config.technique} seed {config.seed}) failed on the "
                                  f"workers: {failed[index]}; the sweep goes on")
    except (CancelledError, CommClosedError):  # the client cancels every future when it loses the scheduler
        raise _scheduler_lost(cluster, store, todo) from None
    finally:
        if client.status == "running":
            client.cancel(list(running))
            client.unsubscribe_topic(orders.topic)
    if failed:
        raise SweepError(f"{len(failed)} of {len(todo)} runs failed on the workers (first: {next(iter(failed.values()))}"
                         f"); {_stored(store, todo)}; rerun the same command to retry them")
    return trained


def _scheduler_lost(cluster: DaskCluster, store: RunStore, todo: list[RunConfig]) -> SweepError:
    """Say that the scheduler is gone, what is stored and how to resume."""
    return SweepError(f"lost the Dask scheduler{' at ' + cluster.scheduler if cluster.scheduler else ''}: "
                      f"{_stored(store, todo)} (the runs in progress are lost); rerun the same command to resume")


def _failure(error: BaseException) -> str:
    """Say in one line why a run failed on the workers."""
    return "".join(traceback.format_exception_only(type(error), error)).strip().splitlines()[-1]
