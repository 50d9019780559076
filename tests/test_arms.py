"""Several settings of one technique as arms, another baseline, experiments as TOML files, and the export of a
comparison's runs to TensorBoard and MLflow, read back with their own readers."""

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from regbench.cli import cli
from regbench.techniques import parse_arm, technique_of

SMALL_MNIST = Path(__file__).parent / "data" / "mnist-small.npz"
ARMS = ["dropout:rate=0.2", "l2:l2=0.0001", "l2:l2=0.01"]  # the reference arm first
OUT = "compare-l2:l2=0.0001_l2:l2=0.01-vs-dropout:rate=0.2"  # the default output directory's name


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """One comparison of two l2 strengths against dropout at rate 0.2, made from a new
    working directory (so that its default output directory lands there): (directory, store, its stdout)."""
    from click.testing import CliRunner

    root = tmp_path_factory.mktemp("arms")
    here = Path.cwd()
    os.chdir(root)
    try:
        result = CliRunner().invoke(cli, [
            "compare", "--technique", "l2:l2=1e-4,l2:l2=1e-2", "--baseline", "dropout:rate=0.2",
            "--train-size", "200", "--epochs", "1", "--seeds", "2", "--data", str(SMALL_MNIST),
            "--store", str(root / "store.sqlite")])
    finally:
        os.chdir(here)
    assert result.exit_code == 0, result.output
    return root / "results" / OUT, root / "store.sqlite", result.stdout


def test_arm_labels_read_back_as_their_settings():
    arm = parse_arm("l2:l2=1e+3+dropout:rate=0.2:input_rate=0.1")
    assert arm.label == "dropout:input_rate=0.1:rate=0.2+l2:l2=1000"
    assert parse_arm(arm.label) == arm and technique_of(arm.label) == "dropout+l2"
    assert dict(arm.values({"l2": 5.0, "rate": 0.7})) == {"input_rate": 0.1, "l2": 1000.0, "rate": 0.2}


def test_each_setting_is_an_arm_paired_with_the_chosen_baseline(made):
    out, _, stdout = made
    runs = pd.read_csv(out / "runs.csv")
    assert list(dict.fromkeys(runs["technique"])) == ARMS and len(runs) == 6
    assert dict(zip(runs["technique"], runs["technique_params"])) == {
        "dropout:rate=0.2": "input_rate=0 rate=0.2", "l2:l2=0.0001": "l2=0.0001", "l2:l2=0.01": "l2=0.01"}
    assert set(pd.read_csv(out / "epochs.csv")["technique"]) == set(ARMS)
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["technique"]) == ARMS and pd.isna(summary.loc[0, "test_accuracy_diff"])
    by_seed = runs.pivot_table(index="seed", columns="technique", values="test_accuracy")
    for index, arm in enumerate(ARMS[1:], start=1):  # every arm minus the dropout arm, seed by seed
        assert summary.loc[index, "test_accuracy_diff"] == pytest.approx((by_seed[arm] - by_seed[ARMS[0]]).mean())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["baseline"] == {"dropout:rate=0.2": {"input_rate": 0.0, "rate": 0.2}}
    assert list(manifest["techniques"]) == ARMS[1:] and list(manifest["run_ids"]) == ARMS
    report = (out / "REPORT.md").read_text()
    assert report.startswith("# regbench: l2:l2=0.0001, l2:l2=0.01 against the baseline dropout:rate=0.2")
    assert "| dropout:rate=0.2 (baseline) | input_rate=0, rate=0.2 |" in report
    assert [line.split()[0] for line in stdout.splitlines()[1:4]] == ARMS and "(baseline)" in stdout.splitlines()[1]


def test_verify_and_a_rerun_from_experiment_toml_give_the_same_numbers(made, runner, tmp_path):
    out, store, stdout = made
    checked = runner.invoke(cli, ["verify", str(out), "--store", str(store)])
    assert checked.exit_code == 0 and "verified, no differences" in checked.stdout, checked.output
    experiment = (out / "experiment.toml").read_text()
    assert 'technique = "l2:l2=0.0001,l2:l2=0.01"' in experiment and 'baseline = "dropout:rate=0.2"' in experiment
    assert 'out = "."' in experiment and 'store = "../../store.sqlite"' in experiment  # relative to the file
    # Rerun in place, from another folder: nothing is written again (bytes and times kept).
    written = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
    same = runner.invoke(cli, ["compare", "--config", str(out / "experiment.toml")])
    assert same.exit_code == 0 and "0 runs trained, 6 reused" in same.stdout and "is up to date" in same.stdout
    assert {path.name: path.stat().st_mtime_ns for path in out.iterdir()} == written
    # A copied directory reruns into itself, never into the original. Snake-case keys read as well; a flag on the
    # command line wins over the file.
    copy = tmp_path / "copy" / "out"
    shutil.copytree(out, copy)
    (copy / "experiment.toml").write_text(experiment.replace("train-size", "train_size")
                                          .replace("batch-size", "batch_size"))
    again = runner.invoke(cli, ["compare", "--config", str(copy / "experiment.toml"), "--store", str(store),
                                "--margin", "0.5"])
    assert again.exit_code == 0, again.output
    assert "0 runs trained, 6 reused" in again.stdout and again.stdout.splitlines()[:4] == stdout.splitlines()[:4]
    assert f"files to {copy}/" in again.stdout
    assert {path.name: path.stat().st_mtime_ns for path in out.iterdir()} == written
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["options"]["margin"] == 0.5 and manifest["options"]["out"] == "."
    assert manifest["options"]["train-size"] == 200 and manifest["analysis"] == {"margin_pp": 0.5,
                                                                                       "target_effect_pp": None}


def test_tuning_with_another_baseline_tunes_it_too_and_none_may_be_an_arm(runner, tmp_path):
    result = runner.invoke(cli, ["compare", "--technique", "dropout+batchnorm,none", "--baseline", "dropout", "--tune",
                                 "--trials", "2", "--tune-seeds", "1", "--train-size", "200", "--epochs", "1",
                                 "--dry-run", "--store", str(tmp_path / "s.sqlite")])
    assert result.exit_code == 0, result.output
    planned = [line.split()[1] for line in result.stdout.splitlines()[1:] if line.endswith("to train")]
    assert sorted(planned) == ["batchnorm+dropout"] * 2 + ["dropout"] * 2 + ["none"]  # none: the level to beat
    assert "then 9 evaluation runs" in result.stdout  # the baseline and two arms, none among them, x 3 seeds


def test_tensorboard_export_reads_back_with_its_event_reader(made, runner, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    out, store, _ = made
    result = runner.invoke(cli, ["export", str(out), "--tensorboard", str(tmp_path / "tb"), "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert f"wrote 6 runs from {store}" in result.stdout
    runs = pd.read_csv(out / "runs.csv").set_index(["technique", "seed"])
    epochs = pd.read_csv(out / "epochs.csv")
    groups = {}
    for arm in ARMS:
        for seed in (0, 1):
            events = EventAccumulator(str(tmp_path / "tb" / arm / f"seed-{seed}")).Reload()
            run = runs.loc[(arm, seed)]
            curve = events.Scalars("epoch/val_accuracy")
            expected = epochs[epochs["run_id"] == run["run_id"]]["val_accuracy"]
            assert [s.step for s in curve] == [1] and [s.value for s in curve] == pytest.approx(list(expected))
            assert events.Scalars("final/test_accuracy")[0].value == pytest.approx(run["test_accuracy"])
            start = plugin_data_pb2.HParamsPluginData.FromString(
                events.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
            assert start.hparams["arm"].string_value == arm
            groups.setdefault(arm, set()).add(start.group_name)
    assert all(len(names) == 1 for names in groups.values()) and len(set().union(*groups.values())) == 3
    experiment = EventAccumulator(str(tmp_path / "tb")).Reload()
    info = plugin_data_pb2.HParamsPluginData.FromString(
        experiment.PluginTagToContent("hparams")["_hparams_/experiment"]).experiment
    assert [value.string_value for value in info.hparam_infos[0].domain_discrete.values] == ARMS
    assert "final/test_accuracy" in [metric.name.tag for metric in info.metric_infos]


def test_mlflow_export_reads_back_with_search_runs(made, runner, tmp_path):
    from mlflow import MlflowClient

    out, store, _ = made
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = runner.invoke(cli, ["export", str(out), "--mlflow", uri, "--store", str(tmp_path / "elsewhere.sqlite")])
    assert result.exit_code == 0, result.output
    assert f"logged 6 runs from {out}/runs.csv" in result.stdout  # that store holds none of them: the files
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(f"regbench/{OUT}")
    found = client.search_runs([experiment.experiment_id])
    parent = next(run for run in found if "mlflow.parentRunId" not in run.data.tags)
    children = [run for run in found if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(found) == 7 and len(children) == 6
    runs = pd.read_csv(out / "runs.csv").set_index("run_id")
    for child in children:
        run = runs.loc[child.data.tags["run_id"]]
        assert child.data.tags["arm"] == run["technique"] and child.data.tags["seed"] == str(run["seed"])
        assert child.data.metrics["final/test_accuracy"] == pytest.approx(run["test_accuracy"])
        assert child.data.params["epochs"] == "1" and child.info.status == "FINISHED"
        history = client.get_metric_history(child.info.run_id, "epoch/val_crossentropy")
        assert [metric.step for metric in history] == [1]
    assert next(c for c in children if c.data.tags["arm"] == "l2:l2=0.01").data.params["l2"] == "0.01"
    artifacts = {item.path for item in client.list_artifacts(parent.info.run_id)}
    assert {"REPORT.md", "manifest.json", "experiment.toml", "paired_test_accuracy.png"} <= artifacts
    again = runner.invoke(cli, ["export", str(out), "--mlflow", uri])
    assert again.exit_code == 2 and "exists and holds runs" in again.stderr


@pytest.mark.parametrize("args, config, message", [
    (["--technique", "l2,l2:l2=1e-4"], None, "l2 and l2:l2=0.0001 are the same setting"),
    (["--technique", "dropout", "--baseline", "dropout"], None, "--baseline dropout is also a compared arm"),
    (["--technique", "l2:rate=0.1"], None, "l2 has no parameter 'rate'"),
    (["--technique", "l2:l2"], None, "'l2' is not NAME=VALUE"),
    (["--technique", "l2", "--baseline", "dropout:rate=2"], None, "rate=2 is out of range"),
    ([], 'technique = "dropout"\nepochs = 1\ntrain-sise = 300\n', "config.toml:3: unknown key 'train-sise' (did you "
                                                                  "mean 'train-size'?)"),
    ([], 'technique = "dropout"\n\ntrain_size = "300"\n', 'config.toml:3: train_size = "300" is not an integer'),
    ([], "technique = 'dropout'\ntune = 1\n", "config.toml:2: tune = 1 is not a boolean"),
    ([], "technique = 'dropout'\nepochs = 0\n", "config.toml:2: epochs = 0: 0 is not in the range 1<=x<=10000"),
    ([], "technique = [\n", "not valid TOML"),
])
def test_bad_arms_and_configs_exit_2_with_one_line_and_write_nothing(runner, tmp_path, args, config, message):
    if config is not None:
        (tmp_path / "config.toml").write_text(config)
        args = [*args, "--config", str(tmp_path / "config.toml")]
    result = runner.invoke(cli, ["compare", *args, "--out", str(tmp_path / "out"),
                                 "--store", str(tmp_path / "store.sqlite")])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "store.sqlite").exists()


def test_bad_exports_exit_2_with_one_line_and_write_nothing(made, runner, tmp_path, monkeypatch, listeners):
    out, store, _ = made
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "kept.txt").write_text("mine")
    cases = [([], "name where to export to"),
             (["--tensorboard", str(tmp_path / "full")], "exists and is not an empty directory"),
             (["--tensorboard", str(tmp_path / "full" / "kept.txt" / "tb")], "kept.txt is a file, not a folder"),
             (["--mlflow", str(tmp_path / "mlruns")], "give sqlite:///PATH.db"),
             (["--mlflow", f"sqlite:///{tmp_path / 'full' / 'kept.txt'}"], "kept.txt is not an SQLite database"),
             (["--mlflow", listeners["silent"].replace("tcp", "http")], "no answer within 3 s"),  # MLflow: minutes
             (["--mlflow", listeners["http"].replace("tcp", "http")],
              "is not an MLflow tracking server (HTTP 404, not MLflow's REST API)"),  # MLflow: a traceback
             (["--mlflow", "http://127.0.0.1:9"], "cannot connect (Connection refused)"),
             (["--mlflow-experiment", "x", "--tensorboard", str(tmp_path / "tb")], "applies to --mlflow")]
    for args, message in cases:
        started = time.monotonic()
        result = runner.invoke(cli, ["export", str(out), *args, "--store", str(store)])
        assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.output
        assert time.monotonic() - started < 5
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if regbench[mlflow] were not installed
    result = runner.invoke(cli, ["export", str(out), "--tensorboard", str(tmp_path / "tb"), "--mlflow",
                                 f"sqlite:///{tmp_path / 'm.db'}"])
    assert result.exit_code == 2 and "pip install 'regbench[mlflow]'" in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["full"]  # nothing written, not even the event files
    assert [path.name for path in (tmp_path / "full").iterdir()] == ["kept.txt"]
