"""Where runs train, chosen once by the options layer: in this process (one run at a time, or under JAX --jobs N runs
at once in threads), or on Dask distributed (a local cluster of one-thread worker processes for TensorFlow's
--jobs N, or an existing scheduler for a cluster). Each is an `Executor`.

An executor trains the runs of a `regbench.sweep.Sweep`: it claims each through the sweep, trains it where it trains
runs, and hands the result back to the sweep, so this process alone writes the store.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import queue
import re
import shutil
import signal
import socket
import struct
import tempfile
import threading
import time
import traceback
import uuid
import warnings
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from regbench.backend import select_backend
from regbench.config import RunConfig
from regbench.data import Splits, save_split, split_images
from regbench.errors import SweepError, UsageError
from regbench.workers import WorkerOrders, split_name, train_on_worker

if TYPE_CHECKING:  # annotations only: the sweep hands itself to an executor's train
    from regbench.sweep import Sweep

CONNECT_SECONDS = 3.0  # --scheduler-timeout: how long a --scheduler has to answer before regbench says what is there
CLIENT_SECONDS = 10.0  # then how long Dask's client may take to register with it (longer on a loaded machine)
HANDSHAKE_BYTES = 2**20  # a Dask handshake's first 8 bytes give its size: a scheduler's is a few hundred bytes
TASK_RETRIES = 1  # a run whose training raised is tried once more (a worker that dies: Dask's allowed-failures)
RESULT_POLL_SECONDS = 0.5  # how often to echo the progress of runs training elsewhere (threads, workers)
_ADDRESS = re.compile(r"^(tcp|tls|ucx|ws|wss)://\[?[\w.\-:]+\]?:\d{1,5}$")


class Executor(Protocol):
    """Where the runs of a sweep train. The sweep, the runner and the studies see only this."""

    @property
    def name(self) -> str:
        """Name this executor in each run's provenance."""

    @property
    def description(self) -> str:
        """Say where runs train, for the console."""

    @property
    def trains_here(self) -> bool:
        """Say whether runs train in this process (which then starts their backend) or elsewhere."""

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc) -> None: ...

    def train(self, sweep: Sweep) -> int:
        """Claim, train and hand back to `sweep` every run of its to-do list it can; return how many it stored."""


@dataclass(frozen=True)
class InProcess:
    """Train in this process: one run after another (--jobs 1, the default; CPU or GPU), or under JAX `lanes` runs
    at once, each in a thread of its own, sharing the process's data and compiled programs (--jobs N, CPU).

    A JAX epoch on these small models keeps about one core busy, whatever the cores; two runs at once trained
    1.6x the model-epochs per second of one on 2 cores here, with the same bits (docs: Speed).
    """

    lanes: int = 1

    @property
    def description(self) -> str:
        if self.lanes == 1:
            return "in this process"
        return f"in this process, {self.lanes} runs at once (a thread each, sharing its CPU cores)"

    @property
    def name(self) -> str:
        """Name this executor in each run's provenance."""
        return "in-process" if self.lanes == 1 else f"in-process threads ({self.lanes} runs at once)"

    @property
    def trains_here(self) -> bool:
        return True

    def __enter__(self) -> InProcess:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def train(self, sweep: Sweep) -> int:
        """Train the sweep's runs here, one by one or `lanes` at once; return how many were stored."""
        _start_backend(sweep.todo, sweep.splits)
        return self._train_one_by_one(sweep) if self.lanes == 1 else self._train_in_lanes(sweep)

    @staticmethod
    def _train_one_by_one(sweep: Sweep) -> int:
        from regbench.train import train_run, weights_bytes

        pending, trained = dict(enumerate(sweep.todo)), 0
        while pending:
            for index, config in list(pending.items()):
                sweep.ctrl_c.check()
                if not sweep.claim(index, pending):
                    continue
                result = train_run(config, sweep.splits.get(*config.split_key),
                                   on_epoch=functools.partial(sweep.progress.epoch_done, index))
                sweep.store_result(index, result.record, result.epochs,
                                   weights_bytes(result.model) if sweep.keep_weights else None)
                trained += 1
            if pending:
                sweep.wait_for_others(pending)
        return trained

    def _train_in_lanes(self, sweep: Sweep) -> int:
        """Train `lanes` runs at once, each in a thread of its own. This thread claims, echoes and stores; a lane's
        error stops the others at their next epoch and is raised here."""
        from regbench.train import train_run, weights_bytes

        epochs: queue.SimpleQueue = queue.SimpleQueue()
        stopping = threading.Event()

        def train(index: int, config: RunConfig, split) -> tuple:
            def on_epoch(row: dict) -> None:
                epochs.put((index, row))
                if stopping.is_set():
                    raise _Stopped

            result = train_run(config, split, on_epoch=on_epoch)
            return result.record, result.epochs, weights_bytes(result.model) if sweep.keep_weights else None

        pending, trained = dict(enumerate(sweep.todo)), 0
        running: dict[futures.Future, int] = {}  # a lane's run -> its index in the to-do list
        with futures.ThreadPoolExecutor(max_workers=self.lanes, thread_name_prefix="regbench-lane") as pool:
            try:
                while pending or running:
                    sweep.ctrl_c.check()
                    for index, config in list(pending.items()):
                        if len(running) < self.lanes and sweep.claim(index, pending):
                            running[pool.submit(train, index, config, sweep.splits.get(*config.split_key))] = index
                    if not running:
                        sweep.wait_for_others(pending)
                        continue
                    done = futures.wait(running, timeout=RESULT_POLL_SECONDS,
                                        return_when=futures.FIRST_COMPLETED).done
                    while not epochs.empty():
                        sweep.progress.epoch_done(*epochs.get())
                    for future in done:
                        sweep.store_result(running.pop(future), *future.result())
                        trained += 1
            except BaseException:
                stopping.set()  # the pool waits for each lane to end its epoch
                raise
        return trained


@dataclass
class DaskCluster:
    """Train on Dask distributed: a LocalCluster on 127.0.0.1 with `jobs` one-thread worker processes, or the
    cluster of `scheduler` (tcp://HOST:PORT). Started on first use; a local cluster is closed on exit.

    `resources` are what each run asks of a worker (e.g. {"GPU": 1}, for workers started with
    `--resources GPU=1`); `send_data` sends the client's MNIST to the workers instead of naming its path.
    """

    jobs: int | None = None
    scheduler: str | None = None
    resources: dict = field(default_factory=dict)
    send_data: bool = False
    connect_seconds: float = CONNECT_SECONDS  # --scheduler-timeout
    _client: Any = None  # distributed.Client, once started
    _cluster: Any = None  # distributed.LocalCluster, when this process started one
    _shared: Path | None = None

    def __post_init__(self):
        if self.scheduler is not None and not _ADDRESS.match(self.scheduler):
            raise UsageError(f"--scheduler {self.scheduler}: not a scheduler address; expected e.g. "
                             "tcp://HOST:8786")

    @property
    def description(self) -> str:
        if self.scheduler:
            return f"on the Dask cluster at {self.scheduler}"
        return f"on a local Dask cluster of {self.jobs} worker processes, one CPU core and one thread each"

    @property
    def name(self) -> str:
        """Name this executor in each run's provenance."""
        return f"dask {self.scheduler}" if self.scheduler else f"dask local cluster ({self.jobs} workers)"

    @property
    def trains_here(self) -> bool:
        return False

    def __enter__(self) -> DaskCluster:
        if self.scheduler:  # an address that is wrong is said at once, before anything is planned or written
            self.client()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def train(self, sweep: Sweep) -> int:
        """Train the sweep's runs on the cluster, as many at once as its workers have threads; return how many were
        stored. A run that fails on the workers (after Dask's retries) is recorded as failed and the sweep goes on."""
        from distributed import CancelledError, wait
        from distributed.comm import CommClosedError

        client = self.client()
        orders, sent = self.orders(sweep.splits, sweep.todo)
        events: queue.SimpleQueue = queue.SimpleQueue()
        client.subscribe_topic(orders.topic, lambda event: events.put(event[1]))
        pending, trained = dict(enumerate(sweep.todo)), 0
        running: dict[Any, int] = {}  # a Dask future -> its run's index in the to-do list
        failed: dict[int, str] = {}
        try:
            while pending or running:
                sweep.ctrl_c.check()
                # 1. Claim and submit runs while the workers have room.
                slots = self.slots
                for index, config in list(pending.items()):
                    if len(running) >= slots:
                        break
                    if sweep.claim(index, pending):
                        running[self.submit(config, index, sweep.keep_weights, orders, sent)] = index
                if not running:
                    if pending:
                        sweep.wait_for_others(pending)
                    continue
                # 2. Wait a moment for runs to end, echoing the workers' epochs meanwhile; store each that ends.
                try:
                    done = wait(list(running), timeout=RESULT_POLL_SECONDS, return_when="FIRST_COMPLETED").done
                except TimeoutError:
                    done = set()
                while not events.empty():
                    sweep.progress.epoch_done(*events.get())
                for future in done:
                    index = running.pop(future)
                    if future.status == "finished":
                        sweep.store_result(index, *future.result())
                        trained += 1
                    elif future.status == "cancelled" or client.status != "running":
                        raise self._lost(sweep)
                    elif isinstance(future.exception(), UsageError):  # e.g. a worker's copy of the data differs
                        raise future.exception()
                    else:
                        failed[index] = _failure(future.exception())
                        sweep.store_failure(index, failed[index])
        except (CancelledError, CommClosedError):  # the client cancels every future when it loses the scheduler
            raise self._lost(sweep) from None
        finally:
            if client.status == "running":
                client.cancel(list(running))
                client.unsubscribe_topic(orders.topic)
        if failed:
            raise SweepError(f"{len(failed)} of {len(sweep.todo)} runs failed on the workers (first: "
                             f"{next(iter(failed.values()))}); {sweep.stored()}; rerun the same command to retry them")
        return trained

    def _lost(self, sweep: Sweep) -> SweepError:
        """Say that the scheduler is gone, what is stored and how to resume."""
        return SweepError(f"lost the Dask scheduler{' at ' + self.scheduler if self.scheduler else ''}: "
                          f"{sweep.stored()} (the runs in progress are lost); rerun the same command to resume")

    def client(self):
        """Return the Dask client, starting the local cluster or connecting to the scheduler the first time."""
        if self._client is None:
            import dask
            from distributed import Client, LocalCluster

            dask.config.set({"distributed.worker.daemon": False})  # workers may start helper processes
            for name in ["distributed", *logging.root.manager.loggerDict]:  # its failures reach the user as one line
                if name.startswith("distributed"):
                    logging.getLogger(name).setLevel(logging.CRITICAL)
            if self.scheduler:
                if self.scheduler.startswith("tcp://"):
                    check_handshake(self.scheduler, self.connect_seconds)
                seconds = max(self.connect_seconds, CLIENT_SECONDS)
                try:
                    self._client = Client(self.scheduler, timeout=seconds)
                except (OSError, TimeoutError) as error:
                    raise UsageError(f"--scheduler {self.scheduler}: cannot reach a Dask scheduler there within "
                                     f"{seconds:g} s ({type(error).__name__}); is `dask scheduler` running?") from None
            else:
                with _as_workers_start():  # Ctrl-C is this process's to handle, and the workers' warnings stay theirs
                    self._cluster = LocalCluster(n_workers=self.jobs, threads_per_worker=1, processes=True,
                                                 host="127.0.0.1", dashboard_address=None,
                                                 silence_logs=logging.CRITICAL)  # their errors reach us as results
                self._client = Client(self._cluster)
                self._shared = Path(tempfile.mkdtemp(prefix="regbench-splits-"))
        return self._client

    @property
    def slots(self) -> int:
        """Return how many runs the cluster's workers can train at once (at least one, to queue on)."""
        return max(1, sum(self.client().nthreads().values()))

    def orders(self, splits: Splits, todo: list[RunConfig]) -> tuple[WorkerOrders, object]:
        """Prepare the workers' data for `todo` (from `splits`) and return their orders, with the sent MNIST (or None).

        A local cluster's workers map the splits this process writes (one copy in memory for all of them);
        a remote cluster's read the same file by path, or get the data sent (scatter) with `send_data`.
        """
        client, images = self.client(), splits.images
        topic = f"regbench-progress-{uuid.uuid4().hex}"
        if self._shared is not None:
            for key in dict.fromkeys(c.split_key for c in todo):
                directory = self._shared / split_name(images.fingerprint, *key)
                if not directory.is_dir():  # made here and not kept: this process needs no copy of its own
                    save_split(split_images(images, *key), directory)
            return WorkerOrders(images.fingerprint, None, str(self._shared), topic, pin_cores=True), None
        if self.send_data or not Path(images.source).is_file():
            sent = client.scatter(images, broadcast=True)
            return WorkerOrders(images.fingerprint, None, None, topic, pin_cores=False), sent
        path = str(Path(images.source).resolve())
        return WorkerOrders(images.fingerprint, path, None, topic, pin_cores=False), None

    def submit(self, config: RunConfig, index: int, keep_weights: bool, orders: WorkerOrders, sent):
        """Send run `config` to the cluster; return its future."""
        return self.client().submit(
            train_on_worker, config, index, keep_weights, orders, sent, key=f"regbench-{config.run_id}-"
            f"{uuid.uuid4().hex[:8]}", pure=False, retries=TASK_RETRIES, resources=self.resources or None)

    def close(self) -> None:
        """Close the client and, if this process started it, the local cluster and its shared splits."""
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        if self._shared is not None:
            shutil.rmtree(self._shared, ignore_errors=True)
        self._client = self._cluster = self._shared = None


class _Stopped(Exception):
    """Raised in a lane at the end of an epoch once the sweep is stopping (Ctrl-C, or another lane's error)."""


def _start_backend(todo: list[RunConfig], splits: Splits) -> None:
    """Start the runs' backend and Keras in this process (compare starts them here, as a first run trains), making
    the first run's split meanwhile (new memory for the images as floats: about 0.5 s)."""
    with futures.ThreadPoolExecutor(max_workers=1) as helper:
        first_split = helper.submit(splits.get, *todo[0].split_key)
        select_backend(todo[0].backend, todo[0].device)
        importlib.import_module("regbench.train")  # Keras: not at the top, as a cluster's client never loads it
        first_split.result()


def _failure(error: BaseException) -> str:
    """Say in one line why a run failed on the workers."""
    return "".join(traceback.format_exception_only(type(error), error)).strip().splitlines()[-1]


@contextlib.contextmanager
def _as_workers_start():
    """Within (in the main thread), processes started keep ignoring SIGINT and Python's warnings: a Ctrl-C in a
    terminal reaches the whole process group and stops the sweep here instead of raising in every worker, and a
    worker's warning (Dask's about slow scratch directories or a busy port) does not reach the terminal; their
    failures reach this process as results. A Ctrl-C pressed while the workers start is lost."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous, chosen = signal.signal(signal.SIGINT, signal.SIG_IGN), os.environ.get("PYTHONWARNINGS")
    os.environ["PYTHONWARNINGS"] = "ignore"
    try:
        with warnings.catch_warnings():  # and here: the scheduler's own ("Port 8787 is already in use")
            warnings.simplefilter("ignore")
            yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if chosen is None:
            os.environ.pop("PYTHONWARNINGS", None)
        else:
            os.environ["PYTHONWARNINGS"] = chosen


def check_handshake(address: str, seconds: float) -> None:
    """Raise UsageError unless what listens at tcp://HOST:PORT `address` starts a Dask handshake within `seconds`.

    A Dask listener writes its handshake as soon as a connection opens, its first 8 bytes the size of what follows
    (distributed.comm.tcp). Dask's own client writes first and then trusts those 8 bytes: an HTTP server's reply
    read as a size asked for exabytes, and a listener that never answers held it for minutes.
    """
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    deadline = time.monotonic() + seconds
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=seconds) as connection:
            header = b""
            while len(header) < 8:
                connection.settimeout(max(0.01, deadline - time.monotonic()))
                part = connection.recv(8 - len(header))
                if not part:
                    raise UsageError(f"--scheduler {address}: something there accepted the connection and closed it "
                                     "without a Dask handshake; is it a Dask scheduler?")
                header += part
    except TimeoutError:
        raise UsageError(f"--scheduler {address}: no Dask handshake from there within {seconds:g} s (something "
                         "may listen there, but no Dask scheduler answers; see --scheduler-timeout)") from None
    except OSError as error:
        raise UsageError(f"--scheduler {address}: cannot connect ({error.strerror or error}); is `dask scheduler` "
                         "running there?") from None
    if not 0 < struct.unpack("<Q", header)[0] <= HANDSHAKE_BYTES:
        raise UsageError(f"--scheduler {address}: what answers there is not a Dask scheduler (it began with "
                         f"{header!r})")


def executor_for(jobs: int, scheduler: str | None, resources: dict, send_data: bool, backend: str,
                 connect_seconds: float = CONNECT_SECONDS, device: str = "auto") -> Executor:
    """Check --jobs, --scheduler, --resources and --send-data against each other, the CPU cores and the device, and
    return the executor they ask for: a Dask cluster for --scheduler or TensorFlow's --jobs > 1, else this process
    (JAX's --jobs N runs at once in threads: cheaper and faster than N processes, which TensorFlow's own thread
    pools need, as two runs in threads of one TensorFlow process were slower than one after another). Nothing is
    started yet."""
    cores = len(os.sched_getaffinity(0))
    if jobs > cores:
        raise UsageError(f"--jobs {jobs} is more than the {cores} CPU cores this process may use; allowed 1..{cores}")
    if jobs > 1 and device == "gpu":
        raise UsageError("--jobs trains on CPU cores, one run per core; on a GPU use --jobs 1 (or --device cpu), "
                         "or GPU workers of a cluster (--scheduler, --resources GPU=1)")
    scheduler = scheduler or os.environ.get("REGBENCH_SCHEDULER") or None
    if scheduler and jobs > 1:
        raise UsageError("--jobs starts a local cluster and --scheduler names an existing one; give one")
    if (resources or send_data) and not scheduler:
        raise UsageError(f"{'--resources' if resources else '--send-data'} applies to the workers of an existing "
                         "cluster; add --scheduler ADDRESS")
    if jobs > 1 and not scheduler and backend == "jax":
        return InProcess(lanes=jobs)
    if scheduler or jobs > 1:
        return DaskCluster(jobs=None if scheduler else jobs, scheduler=scheduler, resources=resources,
                           send_data=send_data, connect_seconds=connect_seconds)
    return InProcess()
