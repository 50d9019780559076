"""The SQLite run store: every run trained, its claims (leases) and failures; the only writer of runs.

A comparison's output directory is regbench.outputs'."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import sqlite3
import time
from contextlib import closing
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from regbench.config import WEIGHT_BIN_EDGES, RunConfig, with_added_defaults
from regbench.errors import UsageError

SCHEMA_VERSION = 2  # 2: claims are leases that expire; failures recorded (version 1 is migrated in place)
LEASE_SECONDS = 120  # a claim expires this long after its owner last renewed it
MIN_FREE_BYTES = 64 * 2**20  # free disk space needed before a sweep starts (store + reports)
_TABLES = {"runs": """
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    config      TEXT NOT NULL,  -- RunConfig as JSON
    record      TEXT NOT NULL,  -- the flat run record as JSON
    epochs      TEXT NOT NULL,  -- list of per-epoch rows as JSON
    status      TEXT NOT NULL,  -- ok | diverged | partial (a tuning rung's first epochs)
    finished_at TEXT NOT NULL   -- UTC, ISO 8601
)""", "claims": """
CREATE TABLE IF NOT EXISTS claims (
    run_id     TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,   -- host:pid of the regbench process that has the run trained
    claimed_at TEXT NOT NULL,
    expires_at TEXT NOT NULL    -- UTC; renewed while the run trains, free for anyone after
)""", "failures": """
CREATE TABLE IF NOT EXISTS failures (
    run_id    TEXT PRIMARY KEY,
    owner     TEXT NOT NULL,    -- the process whose workers failed it
    error     TEXT NOT NULL,    -- the worker's last error
    failed_at TEXT NOT NULL     -- a rerun tries the run again; storing it clears this row
)"""}
_SCHEMA = ";".join(_TABLES.values())
LAYOUT = {"runs": ["run_id", "config", "record", "epochs", "status", "finished_at"],
          "claims": ["run_id", "owner", "claimed_at", "expires_at"],
          "failures": ["run_id", "owner", "error", "failed_at"]}  # the columns _SCHEMA makes, checked on opening
LAYOUT_V1 = {"runs": LAYOUT["runs"], "claims": ["run_id", "owner", "claimed_at"]}  # a version 1 store's
APPLICATION_ID = 0x52474231  # 'RGB1': marks an SQLite file as a regbench run store
OWNER = f"{socket.gethostname()}:{os.getpid()}"


def _now(later_seconds: float = 0) -> str:
    """Return the UTC time (plus `later_seconds`) as ISO 8601."""
    return (datetime.now(UTC) + timedelta(seconds=later_seconds)).isoformat(timespec="seconds")


def _owner_alive(owner: str) -> bool:
    """Return whether the claiming process still runs (one on another host counts as alive: its lease tells)."""
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


def _lease_holds(owner: str, expires_at: str) -> bool:
    """Return whether a claim still holds: its lease has not expired and its owner is not seen to have ended."""
    return expires_at > _now() and _owner_alive(owner)


def _json(value) -> str:
    """Serialize with NaN stored as null (strict JSON)."""
    return json.dumps(nan_to_none(value), allow_nan=False)


def nan_to_none(value):
    """Return `value` with every non-finite float (in dicts and lists too) as None, as JSON keeps it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: nan_to_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [nan_to_none(item) for item in value]
    return value


@dataclass(frozen=True)
class RunTables:
    """The stored results of a set of runs, as flat tables."""

    runs: pd.DataFrame  # a row per run: configuration and record
    epochs: pd.DataFrame  # a row per run and epoch
    weights: pd.DataFrame  # a row per run and |w| histogram bin: bin_low <= |w| < bin_high, count

    def labelled(self, arms: dict[str, str]) -> RunTables:
        """Return the tables with each run's technique column holding its arm's label (`arms`: run id -> label),
        so that two arms of one technique at different values stay apart."""
        def relabel(table: pd.DataFrame) -> pd.DataFrame:
            return table.assign(technique=table["run_id"].map(arms).fillna(table["technique"])) if len(table) else table

        return RunTables(relabel(self.runs), relabel(self.epochs), relabel(self.weights))


class RunStore:
    """Finished runs in one SQLite file; each run is stored in one transaction the moment it ends.

    A file is opened as a store only if it is one (its application id, or the layout of a store
    made before the id was set); anything else is refused and left byte for byte as it was.
    `create=False` opens for reading only: a missing file then reads as an empty store.
    """

    def __init__(self, path: str | os.PathLike, create: bool = True):
        self.path = Path(path)
        exists = self.path.is_file() and self.path.stat().st_size > 0
        if self.path.is_dir():
            raise UsageError(f"{self.path}: is a directory; --store takes a file path")
        self.writable = not exists or (os.access(self.path, os.W_OK)
                                       and os.access(self.path.parent, os.W_OK | os.X_OK))
        version = self._check_identity() if exists else None
        if version == 1 and create and self.writable:
            self._migrate_from_v1()
            version = SCHEMA_VERSION
        self.version = version or SCHEMA_VERSION  # a version 1 store opened read only stays version 1
        if version or not create:
            self.readable = bool(version)
            return
        check_filesystem(self.path.parent, "--store")
        try:  # in one transaction: another process opening it meanwhile sees an empty database or the whole store
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(self._connect()) as db:
                db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA}; PRAGMA application_id = {APPLICATION_ID}; "
                                 f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT")
        except sqlite3.DatabaseError as error:
            raise UsageError(f"{self.path}: cannot create the run store ({error})") from None
        except OSError as error:
            raise UsageError(f"{self.path}: cannot create the run store ({error.strerror})") from None
        self.readable = True

    def _check_identity(self) -> int:
        """Return the store's schema version (0: an empty database); raise UsageError unless the file is a run
        store of this layout or of version 1's (read only; nothing is written)."""
        with open(self.path, "rb") as file:
            if file.read(16) != b"SQLite format 3\x00":
                raise UsageError(f"{self.path}: not a usable run store (not an SQLite database); "
                                 "use another --store path")
        try:
            with closing(self._connect_read_only()) as db:
                application, version = (db.execute(f"PRAGMA {name}").fetchone()[0]
                                        for name in ("application_id", "user_version"))
                layout = {table: [row[1] for row in db.execute(f"PRAGMA table_info('{table}')")]
                          for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as error:
            raise UsageError(f"{self.path}: not a usable run store ({error}); use another --store path") from None
        if (application, version, layout) == (0, 0, {}):
            return 0  # an empty database: a store another process is creating this moment (or an empty file)
        if application not in (APPLICATION_ID, 0) or (application == 0 and version != 1):
            raise UsageError(f"{self.path}: not a regbench run store (an SQLite database of another application); "
                             "use another --store path")
        if version not in (1, SCHEMA_VERSION):
            raise UsageError(f"{self.path}: run store has schema version {version}; this regbench "
                             f"reads versions 1 and {SCHEMA_VERSION}. Use another --store path")
        if layout != (LAYOUT if version == SCHEMA_VERSION else LAYOUT_V1):
            tables = ", ".join(sorted(layout)) or "no tables"
            raise UsageError(f"{self.path}: not a regbench run store of version {version} (it holds {tables}, "
                             f"not the tables of this regbench); use another --store path")
        return version

    def _migrate_from_v1(self) -> None:
        """Bring a version 1 store to this layout in place, in one transaction: each claim becomes a lease that
        expires LEASE_SECONDS after it was taken, and the failures table is added."""
        try:
            with closing(self._connect()) as db:
                db.execute("BEGIN IMMEDIATE")
                if db.execute("PRAGMA user_version").fetchone()[0] == 1:  # not migrated meanwhile by another process
                    db.execute("ALTER TABLE claims ADD COLUMN expires_at TEXT NOT NULL DEFAULT ''")
                    db.execute("UPDATE claims SET expires_at = strftime('%Y-%m-%dT%H:%M:%S+00:00', claimed_at, ?)",
                               (f"+{LEASE_SECONDS} seconds",))
                    db.execute(_TABLES["failures"])
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.execute("COMMIT")
        except sqlite3.DatabaseError as error:
            raise UsageError(f"{self.path}: cannot migrate the run store from version 1 ({error}); "
                             "it is left as it was") from None

    def _connect_read_only(self) -> sqlite3.Connection:
        """Open the store for reading; one on a read-only file or mount is opened as immutable (SQLite could make
        no -shm file for its write-ahead log there), unless a -wal file beside it may hold runs."""
        uri = self.path.resolve().as_uri()
        if self.writable or Path(f"{self.path}-wal").exists():
            return sqlite3.connect(f"{uri}?mode=ro", uri=True)
        return sqlite3.connect(f"{uri}?immutable=1", uri=True)

    def require_writable(self, what: str) -> None:
        """Raise UsageError saying that `what` cannot be done, unless the store can be written."""
        if not self.writable:
            raise UsageError(f"{self.path}: read-only (its file or directory cannot be written), so {what}; its runs "
                             "can still be listed, reported, verified and exported. Use another --store, or make it "
                             "writable")

    def _connect(self) -> sqlite3.Connection:
        if not self.writable:
            return self._connect_read_only()
        db = sqlite3.connect(self.path, timeout=60)
        for attempt in range(600):  # switching to WAL does not wait for another process creating the store
            try:
                db.execute("PRAGMA journal_mode = WAL")
                return db
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or attempt == 599:
                    raise
                time.sleep(0.1)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def claim(self, run_id: str) -> bool:
        """Take a lease on training `run_id`; False if it is stored or another process's lease on it holds.

        A lease holds until it expires (LEASE_SECONDS after its owner last renewed it), or until its owner,
        a process on this host, is seen to have ended.
        """
        self.require_writable(f"run {run_id} cannot be trained into it")
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")  # one claimer at a time
            try:
                if db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
                    return False
                row = db.execute("SELECT owner, expires_at FROM claims WHERE run_id = ?", (run_id,)).fetchone()
                if row and row[0] != OWNER and _lease_holds(*row):
                    return False
                db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?)",
                           (run_id, OWNER, _now(), _now(LEASE_SECONDS)))
                return True
            finally:
                db.execute("COMMIT")

    def renew(self, run_ids: list[str]) -> None:
        """Extend this process's leases on `run_ids` by LEASE_SECONDS from now."""
        with closing(self._connect()) as db, db:
            db.executemany("UPDATE claims SET expires_at = ? WHERE run_id = ? AND owner = ?",
                           [(_now(LEASE_SECONDS), run_id, OWNER) for run_id in run_ids])

    def release(self, run_id: str) -> None:
        """Give up this process's claim on `run_id` (after an interruption or a failure)."""
        with closing(self._connect()) as db, db:
            db.execute("DELETE FROM claims WHERE run_id = ? AND owner = ?", (run_id, OWNER))

    def record_failure(self, run_id: str, error: str) -> None:
        """Record that `run_id` failed on the workers with `error` and give up its claim; a rerun tries it again."""
        with closing(self._connect()) as db, db:
            db.execute("INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?)", (run_id, OWNER, error, _now()))
            db.execute("DELETE FROM claims WHERE run_id = ? AND owner = ?", (run_id, OWNER))

    def failures(self, run_ids: list[str]) -> dict[str, str]:
        """Return the recorded failures among `run_ids` (not stored since): run id -> the worker's error."""
        if not self.readable or self.version < SCHEMA_VERSION:
            return {}
        with closing(self._connect()) as db:
            marks = ",".join("?" * len(run_ids))
            return dict(db.execute(f"SELECT run_id, error FROM failures WHERE run_id IN ({marks})", run_ids))

    def finished(self, run_ids: list[str]) -> set[str]:
        """Return which of `run_ids` are already stored."""
        if not self.readable:
            return set()
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
            db.execute("DELETE FROM failures WHERE run_id = ?", (config.run_id,))

    def weights_path(self, run_id: str) -> Path:
        """Return where the trained weights of `run_id` are kept (for studies that inspect models)."""
        return self.path.parent / "models" / f"{run_id}.weights.h5"

    def save_weights(self, run_id: str, weights: bytes) -> None:
        """Keep the trained weights of `run_id` (the bytes of Keras' .weights.h5 file), written atomically."""
        path = self.weights_path(run_id)
        temp = path.with_name(f".{run_id}.{os.getpid()}.partial.weights.h5")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temp.write_bytes(weights)
            os.replace(temp, path)
        except OSError as error:
            raise UsageError(f"{path}: cannot keep the trained weights ({error.strerror}); "
                             "every run stored before is kept") from None
        finally:
            temp.unlink(missing_ok=True)

    def configs(self, run_ids: list[str]) -> list[RunConfig]:
        """Return the stored configurations of `run_ids`, in that order."""
        if not self.readable:
            return []
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

    def run_ids(self) -> list[str]:
        """Return every stored run id, oldest first."""
        if not self.readable:
            return []
        with closing(self._connect()) as db:
            return [row[0] for row in db.execute("SELECT run_id FROM runs ORDER BY finished_at, rowid")]

    def claims(self) -> dict[str, str]:
        """Return the runs whose lease holds now, as claim() judges it: run id -> owner."""
        if not self.readable:
            return {}
        expiry = "expires_at" if self.version == SCHEMA_VERSION else "'9999'"  # version 1 (read only): no expiry
        with closing(self._connect()) as db:
            held = db.execute(f"SELECT run_id, owner, {expiry} FROM claims").fetchall()
        return {run_id: owner for run_id, owner, expires_at in held if _lease_holds(owner, expires_at)}

    def remove(self, run_ids: list[str]) -> None:
        """Delete `run_ids` from the store, with their kept weights, in one transaction."""
        self.require_writable("nothing can be removed from it")
        with closing(self._connect()) as db, db:
            db.executemany("DELETE FROM runs WHERE run_id = ?", [(run_id,) for run_id in run_ids])
        for run_id in run_ids:
            self.weights_path(run_id).unlink(missing_ok=True)

    def load(self, run_ids: list[str]) -> RunTables:
        """Return the tables of `run_ids`: a row per run, per run and epoch, per run and |w| bin."""
        if not self.readable:
            return RunTables(pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
        with closing(self._connect()) as db:
            marks = ",".join("?" * len(run_ids))
            stored = db.execute(
                f"SELECT run_id, config, record, epochs, finished_at FROM runs WHERE run_id IN ({marks})",
                run_ids,
            ).fetchall()
        order = {run_id: index for index, run_id in enumerate(run_ids)}
        stored.sort(key=lambda row: order[row[0]])
        runs: list[dict] = []
        epochs: list[dict] = []
        weights: list[dict] = []
        for run_id, config, record, epoch_rows, finished_at in stored:
            config, record = with_added_defaults(json.loads(config)), json.loads(record)
            config["hidden"] = ",".join(str(width) for width in config["hidden"])
            config["technique_params"] = params_text(config["technique_params"])
            key = {"run_id": run_id, "technique": config["technique"], "seed": config["seed"]}
            histogram = record.pop("weight_histogram", None) or []
            runs.append({"run_id": run_id, **config, **record, "finished_at": finished_at})
            epochs.extend({**key, **row} for row in json.loads(epoch_rows))
            weights.extend(
                {**key, "bin_low": WEIGHT_BIN_EDGES[index], "bin_high": WEIGHT_BIN_EDGES[index + 1], "count": count}
                for index, count in enumerate(histogram)
            )
        return RunTables(_frame(runs), _frame(epochs), _frame(weights))


def params_text(params) -> str:
    """Write a run's technique parameters as its table's technique_params column holds them: 'l2=0.001 rate=0.5'."""
    return " ".join(f"{name}={value:g}" for name, value in params)


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


def check_filesystem(path: Path, option: str) -> None:
    """Raise UsageError unless the disk under `path` can hold files and has MIN_FREE_BYTES free."""
    existing = next(parent for parent in [path, *path.parents] if parent.exists())
    usage = shutil.disk_usage(existing)
    if usage.total == 0:
        raise UsageError(f"{option} {path}: {existing} is on a file system that holds no files (such as /proc); "
                         "choose a directory on a disk")
    if usage.free < MIN_FREE_BYTES:
        raise UsageError(f"{option} {path}: only {usage.free / 2**20:.1f} MiB free on its disk; "
                         f"regbench needs at least {MIN_FREE_BYTES / 2**20:.0f} MiB for its results")
