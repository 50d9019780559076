"""What runs inside a Dask worker process: start the backend once, find a run's data, train it, report.

A worker never opens the run store: it returns each run's record (and kept weights) to the regbench
process that submitted it, which stores it. Data, splits and compiled programs stay in the worker
process between runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from regbench.config import RunConfig
from regbench.data import Images, Split, Splits, load_split, read_images
from regbench.errors import UsageError


@dataclass(frozen=True)
class WorkerOrders:
    """How a sweep's workers find their data and report: the same for every run of the sweep."""

    fingerprint: str  # the content fingerprint of the client's MNIST; a worker's copy must match it
    path: str | None  # MNIST file each worker reads (its own copy), or None when the data is sent (scatter)
    shared: str | None  # local cluster: directory of memory-mapped splits the client wrote, by split_name
    topic: str  # the Dask event topic this sweep's progress goes to
    pin_cores: bool  # local cluster: pin worker number k to the k-th CPU core before its backend starts


def split_name(fingerprint: str, train_size: int, draw: int | None, planted: int) -> str:
    """Name the shared directory that holds one split of one MNIST file."""
    return f"{fingerprint}-{train_size}-{'fixed' if draw is None else draw}-{planted}"


_started: dict = {}  # this worker process's backend and device, once started
_shared_splits: dict[Path, Split] = {}  # memory-mapped splits this worker process has read, by directory
_splits: dict[str, Splits] = {}  # this worker process's MNIST (by fingerprint), with the splits made from it


def train_on_worker(config: RunConfig, index: int, keep_weights: bool, orders: WorkerOrders,
                    sent: Images | None = None) -> tuple[dict, list[dict], bytes | None]:
    """Train run `config` (number `index` of its sweep) here; return its record, epoch rows and (if kept) weights.

    `sent` is the client's MNIST when it sends the data (scatter) rather than naming a path.
    """
    from distributed import get_worker

    worker = get_worker()
    _start_backend(config, orders.pin_cores, worker.name)
    split = _split(config, orders, sent)
    from regbench.train import train_run, weights_bytes  # after the backend is chosen

    result = train_run(config, split, on_epoch=lambda row: worker.log_event(orders.topic, [index, row]))
    return result.record, result.epochs, weights_bytes(result.model) if keep_weights else None


def _start_backend(config: RunConfig, pin_cores: bool, name) -> None:
    """Start the run's backend in this process once (pinned to one core first, on a local cluster)."""
    from regbench.backend import select_backend

    wanted = (config.backend, config.device)
    if _started.get("backend") == wanted:
        return
    if _started:
        raise UsageError(f"a worker started for {'/'.join(_started['backend'])} runs was given a "
                         f"{config.backend}/{config.device} run; give each backend and device its own workers")
    if pin_cores and isinstance(name, int):  # before the backend starts, so it sizes its thread pools to one core
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[name % len(cores)]})
    select_backend(config.backend, config.device)
    _started["backend"] = wanted


def _split(config: RunConfig, orders: WorkerOrders, sent: Images | None):
    """Return the run's data: a shared memory-mapped split, or a split of this worker's (or the sent) MNIST."""
    if orders.shared:
        directory = Path(orders.shared) / split_name(orders.fingerprint, *config.split_key)
        if directory not in _shared_splits:  # mapped once: the runs of a split share its arrays and their tensors
            _shared_splits[directory] = load_split(directory)
        return _shared_splits[directory]
    if orders.fingerprint not in _splits:
        images = sent if sent is not None else read_images(Path(str(orders.path)), config.dataset)
        if images.fingerprint != orders.fingerprint:
            raise UsageError(f"{images.source}: this worker's copy has content fingerprint {images.fingerprint}, not "
                             f"{orders.fingerprint} as the submitting process's; give the workers the same file "
                             "(or send it with --send-data)")
        _splits[orders.fingerprint] = Splits(images)
    return _splits[orders.fingerprint].get(*config.split_key)
