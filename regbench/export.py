"""A comparison's runs where users keep runs: TensorBoard event files (with the HParams plugin) and MLflow.

Each regbench run becomes one TensorBoard run (LOGDIR/ARM/seed-N) or one MLflow run: its per-epoch numbers
as steps (tags epoch/...), the numbers the comparison analyses as final metrics (final/..., at the weights its
protocol selects), its arm, technique, parameters and seed. The seeds of an arm share one HParams session group:
their trial id is the hash of the run's configuration without the seed.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import math
import os
import sys
import types
import urllib.error
import urllib.request
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path

import pandas as pd

from regbench.config import RunConfig
from regbench.errors import UsageError
from regbench.outputs import Manifest, read_comparison, run_arms
from regbench.report import analysed_runs, comparison_title, figure_captions
from regbench.store import RunStore, RunTables
from regbench.techniques import technique_of

EXTRAS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow")}  # target: module, extra
FINAL = ("test_accuracy", "test_crossentropy", "val_accuracy", "val_crossentropy", "train_accuracy",
         "train_crossentropy", "gap", "epochs_run", "seconds_per_epoch")  # a run's analysed numbers
NOT_PER_EPOCH = {"run_id", "technique", "seed", "epoch"}
MLFLOW_BATCH = 1000  # MLflow's limit of metrics per log_batch call
MLFLOW_SECONDS = 3.0  # how long a tracking server has to answer before export says what it found there


@dataclass(frozen=True)
class Comparison:
    """A comparison's runs as exported: its tables (each run under its arm's label), manifest and directory."""

    directory: Path
    tables: RunTables
    manifest: Manifest
    source: str  # where the runs were read from, for the output line

    @property
    def runs(self) -> pd.DataFrame:
        """Return the runs measured as the comparison analyses them (its protocol's selected weights)."""
        return analysed_runs(self.tables.runs, self.manifest)


def require(target: str):
    """Import the library a target needs, or raise a UsageError naming the extra that installs it."""
    module, extra = EXTRAS[target]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"--{target} needs {module}, which is not installed: pip install "
                         f"'regbench[{extra}]'") from None


def load_comparison(directory: Path, store_path: Path) -> Comparison:
    """Read a comparison: its runs from `store_path` when it holds every one of them, else from its own files."""
    tables, manifest = read_comparison(directory)
    arms = run_arms(manifest)
    if store_path.is_file():
        store = RunStore(store_path, create=False)
        if store.finished(list(arms)) == set(arms):
            return Comparison(directory, store.load(list(arms)).labelled(arms), manifest, str(store_path))
    return Comparison(directory, tables, manifest, f"{directory}/runs.csv and epochs.csv")


def check_empty(logdir: Path) -> None:
    """Refuse a TensorBoard target that exists and is not an empty directory, or that cannot be made (UsageError)."""
    if logdir.exists() and (not logdir.is_dir() or any(logdir.iterdir())):
        raise UsageError(f"--tensorboard {logdir}: exists and is not an empty directory; choose a new one")
    _check_writable(logdir, "--tensorboard")


def _check_writable(path: Path, option: str) -> None:
    """Refuse a path whose nearest existing folder is a file or cannot be written (UsageError)."""
    existing = next(parent for parent in [path, *path.parents] if parent.exists())
    if existing != path and not existing.is_dir():
        raise UsageError(f"{option} {path}: {existing} is a file, not a folder")
    if not os.access(existing if existing.is_dir() else existing.parent, os.W_OK | os.X_OK) or (
            existing == path and path.is_file() and not os.access(path, os.W_OK)):
        raise UsageError(f"{option} {path}: {existing} cannot be written")


def trial_id(run: pd.Series) -> str:
    """Return the hash of a run's configuration without its seed: the same for every seed of one arm."""
    config = {spec.name: _plain(run.get(spec.name)) for spec in fields(RunConfig) if spec.name != "seed"}
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _plain(value):
    """Return a table cell as JSON writes it, every kind of missing value as ''."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value.item() if hasattr(value, "item") else value


def hyperparameters(run: pd.Series) -> dict:
    """Return what distinguishes a run's arm: its label, technique and every parameter value."""
    params = {name: float(value) for name, _, value in
              (pair.partition("=") for pair in str(_plain(run["technique_params"])).split())}
    return {"arm": run["technique"], "technique": technique_of(run["technique"]), **params}


def _epoch_times(run: pd.Series, epochs: pd.DataFrame) -> list[float]:
    """Return the wall time (seconds since the epoch) at which each of a run's epochs ended."""
    finished = datetime.fromisoformat(str(run["finished_at"])).timestamp()
    ends = epochs["seconds"].fillna(0).cumsum()
    return list(finished - ends.iloc[-1] + ends) if len(ends) else [finished]  # no epoch: when it ended


def _start_time(epochs: pd.DataFrame, times: list[float]) -> float:
    """Return when a run's first epoch began (its end, less its time), or when it ended if it ran none."""
    return times[0] - float(epochs["seconds"].fillna(0).iloc[0]) if len(epochs) else times[0]


def _per_run(comparison: Comparison):
    """Yield each run with its epochs (in order), its epochs' end times and its final metrics."""
    epochs = comparison.tables.epochs
    for _, run in comparison.runs.iterrows():
        mine = epochs[epochs["run_id"] == run["run_id"]].sort_values("epoch")
        finals = {name: float(run[name]) for name in FINAL if name in run and pd.notna(run[name])}
        yield run, mine, _epoch_times(run, mine), finals


def to_tensorboard(comparison: Comparison, logdir: Path) -> int:
    """Write every run as TensorBoard event files under LOGDIR/ARM/seed-N, with the HParams plugin's experiment
    at LOGDIR; return how many runs were written."""
    require("tensorboard")
    if "tensorflow" not in sys.modules:  # TensorBoard's own file I/O (its TF stub): writing needs no TensorFlow
        sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.plugins.hparams import summary_v2 as hp
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    def scalar(tag: str, value: float) -> summary_pb2.Summary:
        return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])

    check_empty(logdir)
    runs = comparison.runs
    count = 0
    for run, epochs, times, finals in _per_run(comparison):
        writer = EventFileWriter(str(logdir / run["technique"] / f"seed-{run['seed']}"))
        start = _start_time(epochs, times)
        writer.add_event(event_pb2.Event(wall_time=start, step=0, summary=hp.hparams_pb(
            hyperparameters(run), trial_id=trial_id(run), start_time_secs=start)))
        columns = [column for column in epochs.columns if column not in NOT_PER_EPOCH]
        for (_, row), wall_time in zip(epochs.iterrows(), times):
            for column in columns:
                if pd.notna(row[column]):
                    writer.add_event(event_pb2.Event(wall_time=wall_time, step=int(row["epoch"]),
                                                     summary=scalar(f"epoch/{column}", float(row[column]))))
        step = int(epochs["epoch"].max()) if len(epochs) else 0
        for name, value in finals.items():
            writer.add_event(event_pb2.Event(wall_time=times[-1], step=step, summary=scalar(f"final/{name}", value)))
        writer.close()
        count += 1
    labels = list(dict.fromkeys(runs["technique"]))
    values = pd.DataFrame([hyperparameters(run) for _, run in runs.iterrows()]).drop(columns=["arm", "technique"])
    domains = [hp.HParam("arm", hp.Discrete(labels)),
               hp.HParam("technique", hp.Discrete(sorted({technique_of(label) for label in labels}))),
               *(hp.HParam(name, hp.RealInterval(float(values[name].min()), float(values[name].max())))
                 for name in sorted(values.columns))]
    metrics = [hp.Metric(f"final/{name}", display_name=name.replace("_", " ")) for name in FINAL]
    writer = EventFileWriter(str(logdir))
    writer.add_event(event_pb2.Event(wall_time=datetime.now().timestamp(),
                                     summary=hp.hparams_config_pb(domains, metrics)))
    writer.close()
    return count


def open_mlflow(uri: str, experiment: str):
    """Return an MLflow client of tracking store `uri` and the id of its experiment `experiment`, created where
    missing; refuse (UsageError) one that holds runs already."""
    require("mlflow")
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    for name in ("mlflow", "alembic"):  # their set-up lines about creating database tables
        logging.getLogger(name).setLevel(logging.WARNING)
    client = MlflowClient(tracking_uri=uri)
    existing = client.get_experiment_by_name(experiment)
    if existing is not None and client.search_runs([existing.experiment_id], max_results=1,
                                                   run_view_type=ViewType.ALL):
        raise UsageError(f"--mlflow {uri}: experiment {experiment!r} exists and holds runs; choose another "
                         "--mlflow-experiment")
    if existing is not None:
        return client, existing.experiment_id
    return client, client.create_experiment(experiment, artifact_location=_artifact_location(uri, experiment))


def to_mlflow(comparison: Comparison, client, experiment_id: str) -> int:
    """Log every run to MLflow experiment `experiment_id`: one MLflow run per regbench run (parameters, per-epoch
    and final metrics, tags arm, seed and run id) under a parent run holding the report, figures, manifest and
    experiment file as artifacts; return how many runs were logged."""
    from mlflow.entities import Metric, Param, RunTag

    manifest, directory = comparison.manifest, comparison.directory
    parent = client.create_run(experiment_id, run_name=directory.name, tags={
        "regbench.comparison": str(directory.resolve()), "regbench.command": manifest["command"],
        "mlflow.note.content": comparison_title(manifest)})
    shared = {key: value for key, value in manifest["config"].items() if key not in ("technique", "technique_params")}
    client.log_batch(parent.info.run_id, params=[Param(key, str(value)) for key, value in shared.items()]
                     + [Param("seeds", str(manifest["seeds"])), Param("arms", ", ".join(manifest["run_ids"]))])
    for name in ["REPORT.md", "manifest.json", "experiment.toml",
                 *(f"{figure}.png" for figure in figure_captions(manifest))]:
        if (directory / name).is_file():
            client.log_artifact(parent.info.run_id, str(directory / name))
    client.set_terminated(parent.info.run_id)
    count = 0
    for run, epochs, times, finals in _per_run(comparison):
        milliseconds = [int(wall_time * 1000) for wall_time in times]
        child = client.create_run(experiment_id, run_name=f"{run['technique']} seed {run['seed']}",
                                  start_time=int(_start_time(epochs, times) * 1000),
                                  tags={"mlflow.parentRunId": parent.info.run_id})
        params = {**{spec.name: _plain(run.get(spec.name)) for spec in fields(RunConfig)
                     if spec.name not in ("technique", "technique_params")}, **hyperparameters(run)}
        tags = {"arm": run["technique"], "seed": str(run["seed"]), "run_id": run["run_id"], "status": run["status"]}
        metrics = [Metric(f"epoch/{column}", float(row[column]), when, int(row["epoch"]))
                   for (_, row), when in zip(epochs.iterrows(), milliseconds)
                   for column in epochs.columns if column not in NOT_PER_EPOCH and pd.notna(row[column])]
        step = int(epochs["epoch"].max()) if len(epochs) else 0
        metrics += [Metric(f"final/{name}", value, milliseconds[-1], step) for name, value in finals.items()]
        client.log_batch(child.info.run_id, params=[Param(key, str(value)) for key, value in params.items()],
                         tags=[RunTag(key, str(value)) for key, value in tags.items()])
        for first in range(0, len(metrics), MLFLOW_BATCH):
            client.log_batch(child.info.run_id, metrics=metrics[first:first + MLFLOW_BATCH])
        client.set_terminated(child.info.run_id, "FINISHED" if run["status"] == "ok" else "FAILED",
                              end_time=milliseconds[-1])
        count += 1
    return count


def _artifact_location(uri: str, experiment: str) -> str | None:
    """Keep a SQLite store's artifacts beside its database (mlartifacts/EXPERIMENT), not in the working
    directory; a tracking server chooses its own (None)."""
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri.removeprefix("sqlite:///"))
    return (database.resolve().parent / "mlartifacts" / experiment.replace("/", "_")).as_uri()


def check_mlflow_uri(uri: str) -> None:
    """Refuse a tracking URI other than a writable SQLite database (new or existing) or a tracking server that answers
    within MLFLOW_SECONDS (UsageError): MLflow itself retries for minutes, then ends in a traceback."""
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///"))
        if not database.parent.is_dir():
            raise UsageError(f"--mlflow {uri}: the directory {database.parent} does not exist")
        if database.is_dir():
            raise UsageError(f"--mlflow {uri}: {database} is a directory; name a database file")
        if database.is_file() and database.stat().st_size:
            with open(database, "rb") as file:
                if file.read(16) != b"SQLite format 3\x00":
                    raise UsageError(f"--mlflow {uri}: {database} is not an SQLite database; name a new file or "
                                     "an MLflow database")
        _check_writable(database, "--mlflow")
        return
    if not uri.startswith(("http://", "https://")):
        raise UsageError(f"--mlflow {uri}: give sqlite:///PATH.db (MLflow's file store is deprecated) or a "
                         "tracking server's http(s):// address")
    _check_tracking_server(uri)


def _check_tracking_server(uri: str) -> None:
    """Refuse an http(s):// address where no MLflow tracking server answers its REST API within MLFLOW_SECONDS."""
    url = f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
    try:
        with urllib.request.urlopen(url, timeout=MLFLOW_SECONDS) as reply:
            status, body = reply.status, reply.read(2**16)
    except urllib.error.HTTPError as error:  # MLflow answers a missing experiment with 404 and a JSON error
        status, body = error.code, error.read(2**16)
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, TimeoutError):
            raise UsageError(f"--mlflow {uri}: no answer within {MLFLOW_SECONDS:g} s; is the tracking server "
                             "running there?") from None
        raise UsageError(f"--mlflow {uri}: cannot connect ({getattr(reason, 'strerror', None) or reason}); is "
                         "`mlflow server` running there?") from None
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or not ({"experiment", "error_code"} & set(answer)):
        raise UsageError(f"--mlflow {uri}: what answers there is not an MLflow tracking server (HTTP {status}, "
                         f"not MLflow's REST API)")
