"""The only module that writes results: the SQLite run store and a comparison's output files."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import tempfile
from contextlib import closing
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from regbench.config import WEIGHT_BIN_EDGES, RunConfig
from regbench.errors import UsageError

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    config      TEXT NOT NULL,  -- RunConfig as JSON
    record      TEXT NOT NULL,  -- the flat run record as JSON
    epochs      TEXT NOT NULL,  -- list of per-epoch rows as JSON
    status      TEXT NOT NULL,  -- ok | diverged
    finished_at TEXT NOT NULL   -- UTC, ISO 8601
)
"""


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
                db.execute(_SCHEMA)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as error:
            raise UsageError(f"{self.path}: not a usable run store ({error})") from None
        except OSError as error:
            raise UsageError(f"{self.path}: cannot create the run store ({error.strerror})") from None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60)
        db.execute("PRAGMA journal_mode = WAL")
        return db

    def finished(self, run_ids: list[str]) -> set[str]:
        """Return which of `run_ids` are already stored."""
        with closing(self._connect()) as db:
            marks = ",".join("?" * len(run_ids))
            rows = db.execute(f"SELECT run_id FROM runs WHERE run_id IN ({marks})", run_ids)
            return {row[0] for row in rows}

    def save(self, config: RunConfig, record: dict, epochs: list[dict]) -> None:
        """Store one finished run atomically (a second save of the same run is ignored)."""
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                (
                    config.run_id, _json(asdict(config)), _json(record), _json(epochs),
                    record["status"], datetime.now(timezone.utc).isoformat(timespec="seconds"),
                ),
            )

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


def prepare_output_dir(path: str | os.PathLike) -> Path:
    """Create `path` if needed and check it is a writable directory, before any training."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file; expected a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out):
            pass
    except OSError as error:
        raise UsageError(f"--out {out}: not writable ({error.strerror})") from None
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
    return tables, manifest
