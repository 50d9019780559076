"""The run store: atomic saves, claims, nothing duplicated, clear errors."""

import hashlib
import json
import math
import re
import sqlite3
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from conftest import SMALL_MNIST
from helpers import config_for

from regbench.config import identity_hash
from regbench.errors import UsageError
from regbench.outputs import check_output_dir, write_outputs
from regbench.store import APPLICATION_ID, LAYOUT, RunStore

V1_SCHEMA = """
CREATE TABLE runs (run_id TEXT PRIMARY KEY, config TEXT NOT NULL, record TEXT NOT NULL, epochs TEXT NOT NULL,
                   status TEXT NOT NULL, finished_at TEXT NOT NULL);
CREATE TABLE claims (run_id TEXT PRIMARY KEY, owner TEXT NOT NULL, claimed_at TEXT NOT NULL)
"""  # the layout of schema version 1 (tests/data/store-v1.sqlite was made by that regbench)

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
    assert config_for("none").run_id == config_for("none", dataset="mnist").run_id  # the default keeps its id
    assert config_for("none").run_id != config_for("none", dataset="fashion-mnist").run_id


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
                          (ours_in_name,
                           "not a regbench run store of version 1 (it holds runs, not the tables of this")):
        before = path.read_bytes()
        for create in (True, False):
            with pytest.raises(UsageError, match=re.escape(message)):
                RunStore(path, create=create)
        assert path.read_bytes() == before and not path.with_name(path.name + "-wal").exists()


def test_a_store_made_before_the_application_id_opens(tmp_path):
    legacy = tmp_path / "legacy.sqlite"
    with sqlite3.connect(legacy) as db:  # what the first version of the store wrote
        db.executescript(V1_SCHEMA)
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
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["x"] is None  # NaN written as JSON null
    assert manifest["files"] == {"runs.csv": hashlib.sha256((tmp_path / "runs.csv").read_bytes()).hexdigest()}
    assert len(paths) == 2


def test_a_rewrite_removes_the_files_of_the_earlier_comparison_it_does_not_write_again(tmp_path):
    import pandas as pd

    table = pd.DataFrame({"a": [1]})
    write_outputs(tmp_path, {"runs": table, "tuning": table}, {"sensitivity": b"png"}, {})
    (tmp_path / "notes.txt").write_text("mine")  # not written by regbench: kept
    write_outputs(tmp_path, {"runs": table}, {}, {})  # the same comparison, rewritten without --tune
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "notes.txt", "runs.csv"]
    assert list(json.loads((tmp_path / "manifest.json").read_text())["files"]) == ["runs.csv"]


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
    with sqlite3.connect(store.path) as db:  # a live process (our parent) holds an unexpired lease
        db.execute("INSERT INTO claims VALUES (?, ?, 'now', '2099-01-01')",
                   (config.run_id, f"{socket.gethostname()}:{os.getppid()}"))
    assert not store.claim(config.run_id)
    with sqlite3.connect(store.path) as db:  # its process is gone: the claim is stale and taken over at once
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


def test_a_lease_held_on_another_host_holds_until_it_expires_and_renewing_extends_it(tmp_path):
    store = RunStore(tmp_path / "store.sqlite")
    config = config_for("none")
    with sqlite3.connect(store.path) as db:  # a process on another host: its pid cannot be checked from here
        db.execute("INSERT INTO claims VALUES (?, 'elsewhere:1', '2026-01-01', '2099-01-01T00:00:00+00:00')",
                   (config.run_id,))
    assert not store.claim(config.run_id) and store.claims() == {config.run_id: "elsewhere:1"}
    with sqlite3.connect(store.path) as db:  # it stopped renewing: the lease has run out
        db.execute("UPDATE claims SET expires_at = '2026-01-01T00:02:00+00:00'")
    assert store.claims() == {} and store.claim(config.run_id)
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE claims SET expires_at = '2026-01-01T00:00:00+00:00'")
    store.renew([config.run_id])
    assert list(store.claims()) == [config.run_id]  # ours again, for LEASE_SECONDS from now


def test_a_failure_is_recorded_until_the_run_is_stored(tmp_path):
    store = RunStore(tmp_path / "store.sqlite")
    config = config_for("none")
    assert store.claim(config.run_id)
    store.record_failure(config.run_id, "KilledWorker: all 4 workers died")
    assert store.failures([config.run_id]) == {config.run_id: "KilledWorker: all 4 workers died"}
    assert store.claims() == {} and store.finished([config.run_id]) == set()
    store.save(config, RECORD, EPOCHS)
    assert store.failures([config.run_id]) == {}


def test_a_version_1_store_is_read_as_it_is_and_migrated_in_place_when_written(tmp_path):
    import shutil

    from click.testing import CliRunner

    from regbench.cli import cli

    path = tmp_path / "store-v1.sqlite"  # made by the regbench of schema version 1, with a claim left on it
    shutil.copy(Path(__file__).parent / "data" / "store-v1.sqlite", path)
    before = path.read_bytes()
    # 1. Read only (a dry run): its runs and its claim, and not a byte changed.
    reading = RunStore(path, create=False)
    runs = reading.load(reading.run_ids()).runs
    assert len(runs) == 4 and reading.claims() == {"feedfacefeedface": "otherhost:123"}
    assert path.read_bytes() == before
    # 2. Opened to write: migrated in place, the runs as they were, the old claim a lease that has expired.
    store = RunStore(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
        assert {table: [row[1] for row in db.execute(f"PRAGMA table_info('{table}')")] for table in LAYOUT} == LAYOUT
        assert db.execute("SELECT expires_at FROM claims").fetchall() == [("2026-11-24T00:02:00+00:00",)]
    pd.testing.assert_frame_equal(store.load(store.run_ids()).runs, runs)
    assert store.claim("feedfacefeedface")  # another host's claim no longer holds forever
    # 3. The comparison that made it reuses its runs.
    result = CliRunner().invoke(cli, ["compare", "--technique", "dropout", "--seeds", "2", "--train-size", "200",
                                      "--epochs", "1", "--hidden", "8", "--batch-size", "50", "--data",
                                      str(SMALL_MNIST), "--store", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "0 runs trained, 4 reused" in result.output


def test_jax_cnn_runs_on_the_cpu_say_their_steps_are_programs_apart():
    from regbench.config import STEPS_APART_IDENTITY

    apart = config_for("none", architecture="cnn", hidden=(16,), backend="jax")
    assert apart.steps_apart and STEPS_APART_IDENTITY.items() <= apart.identity().items()
    assert apart.eval_batch_size == 256 and config_for("none", backend="jax").eval_batch_size == 2048
    for scanned in (replace(apart, device="gpu"), replace(apart, backend="tensorflow"),
                    config_for("none", backend="jax")):
        assert not scanned.steps_apart and "jax_steps" not in scanned.identity()  # their ids stay as they were
    assert apart.legacy_run_id() == identity_hash({k: v for k, v in apart.identity().items() if k != "jax_steps"})
