"""The run store: atomic saves, resume after a kill, nothing duplicated, clear errors."""

import math
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from regbench.errors import UsageError
from regbench.store import RunStore, prepare_output_dir, write_outputs
from helpers import config_for

RECORD = {"status": "ok", "test_accuracy": 0.9, "diverged_epoch": None, "gap": math.nan}
EPOCHS = [{"epoch": 1, "val_accuracy": 0.8}, {"epoch": 2, "val_accuracy": 0.85}]


def test_saved_runs_load_back_as_flat_rows(tmp_path):
    store = RunStore(tmp_path / "store.sqlite")
    first, second = config_for("none"), config_for("dropout", {"rate": 0.25})
    store.save(first, RECORD, EPOCHS)
    store.save(second, {**RECORD, "test_accuracy": 0.8}, EPOCHS[:1])
    assert store.finished([first.run_id, second.run_id, "missing"]) == {first.run_id, second.run_id}
    tables = store.load([second.run_id, first.run_id])
    runs, epochs = tables.runs, tables.epochs
    assert list(runs["run_id"]) == [second.run_id, first.run_id]  # in the order asked
    assert list(runs["technique_params"]) == ["input_rate=0 rate=0.25", ""]
    assert list(runs["test_accuracy"]) == [0.8, 0.9] and math.isnan(runs["gap"][0])
    assert len(epochs) == 3 and set(epochs["technique"]) == {"none", "dropout"}


def test_saving_a_run_twice_keeps_one_copy(tmp_path):
    store = RunStore(tmp_path / "store.sqlite")
    config = config_for("none")
    store.save(config, RECORD, EPOCHS)
    store.save(config, {**RECORD, "test_accuracy": 0.1}, EPOCHS)
    runs = store.load([config.run_id]).runs
    assert len(runs) == 1 and runs["test_accuracy"][0] == 0.9


def test_run_identity_covers_every_field():
    assert config_for("none").run_id == config_for("none").run_id
    assert config_for("none").run_id != config_for("none", seed=1).run_id
    assert config_for("dropout").run_id != config_for("dropout", {"rate": 0.4}).run_id
    assert config_for("none").run_id != config_for("none", backend="jax").run_id


def test_damaged_or_foreign_stores_are_clear_errors(tmp_path):
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(UsageError, match="not a usable run store"):
        RunStore(garbage)
    newer = tmp_path / "newer.sqlite"
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(UsageError, match="schema version 99"):
        RunStore(newer)


def test_output_dir_must_be_a_writable_directory(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        prepare_output_dir(a_file)
    out = prepare_output_dir(tmp_path / "new" / "dir")
    assert out.is_dir() and list(out.iterdir()) == []


def test_outputs_are_written_whole_with_no_temporary_files_left(tmp_path):
    import pandas as pd

    paths = write_outputs(tmp_path, {"runs": pd.DataFrame({"a": [1, 2]})}, {}, {"x": math.nan})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "runs.csv"]
    assert (tmp_path / "manifest.json").read_text().strip() == '{\n  "x": null\n}'
    assert len(paths) == 2


def stored_runs(path):
    if not path.exists():
        return []
    with sqlite3.connect(path, timeout=30) as db:
        return [row[0] for row in db.execute("SELECT run_id FROM runs")]


def test_a_killed_compare_resumes_with_nothing_lost_or_duplicated(tmp_path):
    store = tmp_path / "store.sqlite"
    command = [sys.executable, "-m", "regbench", "compare", "--technique", "dropout", "--train-size", "300",
               "--epochs", "3", "--seeds", "2", "--store", str(store), "--out", str(tmp_path / "out")]
    # 1. Kill the sweep as soon as its first run is stored.
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not stored_runs(store) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    stored_before = stored_runs(store)
    assert 1 <= len(stored_before) < 4
    # 2. The same command finishes only what is missing.
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{4 - len(stored_before)} runs trained, {len(stored_before)} reused" in done.stdout
    after = stored_runs(store)
    assert len(after) == len(set(after)) == 4 and set(stored_before) <= set(after)
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
