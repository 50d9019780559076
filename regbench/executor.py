"""Where runs train, chosen once in the CLI: in this process (one run at a time, or under JAX --jobs N runs at
once in threads), or on Dask distributed (a local cluster of one-thread worker processes for TensorFlow's
--jobs N, or an existing scheduler for a cluster).

This module starts and stops the cluster and sends runs to it; regbench.sweep decides which runs, and
this process alone writes the store.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import struct
import tempfile
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from regbench.config import RunConfig
from regbench.data import Splits, save_split, split_images
from regbench.errors import UsageError
from regbench.workers import WorkerOrders, split_name, train_on_worker

CONNECT_SECONDS = 3.0  # --scheduler-timeout: how long a --scheduler has to answer before regbench says what is there
CLIENT_SECONDS = 10.0  # then how long Dask's client may take to register with it (longer on a loaded machine)
HANDSHAKE_BYTES = 2**20  # a Dask handshake's first 8 bytes give its size: a scheduler's is a few hundred bytes
TASK_RETRIES = 1  # a run whose training raised is tried once more (a worker that dies: Dask's allowed-failures)
_ADDRESS = re.compile(r"^(tcp|tls|ucx|ws|wss)://\[?[\w.\-:]+\]?:\d{1,5}$")


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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


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
    _client: object = None
    _cluster: object = None
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

    def __enter__(self):
        if self.scheduler:  # an address that is wrong is said at once, before anything is planned or written
            self.client()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

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
                 connect_seconds: float = CONNECT_SECONDS, device: str = "auto"):
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
