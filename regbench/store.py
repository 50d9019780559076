"""The only module that writes results: the SQLite run store and a comparison's output files."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import sqlite3
from contextlib import closing
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from regbench.config import WEIGHT_BIN_EDGES, RunConfig
from regbench.errors import UsageError

SCHEMA_VERSION = 1
MIN_FREE_BYTES = 64 * 2**20  # free disk space needed before a sweep starts (store + reports)
REQUIRED_COLUMNS = {
    "runs": {"run_id", "technique", "seed", "status", "test_accuracy", "gap", "epochs_run", "seconds_per_epoch"},
    "epochs": {"run_id", "technique", "epoch", "val_accuracy", "val_crossentropy"},
    "weights": {"run_id", "technique", "bin_low", "bin_high", "count"},
}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    config      TEXT NOT NULL,  -- RunConfig as JSON
    record      TEXT NOT NULL,  -- the flat run record as JSON
    epochs      TEXT NOT NULL,  -- list of per-epoch rows as JSON
    status      TEXT NOT NULL,  -- ok | diverged
    finished_at TEXT NOT NULL   -- UTC, ISO 8601
);
CREATE TABLE IF NOT EXISTS claims (
    run_id     TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,   -- host:pid of the process training the run
    claimed_at TEXT NOT NULL
)
"""
OWNER = f"{socket.gethostname()}:{os.getpid()}"


def _now() -> str:
    """Return the UTC time as ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _owner_alive(owner: str) -> bool:
    """Return whether the claiming process still runs (a process on another host counts as alive)."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by another user
    return True


def _json(value) -> str:
    """Serialize with NaN stored as null (strict JSON)."""
    return json.dumps(_nan_to_none(value), allow_nan=False)


def _nan_to_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(item) for item in value]
    return value


@dataclass(frozen=True)
class RunTables:
    """The stored results of a set of runs, as flat tables."""

    runs: pd.DataFrame  # a row per run: configuration and record
    epochs: pd.DataFrame  # a row per run and epoch
    weights: pd.DataFrame  # a row per run and |w| histogram bin: bin_low <= |w| < bin_high, count


class RunStore:
    """Finished runs in one SQLite file; each run is stored in one transaction the moment it ends."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(self._connect()) as db, db:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version not in (0, SCHEMA_VERSION):
                    raise UsageError(
                        f"{self.path}: run store has schema version {version}; this regbench "
                        f"reads version {SCHEMA_VERSION}. Use another --store path"
                    )
                db.executescript(_SCHEMA)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as error:
            raise UsageError(f"{self.path}: not a usable run store ({error})") from None
        except OSError as error:
            raise UsageError(f"{self.path}: cannot create the run store ({error.strerror})") from None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60)
        db.execute("PRAGMA journal_mode = WAL")
        return db

    def claim(self, run_id: str) -> bool:
        """Take the right to train `run_id`; False if it is stored or a live process is training it."""
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")  # one claimer at a time
            try:
                if db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
                    return False
                row = db.execute("SELECT owner FROM claims WHERE run_id = ?", (run_id,)).fetchone()
                if row and row[0] != OWNER and _owner_alive(row[0]):
                    return False
                db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?)", (run_id, OWNER, _now()))
                return True
            finally:
                db.execute("COMMIT")

    def release(self, run_id: str) -> None:
        """Give up this process's claim on `run_id` (after an interruption or a failure)."""
        with closing(self._connect()) as db, db:
            db.execute("DELETE FROM claims WHERE run_id = ? AND owner = ?", (run_id, OWNER))

    def finished(self, run_ids: list[str]) -> set[str]:
        """Return which of `run_ids` are already stored."""
        with closing(self._connect()) as db:
            marks = ",".join("?" * len(run_ids))
            rows = db.execute(f"SELECT run_id FROM runs WHERE run_id IN ({marks})", run_ids)
            return {row[0] for row in rows}

    def save(self, config: RunConfig, record: dict, epochs: list[dict]) -> None:
        """Store one finished run atomically (a second save of the same run is ignored)."""
        try:
            self._insert(config, record, epochs)
        except (sqlite3.OperationalError, OSError) as error:
            raise UsageError(
                f"{self.path}: cannot store run {config.run_id} ({error}); every run stored before it "
                "is kept: free disk space and rerun the same command"
            ) from None

    def _insert(self, config: RunConfig, record: dict, epochs: list[dict]) -> None:
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                (config.run_id, _json(asdict(config)), _json(record), _json(epochs), record["status"], _now()),
            )
            db.execute("DELETE FROM claims WHERE run_id = ?", (config.run_id,))

    def weights_path(self, run_id: str) -> Path:
        """Return where the trained weights of `run_id` are kept (for studies that inspect models)."""
        return self.path.parent / "models" / f"{run_id}.weights.h5"

    def save_weights(self, run_id: str, model) -> None:
        """Keep the trained weights of `run_id` (Keras' .weights.h5), written atomically."""
        path = self.weights_path(run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{run_id}.{os.getpid()}.partial.weights.h5")  # Keras needs this suffix
        try:
            model.save_weights(temp)
            os.replace(temp, path)
        except OSError as error:
            raise UsageError(f"{path}: cannot keep the trained weights ({error.strerror}); "
                             "every run stored before is kept") from None
        finally:
            temp.unlink(missing_ok=True)

    def configs(self, run_ids: list[str]) -> list[RunConfig]:
        """Return the stored configurations of `run_ids`, in that order."""
        with closing(self._connect()) as db:
            marks = ",".join("?" * len(run_ids))
            stored = dict(db.execute(f"SELECT run_id, config FROM runs WHERE run_id IN ({marks})", run_ids))
        configs = []
        for run_id in run_ids:
            values = json.loads(stored[run_id])
            values["hidden"] = tuple(values["hidden"])
            values["technique_params"] = tuple(tuple(pair) for pair in values["technique_params"])
            configs.append(RunConfig(**values))
        return configs

    def load(self, run_ids: list[str]) -> RunTables:
        """Return the tables of `run_ids`: a row per run, per run and epoch, per run and |w| bin."""
        with closing(self._connect()) as db:
            marks = ",".join("?" * len(run_ids))
            stored = db.execute(
                f"SELECT run_id, config, record, epochs, finished_at FROM runs WHERE run_id IN ({marks})",
                run_ids,
            ).fetchall()
        order = {run_id: index for index, run_id in enumerate(run_ids)}
        stored.sort(key=lambda row: order[row[0]])
        runs, epochs, weights = [], [], []
        for run_id, config, record, epoch_rows, finished_at in stored:
            config, record = json.loads(config), json.loads(record)
            config["hidden"] = ",".join(str(width) for width in config["hidden"])
            config["technique_params"] = " ".join(f"{name}={value:g}" for name, value in config["technique_params"])
            key = {"run_id": run_id, "technique": config["technique"], "seed": config["seed"]}
            histogram = record.pop("weight_histogram", None) or []
            runs.append({"run_id": run_id, **config, **record, "finished_at": finished_at})
            epochs.extend({**key, **row} for row in json.loads(epoch_rows))
            weights.extend(
                {**key, "bin_low": WEIGHT_BIN_EDGES[index], "bin_high": WEIGHT_BIN_EDGES[index + 1], "count": count}
                for index, count in enumerate(histogram)
            )
        return RunTables(_frame(runs), _frame(epochs), _frame(weights))


def _frame(rows: list[dict]) -> pd.DataFrame:
    """Build a table whose numeric columns are numeric even where JSON stored NaN as null."""
    frame = pd.DataFrame(rows)
    for column in frame.columns:
        values = frame[column].dropna()
        if frame[column].dtype == object and all(
            isinstance(value, (int, float)) and not isinstance(value, bool) for value in values
        ):
            frame[column] = pd.to_numeric(frame[column])
    return frame


def check_output_dir(path: str | os.PathLike) -> Path:
    """Check, before any training and without writing, that `path` can hold a comparison's results."""
    out = Path(path)
    existing = next(parent for parent in [out, *out.parents] if parent.exists())
    if not existing.is_dir():
        raise UsageError(f"--out {out}: {existing} is a file; expected a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: {existing} is not writable")
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        raise UsageError(f"--out {out}: only {free / 2**20:.1f} MiB free on its disk; "
                         f"regbench needs at least {MIN_FREE_BYTES / 2**20:.0f} MiB for its results")
    return out


def _write_atomically(path: Path, write) -> None:
    """Call write(temp_path), then rename it over `path`, so readers never see half a file."""
    temp = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        write(temp)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def write_outputs(out: Path, tables: dict, images: dict, manifest: dict, texts: dict | None = None) -> list[Path]:
    """Write tables as CSV, PNG images, text files and the manifest as JSON into `out`; return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in tables.items():
        path = out / f"{name}.csv"
        _write_atomically(path, lambda temp, table=table: table.to_csv(temp, index=False))
        written.append(path)
    for name, data in images.items():
        path = out / f"{name}.png"
        _write_atomically(path, lambda temp, data=data: Path(temp).write_bytes(data))
        written.append(path)
    texts = {**(texts or {}), "manifest.json": json.dumps(_nan_to_none(manifest), indent=2, allow_nan=False) + "\n"}
    for name, text in texts.items():
        path = out / name
        _write_atomically(path, lambda temp, text=text: Path(temp).write_text(text, encoding="utf-8"))
        written.append(path)
    return written


def read_comparison(directory: Path) -> tuple[RunTables, dict]:
    """Read a compare output directory back: its run tables and manifest, or a UsageError saying what is wrong."""
    if not directory.is_dir():
        raise UsageError(f"{directory}: not a directory; expected the output directory of `regbench compare`")
    try:
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        tables = RunTables(*(pd.read_csv(directory / f"{name}.csv") for name in ("runs", "epochs", "weights")))
    except FileNotFoundError as error:
        raise UsageError(f"{directory}: missing {Path(error.filename).name}; "
                         "expected the output directory of `regbench compare`") from None
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise UsageError(f"{directory}: damaged results ({type(error).__name__}: {error})") from None
    missing = [key for key in ("config", "techniques", "seeds", "run_ids", "data", "device", "versions")
               if key not in manifest]
    if missing:
        raise UsageError(f"{directory}/manifest.json: missing {', '.join(missing)}; written by another regbench?")
    for name, required in REQUIRED_COLUMNS.items():
        absent = required - set(getattr(tables, name).columns)
        if absent:
            raise UsageError(f"{directory}/{name}.csv: missing column(s) {', '.join(sorted(absent))}; "
                             "damaged, or written by another regbench?")
    return tables, manifest
