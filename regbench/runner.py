"""Plan paired runs (arms x seeds), skip finished ones, train the rest, write the comparison."""

from __future__ import annotations

import importlib.metadata
import platform
import sys
import time
import warnings
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pandas as pd

from regbench.config import RunConfig
from regbench.data import Split, load_mnist, split_mnist
from regbench.errors import UsageError
from regbench.models import build_model
from regbench.report import write_comparison
from regbench.store import RunStore, check_output_dir
from regbench.techniques import BASELINE, regularization_for
from regbench.train import train_run

CLAIM_POLL_SECONDS = 2.0  # how often to look again for runs another process is training


@dataclass(frozen=True)
class CompareRequest:
    """One `regbench compare`: the arms, the seeds, the shared run settings and where to write."""

    settings: tuple[tuple[str, tuple], ...]  # (canonical technique setting, its parameter values)
    seeds: tuple[int, ...]  # one pair per seed
    base: RunConfig  # every field but technique, technique_params, seed, train_size, device and data
    train_size: int | None  # --train-size, or None for every training image
    out: Path  # the comparison's output directory
    store: Path  # the SQLite run store shared by all invocations
    data: str | None  # --data PATH, or None for the look-up order
    command: str  # the command line, for the manifest


@dataclass(frozen=True)
class CompareOutcome:
    """What a comparison produced: its summary table and the files written."""

    summary: pd.DataFrame
    files: list[Path]
    trained: int  # runs trained by this invocation
    reused: int  # runs found in the store (finished earlier, or by another process meanwhile)


def plan_runs(request: CompareRequest) -> list[RunConfig]:
    """Return the runs of a comparison, seed by seed, each seed's baseline first."""
    arms = [(BASELINE, ()), *request.settings]
    return [
        replace(request.base, technique=technique, technique_params=params, seed=seed)
        for seed in request.seeds
        for technique, params in arms
    ]


class _Progress:
    """Echo one line per epoch with where the sweep stands and an estimate of what remains."""

    def __init__(self, todo: list[RunConfig], echo: Callable[[str], None]):
        self.todo, self.echo = todo, echo
        self.started = time.perf_counter()
        self.epochs_done = 0
        self.index = 0

    def start_run(self, index: int) -> None:
        """Note that run `index` of the to-do list starts."""
        self.index = index

    def epoch_done(self, row: dict) -> None:
        """Echo the epoch's numbers and the time left, estimated from the epochs so far."""
        self.epochs_done += 1
        config = self.todo[self.index]
        remaining_epochs = config.epochs - row["epoch"] + sum(c.epochs for c in self.todo[self.index + 1:])
        per_epoch = (time.perf_counter() - self.started) / self.epochs_done
        self.echo(
            f"[run {self.index + 1}/{len(self.todo)}] {describe_run(config)} "
            f"epoch {row['epoch']}/{config.epochs}: train ce {row['train_crossentropy']:.4f} "
            f"acc {row['train_accuracy']:.4f} | val ce {row['val_crossentropy']:.4f} "
            f"acc {row['val_accuracy']:.4f} | {row['seconds']:.1f}s | "
            f"at most ~{format_duration(remaining_epochs * per_epoch)} left"
        )


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


def run_compare(request: CompareRequest, device: str, echo: Callable[[str], None]) -> CompareOutcome:
    """Train what is missing of `request` and write its tables, figures, manifest and report."""
    # 1. Check everything a user can get wrong before any training.
    mnist = load_mnist(request.data)
    split = split_mnist(mnist, request.train_size)
    if request.base.batch_size > len(split.y_train):
        raise UsageError(
            f"--batch-size {request.base.batch_size} is larger than the training set "
            f"({len(split.y_train)} images); allowed 1..{len(split.y_train)}"
        )
    out = check_output_dir(request.out)
    store = RunStore(request.store)
    base = replace(request.base, train_size=len(split.y_train), device=device, data=mnist.fingerprint)
    configs = plan_runs(replace(request, base=base))
    # 2. Train only the runs the store does not hold yet; each is stored the moment it ends.
    finished = store.finished([c.run_id for c in configs])
    todo = [c for c in configs if c.run_id not in finished]
    echo(f"{len(configs)} runs planned, {len(configs) - len(todo)} already in {request.store}, "
         f"{len(todo)} to train on {base.backend}/{device} with {len(split.y_train)} training images")
    trained = _train_missing(todo, lambda config: split, store, echo)
    # 3. Build the comparison, its figures and its report from the store.
    tables = store.load([c.run_id for c in configs])
    manifest = _manifest(request, base, mnist.source, tables.runs)
    summary, files = write_comparison(out, tables, manifest)
    return CompareOutcome(summary, files, trained=trained, reused=len(configs) - trained)


def train_missing(configs: list[RunConfig], split_for: Callable[[RunConfig], Split], store: RunStore,
                  echo: Callable[[str], None]) -> int:
    """Train and store the runs of `configs` the store does not hold yet, each on split_for(config)."""
    finished = store.finished([c.run_id for c in configs])
    todo = [c for c in configs if c.run_id not in finished]
    if todo:
        echo(f"{len(configs)} runs planned, {len(configs) - len(todo)} already in {store.path}, {len(todo)} to train")
    return _train_missing(todo, split_for, store, echo)


def trained_models(configs: list[RunConfig], split: Split, store: RunStore,
                   echo: Callable[[str], None]) -> tuple[list, int]:
    """Return each config's trained model (from kept weights, or trained and kept now) and how many were trained."""
    unkept = [c for c in configs if not store.weights_path(c.run_id).exists()]
    finished = store.finished([c.run_id for c in unkept]) if unkept else set()
    trained = _train_missing([c for c in unkept if c.run_id not in finished], lambda config: split, store, echo,
                             keep_weights=True)
    for config in unkept:
        if not store.weights_path(config.run_id).exists():  # stored by an earlier sweep without weights
            echo(f"retraining stored run {config.run_id} ({config.technique} seed {config.seed}) for its weights")
            store.save_weights(config.run_id, train_run(config, split).model)
            trained += 1
    models = []
    for config in configs:
        model = build_model(config, regularization_for(config.technique, config.technique_params))
        with warnings.catch_warnings():  # the kept file also holds optimizer state, which is not needed here
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(store.weights_path(config.run_id))
        models.append(model)
    return models, trained


def _train_missing(todo: list[RunConfig], split_for: Callable[[RunConfig], Split], store: RunStore, echo,
                   keep_weights: bool = False) -> int:
    """Train and store each run of `todo` that no other process is training; return how many.

    Runs claimed by another live process are left to it and waited for; Ctrl-C keeps every
    finished run and says how to resume. `keep_weights` also keeps each trained model's weights.
    """
    progress = _Progress(todo, echo)
    pending = dict(enumerate(todo))
    trained = 0
    while pending:
        started = trained
        for index, config in list(pending.items()):
            if not store.claim(config.run_id):
                if store.finished([config.run_id]):
                    del pending[index]  # another process finished it
                continue
            progress.start_run(index)
            try:
                result = train_run(config, split_for(config), on_epoch=progress.epoch_done)
                if keep_weights:
                    store.save_weights(config.run_id, result.model)
                store.save(config, result.record, result.epochs)
            except BaseException as error:
                store.release(config.run_id)
                if isinstance(error, KeyboardInterrupt):
                    done = len(todo) - len(pending)
                    echo(f"interrupted: {done} of {len(todo)} runs stored, {len(pending)} left "
                         "(the run in progress is lost); rerun the same command to resume")
                raise
            del pending[index]
            trained += 1
            if result.record["status"] != "ok":
                echo(f"run {config.run_id} ({config.technique} seed {config.seed}) diverged at epoch "
                     f"{result.record['diverged_epoch']}: stored, left out of the statistics")
        if pending and trained == started:
            echo(f"waiting for {len(pending)} run(s) that another regbench process is training")
            time.sleep(CLAIM_POLL_SECONDS)
    return trained


def package_versions(backend: str) -> dict:
    """Return the versions of Python and of every package a result depends on."""
    packages = ["regbench", "keras", "numpy", "pandas", "scipy", "matplotlib", "click", backend]
    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def device_description(base: RunConfig) -> dict:
    """Describe where runs of `base` train: device kind, Keras backend, platform and processor."""
    return {"kind": base.device, "keras_backend": base.backend,
            "platform": platform.platform(), "processor": platform.processor() or platform.machine()}


def _manifest(request: CompareRequest, base: RunConfig, source: str, runs) -> dict:
    """Record the command, the full configuration, versions, device and date."""
    return {
        "command": request.command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {k: v for k, v in asdict(base).items() if k not in ("technique", "technique_params", "seed")},
        "techniques": {technique: dict(params) for technique, params in request.settings},
        "seeds": list(request.seeds),
        "data": {"source": source, "fingerprint": base.data},
        "device": device_description(base),
        "versions": package_versions(base.backend),
        "run_ids": {t: list(runs.loc[runs["technique"] == t, "run_id"]) for t in runs["technique"].unique()},
        "python_executable": sys.executable,
    }
