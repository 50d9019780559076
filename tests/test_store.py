"""The run store: atomic saves, claims, nothing duplicated, clear errors."""

import math
import re
import sqlite3

import pytest

from regbench.errors import UsageError
from regbench.store import _SCHEMA, APPLICATION_ID, RunStore, check_output_dir, write_outputs
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
    with pytest.raises(UsageError, match="not a usable run store .not an SQLite database"):
        RunStore(garbage)
    newer = tmp_path / "newer.sqlite"
    with sqlite3.connect(newer) as db:
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(UsageError, match="schema version 99"):
        RunStore(newer)


def test_a_file_that_is_not_a_run_store_is_refused_and_left_byte_for_byte(tmp_path):
    foreign = tmp_path / "app.sqlite"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO customers VALUES (1, 'Ada')")
    ours_in_name = tmp_path / "layout.sqlite"  # our version number, another layout
    with sqlite3.connect(ours_in_name) as db:
        db.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, config TEXT)")
        db.execute("PRAGMA user_version = 1")
    for path, message in ((foreign, "not a regbench run store (an SQLite database of another application)"),
                          (ours_in_name, "not a regbench run store of version 1 (it holds runs, not the runs and")):
        before = path.read_bytes()
        for create in (True, False):
            with pytest.raises(UsageError, match=re.escape(message)):
                RunStore(path, create=create)
        assert path.read_bytes() == before and not path.with_name(path.name + "-wal").exists()


def test_a_store_made_before_the_application_id_opens(tmp_path):
    legacy = tmp_path / "legacy.sqlite"
    with sqlite3.connect(legacy) as db:  # what the first version of the store wrote
        db.executescript(_SCHEMA)
        db.execute("PRAGMA user_version = 1")
    config = config_for("none")
    store = RunStore(legacy)
    store.save(config, RECORD, EPOCHS)
    assert store.finished([config.run_id]) == {config.run_id}


def test_output_dir_must_be_a_writable_directory(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for bad in (a_file, a_file / "below"):
        with pytest.raises(UsageError, match="is a file"):
            check_output_dir(bad)
    out = check_output_dir(tmp_path / "new" / "dir")
    assert not out.exists()  # checking writes nothing; the directory is made when results are written


def test_outputs_are_written_whole_with_no_temporary_files_left(tmp_path):
    import pandas as pd

    paths = write_outputs(tmp_path, {"runs": pd.DataFrame({"a": [1, 2]})}, {}, {"x": math.nan})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "runs.csv"]
    assert (tmp_path / "manifest.json").read_text().strip() == '{\n  "x": null\n}'
    assert len(paths) == 2


def test_a_write_that_fails_midway_puts_the_old_files_back(tmp_path, monkeypatch):
    import os

    import pandas as pd

    write_outputs(tmp_path, {"runs": pd.DataFrame({"a": [1]}), "summary": pd.DataFrame({"b": [1]})}, {}, {"v": 1},
                  {"REPORT.md": "old"})
    (tmp_path / "other-results").mkdir()  # the directory also holds things regbench did not write here
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.is_file()}
    real_replace, calls = os.replace, []

    def replace_failing_third(source, target):
        calls.append(target)
        if len(calls) == 3:
            raise PermissionError(13, "Permission denied", str(target))
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace_failing_third)
    with pytest.raises(UsageError, match="cannot write .* its results are left as they were"):
        write_outputs(tmp_path, {"runs": pd.DataFrame({"a": [2]}), "summary": pd.DataFrame({"b": [2]})}, {},
                      {"v": 2}, {"REPORT.md": "new"})
    monkeypatch.undo()
    after = {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.is_file()}
    assert after == before and (tmp_path / "other-results").is_dir()  # every old file back, nothing staged left
    (tmp_path / "runs.csv").unlink()
    (tmp_path / "runs.csv").mkdir()  # a directory where a file goes: refused before anything is written
    with pytest.raises(UsageError, match="runs.csv: is a directory where regbench writes a file"):
        write_outputs(tmp_path, {"runs": pd.DataFrame({"a": [3]})}, {}, {"v": 3})
    assert (tmp_path / "manifest.json").read_bytes() == before["manifest.json"]


def test_claims_keep_two_processes_off_the_same_run(tmp_path):
    import os
    import socket

    store = RunStore(tmp_path / "store.sqlite")
    config = config_for("none")
    with sqlite3.connect(store.path) as db:  # a live process (our parent) holds the claim
        db.execute("INSERT INTO claims VALUES (?, ?, 'now')", (config.run_id, f"{socket.gethostname()}:{os.getppid()}"))
    assert not store.claim(config.run_id)
    with sqlite3.connect(store.path) as db:  # its process is gone: the claim is stale and taken over
        db.execute("UPDATE claims SET owner = ?", (f"{socket.gethostname()}:{2**22 + 12345}",))
    assert store.claim(config.run_id) and store.claim(config.run_id)  # ours now, and again
    store.save(config, RECORD, EPOCHS)
    assert not store.claim(config.run_id)  # stored: nobody trains it again
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0


def test_a_failed_save_is_a_clear_error_that_keeps_earlier_runs(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "store.sqlite")
    first, second = config_for("none"), config_for("none", seed=1)
    store.save(first, RECORD, EPOCHS)

    def disk_full(*args):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store, "_insert", disk_full)
    with pytest.raises(UsageError, match="disk is full.*every run stored before it is kept"):
        store.save(second, RECORD, EPOCHS)
    assert store.finished([first.run_id, second.run_id]) == {first.run_id}


def test_too_little_free_space_is_refused_before_training(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 10 * 2**20))
    with pytest.raises(UsageError, match="only 10.0 MiB free"):
        check_output_dir(tmp_path / "out")
    assert not (tmp_path / "out").exists()
