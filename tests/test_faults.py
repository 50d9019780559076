"""Faults: killed sweeps, two sweeps on one store, damaged results, and verification against the store."""

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from regbench.cli import cli

SWEEP = ["compare", "--technique", "dropout", "--train-size", "200", "--epochs", "1", "--seeds", "2"]
NUMBERS = ["run_id", "test_accuracy", "test_crossentropy", "train_accuracy", "weights_l2", "best_epoch", "status"]


def default_sigint():
    """Let the child take Ctrl-C even when this test runs in a background job (which ignores SIGINT)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stored_runs(path):
    if not path.exists():
        return []
    with sqlite3.connect(path, timeout=30) as db:
        try:
            return [row[0] for row in db.execute("SELECT run_id FROM runs")]
        except sqlite3.OperationalError:  # the schema is being created
            return []


def wait_for_runs(store, count, process, limit=240):
    deadline = time.monotonic() + limit
    while len(stored_runs(store)) < count and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The runs of the sweep done in one go, in this process."""
    from click.testing import CliRunner

    path = tmp_path_factory.mktemp("uninterrupted")
    data = Path(__file__).parent / "data" / "mnist-small.npz"  # module fixtures run before the autouse env
    result = CliRunner().invoke(cli, [*SWEEP, "--out", str(path / "out"), "--store", str(path / "store.sqlite"),
                                      "--data", str(data)])
    assert result.exit_code == 0, result.output
    return pd.read_csv(path / "out" / "runs.csv")[NUMBERS].sort_values("run_id").reset_index(drop=True)


@pytest.mark.parametrize("kill, jobs", [(signal.SIGKILL, "1"), (signal.SIGINT, "1"), (signal.SIGINT, "2")],
                         ids=["SIGKILL", "SIGINT", "SIGINT --jobs 2"])
def test_a_killed_sweep_resumes_to_the_same_runs_as_an_uninterrupted_one(tmp_path, uninterrupted, kill, jobs):
    store = tmp_path / "store.sqlite"
    command = [sys.executable, "-m", "regbench", *SWEEP, "--store", str(store), "--out", str(tmp_path / "out")]
    # 1. Kill the sweep once its first run is stored; Ctrl-C reaches the whole process group, as in a terminal
    #    (with --jobs 2, the Dask workers too).
    process = subprocess.Popen([*command, "--jobs", jobs], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=lambda: (default_sigint(), os.setpgrp()))
    wait_for_runs(store, 1, process)
    os.killpg(process.pid, kill)
    _, stderr = process.communicate(timeout=120)
    stored_before = stored_runs(store)
    assert 1 <= len(stored_before) <= 4
    if kill == signal.SIGINT:
        assert process.returncode == 130
        after_progress = [line for line in stderr.splitlines() if not line.startswith("[run ")][1:]
        assert after_progress == [f"interrupted: {len(stored_before)} of 4 runs stored, {4 - len(stored_before)} left "
                                  "(the runs in progress are lost); rerun the same command to resume"], stderr
    # 2. The same command trains only what is missing; the runs equal an uninterrupted sweep's.
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{4 - len(stored_before)} runs trained, {len(stored_before)} reused" in done.stdout
    after = stored_runs(store)
    assert len(after) == len(set(after)) == 4 and set(stored_before) <= set(after)
    written = pd.read_csv(tmp_path / "out" / "runs.csv")
    resumed = written[NUMBERS].sort_values("run_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(resumed, uninterrupted, check_exact=True)
    assert set(written["compute_threads"]) == {1}  # TensorFlow: one thread per op, whatever the CPUs
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0


def test_two_sweeps_on_one_store_share_the_work(tmp_path):
    store = tmp_path / "store.sqlite"
    processes = [
        subprocess.Popen([sys.executable, "-m", "regbench", *SWEEP, "--store", str(store), "--out", str(tmp_path / n)],
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in ("a", "b")
    ]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    trained = [int(stdout.split(" runs trained")[0].split()[-1]) for stdout, _ in outputs]
    assert sum(trained) == 4  # no run trained by both
    runs = stored_runs(store)
    assert len(runs) == len(set(runs)) == 4
    tables = [pd.read_csv(tmp_path / n / "runs.csv")[NUMBERS].sort_values("run_id").reset_index(drop=True)
              for n in ("a", "b")]
    pd.testing.assert_frame_equal(*tables, check_exact=True)


def test_verify_passes_on_a_fresh_comparison_and_catches_an_edit(runner, tmp_path, tiny_comparison):
    shutil.copytree(tiny_comparison, tmp_path, dirs_exist_ok=True)
    out, store = tmp_path / "out", tmp_path / "s.sqlite"
    result = runner.invoke(cli, ["verify", str(out), "--store", str(store), "--rerun", "2"])
    assert result.exit_code == 0, result.output
    assert "against the 4 of its runs in" in result.stdout and "2 run(s) retrained" in result.stdout
    assert "compared exactly (this machine made them" in result.stdout and "2 of 2 came out identical" in result.stdout
    assert "verified, no differences in what was checked" in result.stdout
    # A clone has the files but no store: everything derived is still recomputed, and it says what it could not check.
    clone = runner.invoke(cli, ["verify", str(out), "--store", str(tmp_path / "other.sqlite")])
    assert clone.exit_code == 0, clone.output
    assert "not checked: the figures' pixels; 4 of 4 runs against a store" in clone.stdout
    assert not (tmp_path / "other.sqlite").exists()
    result = runner.invoke(cli, ["verify", str(out), "--store", str(store), "--rerun", "9"])
    assert result.exit_code == 2 and "allowed 0..4" in result.stderr
    pristine = {path.name: path.read_bytes() for path in out.iterdir()}

    edits = {  # file -> an edit the runs do not support, and what verify must say
        "summary.csv": (lambda: edit_csv(out / "summary.csv", "test_accuracy_diff", 1, 0.01),
                        "summary.csv: test_accuracy_diff of l2"),
        "effects.csv": (lambda: edit_csv(out / "effects.csv", "t_p", 0, 0.5), "effects.csv: t_p of"),
        "epochs.csv": (lambda: edit_csv(out / "epochs.csv", "val_accuracy", 0, 0.5), "epochs.csv: val_accuracy of"),
        "REPORT.md": (lambda: (out / "REPORT.md").write_text(
            (out / "REPORT.md").read_text().replace("## Summary", "## Summary (edited)")),
                      "REPORT.md: differs from its re-rendering from the tables (first at line"),
        "runs.csv": (lambda: edit_csv(out / "runs.csv", "test_accuracy", 0, 0.5), "runs.csv: test_accuracy of"),
    }
    edits["tuning.csv"] = (lambda: (out / "tuning.csv").write_text("trial\n1\n"),  # left by a tuned comparison
                           "tuning.csv: a result file that manifest.json does not list")
    edits["cost.png"] = (lambda: (out / "cost.png").unlink(), "cost.png: listed in manifest.json but missing")
    pristine["tuning.csv"] = b""
    for name, (edit, message) in edits.items():
        edit()
        result = runner.invoke(cli, ["verify", str(out), "--store", str(store)])
        assert result.exit_code == 1 and f"DIFFERS: {message}" in result.stdout, (name, result.output)
        (out / name).write_bytes(pristine[name]) if pristine[name] else (out / name).unlink()
    # Made on another processor (as the manifest says): compared within the tolerance, in the rerun's words.
    manifest = json.loads(pristine["manifest.json"])
    manifest["device"]["cpu"] = "another processor"
    (out / "manifest.json").write_text(json.dumps(manifest))
    runs = pd.read_csv(out / "runs.csv")
    runs["test_accuracy"] = 0.999  # far outside any tolerance, whichever run of these tiny models is retrained
    runs.to_csv(out / "runs.csv", index=False)
    elsewhere = runner.invoke(cli, ["verify", str(out), "--store", str(store), "--rerun", "1"])
    assert elsewhere.exit_code == 1
    assert "compared within the cross-CPU tolerance (accuracies ±1 pp" in elsewhere.stdout
    assert "0 of 1 came out identical" in elsewhere.stdout
    assert re.search(r"DIFFERS: rerun of \w+: test_accuracy of \w+ is 0\.999 stored but 0\.\d+ retrained",
                     elsewhere.stdout)


def edit_csv(path, column, row, value):
    """Set one cell of a CSV file."""
    table = pd.read_csv(path)
    table[column] = table[column].astype(object)
    table.loc[row, column] = value
    table.to_csv(path, index=False)


@pytest.mark.parametrize("comparison", ["", "tuned", "fashion-mnist", "cnn-fashion-mnist"])
def test_committed_reference_results_verify_from_a_clone(runner, tmp_path, comparison):
    """What a user can check on a fresh clone, with no store: each committed comparison recomputes exactly."""
    results = Path(__file__).parents[1] / "results" / comparison
    result = runner.invoke(cli, ["verify", str(results), "--store", str(tmp_path / "no-store.sqlite")])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def tiny_comparison(tmp_path_factory):
    """A two-seed comparison of l2 and its store, made once for the verify and damage tests."""
    from click.testing import CliRunner

    path = tmp_path_factory.mktemp("tiny")
    data = Path(__file__).parent / "data" / "mnist-small.npz"
    result = CliRunner().invoke(cli, ["compare", "--technique", "l2", "--train-size", "200", "--epochs", "1",
                                      "--seeds", "2", "--out", str(path / "out"), "--store", str(path / "s.sqlite"),
                                      "--data", str(data)])
    assert result.exit_code == 0, result.output
    return path


def keep_header(path):
    """Leave only the header line of a CSV file."""
    path.write_text(path.read_text().splitlines()[0] + "\n")


def drop_row(path, row):
    """Remove one data row of a CSV file."""
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:row + 1] + lines[row + 2:]))


def duplicate_row(path, row):
    """Repeat one data row of a CSV file at its end."""
    path.write_text(path.read_text() + path.read_text().splitlines(keepends=True)[row + 1])


@pytest.mark.parametrize("damage, message", [
    (lambda out: (out / "runs.csv").write_text("run_id,technique\nx,none\n"), "runs.csv: missing column(s)"),
    (lambda out: edit_csv(out / "runs.csv", "test_accuracy", 0, "abc"),
     "runs.csv: row 2, column test_accuracy: 'abc' is not a number"),
    (lambda out: edit_csv(out / "runs.csv", "test_accuracy", 1, "n/a"),
     "runs.csv: row 3, column test_accuracy: 'n/a' is not a number"),  # pandas alone reads it as missing
    (lambda out: edit_csv(out / "runs.csv", "val_accuracy", 2, ""), "runs.csv: row 4, column val_accuracy: empty for "
                                                                      "run"),
    (lambda out: edit_csv(out / "runs.csv", "test_accuracy", 0, 1.5),
     "runs.csv: row 2, column test_accuracy: accuracy 1.5 is outside [0, 1]"),
    (lambda out: edit_csv(out / "epochs.csv", "val_accuracy", 0, -0.1),
     "epochs.csv: row 2, column val_accuracy: accuracy -0.1 is outside [0, 1]"),
    (lambda out: duplicate_row(out / "runs.csv", 0), "runs.csv: row 6, column run_id: run"),
    (lambda out: drop_row(out / "runs.csv", 3), "so a seed lacks its pair"),
    (lambda out: keep_header(out / "runs.csv"), "which manifest.json names, so a seed lacks its pair"),
    (lambda out: edit_csv(out / "runs.csv", "technique", [0, 2], "l1"), "runs.csv: row 2, column technique: 'l1'"),
    (lambda out: (out / "epochs.csv").unlink(), "missing epochs.csv"),
    (lambda out: (out / "manifest.json").write_text("{not json"), "damaged results"),
    (lambda out: (out / "manifest.json").write_text("{}"), "manifest.json: missing config"),
    (lambda out: (out / "runs.csv").write_bytes(b"\xff\xfe\x00garbage"), "damaged results"),
], ids=["columns", "text", "n/a", "empty", "above-1", "epochs-below-0", "duplicate", "unpaired", "header-only",
        "wrong-arm", "file", "json", "fields", "bytes"])
def test_damaged_results_are_a_clear_error(runner, tmp_path, tiny_comparison, damage, message):
    out = tmp_path / "out"
    shutil.copytree(tiny_comparison / "out", out)
    damage(out)
    report = (out / "REPORT.md").read_bytes()
    for command in (["report", str(out)], ["verify", str(out), "--store", str(tiny_comparison / "s.sqlite")]):
        result = runner.invoke(cli, command)
        assert result.exit_code == 2 and message in result.stderr, result.output
        assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1
        assert (out / "REPORT.md").read_bytes() == report  # the old report is left alone


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the lost KeyboardInterrupt
def test_a_ctrl_c_lost_in_a_finalizer_still_stops_the_sweep_before_its_next_run():
    from regbench.sweep import _CtrlC

    class Finalizer:
        def __del__(self):  # Ctrl-C handled here can only be printed as ignored, not raised
            signal.raise_signal(signal.SIGINT)

    outer = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (pytest may ignore it)
    try:
        with _CtrlC() as ctrl_c:
            Finalizer()  # collected at once: its KeyboardInterrupt is lost
            with pytest.raises(KeyboardInterrupt):
                ctrl_c.check()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, outer)


@pytest.fixture
def read_only(tmp_path, tiny_comparison):
    """A copy of the tiny comparison and its store on a read-only bind mount (skipped where mounting is not allowed)."""
    source, mount = tmp_path / "source", tmp_path / "ro"
    shutil.copytree(tiny_comparison, source)
    mount.mkdir()
    if subprocess.run(["mount", "--bind", str(source), str(mount)], capture_output=True).returncode:
        pytest.skip("needs permission to bind-mount")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(mount)], capture_output=True).returncode:
            pytest.skip("needs permission to remount read-only")
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_store_on_a_read_only_mount_serves_reading_and_refuses_writing_in_one_line(runner, tmp_path, read_only):
    store, out = str(read_only / "s.sqlite"), read_only / "out"
    before = sorted(path.name for path in read_only.iterdir())
    listed = runner.invoke(cli, ["runs", "--store", store])  # SQLite could make no -shm file there
    assert listed.exit_code == 0 and "4 run(s) in" in listed.stdout, listed.output
    assert runner.invoke(cli, ["verify", str(out), "--store", store]).exit_code == 0
    exported = runner.invoke(cli, ["export", str(out), "--store", store, "--tensorboard", str(tmp_path / "tb")])
    assert exported.exit_code == 0, exported.output
    reused = runner.invoke(cli, ["compare", "--technique", "l2", "--train-size", "200", "--epochs", "1", "--seeds", "2",
                                 "--store", store, "--out", str(tmp_path / "again")])
    assert reused.exit_code == 0 and "0 runs trained, 4 reused" in reused.stdout, reused.output
    for command, message in [(["runs", "--store", store, "--remove", "--yes"], "so nothing can be removed from it"),
                             (["compare", "--technique", "l2", "--train-size", "200", "--epochs", "1", "--seeds", "3",
                               "--store", store, "--out", str(tmp_path / "more")],
                              "so the 2 of 6 runs it does not hold cannot be trained into it")]:
        result = runner.invoke(cli, command)
        assert result.exit_code == 2 and result.stderr.startswith(f"Error: {store}: read-only"), result.output
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "more").exists()
    assert sorted(path.name for path in read_only.iterdir()) == before  # no -wal or -shm left
