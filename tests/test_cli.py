"""The command line, through click's CliRunner on the small real subset."""

import gzip
import json
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from regbench import __version__
from regbench.cli import cli

SMALL_MNIST = Path(__file__).parent / "data" / "mnist-small.npz"  # not from conftest: benchmarks import this module
SMALL_FASHION = Path(__file__).parent / "data" / "fashion-mnist-small"
TINY = ["--train-size", "200", "--epochs", "1", "--seeds", "2"]
FILES = {"runs.csv", "epochs.csv", "weights.csv", "summary.csv", "effects.csv", "best_and_final_epochs.csv",
         "manifest.json", "REPORT.md", "report.html", "learning_curves.png", "gap_curves.png",
         "paired_test_accuracy.png", "weight_histograms.png", "cost.png", "experiment.toml"}


def compare(runner, tmp_path, *args, out="out"):
    return runner.invoke(cli, ["compare", *args, "--out", str(tmp_path / out),
                               "--store", str(tmp_path / "store.sqlite")])


def test_compare_writes_every_output_and_a_rerun_trains_nothing(runner, tmp_path):
    first = compare(runner, tmp_path, "--technique", "dropout", *TINY)
    assert first.exit_code == 0, first.output
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == FILES
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 4 and sorted(runs["technique"]) == ["dropout", "dropout", "none", "none"]
    for column in ("test_accuracy", "test_crossentropy", "train_accuracy", "gap", "best_epoch", "epochs_run",
                   "train_seconds", "parameter_count", "weights_l1", "weights_l2", "weights_max_abs",
                   "weights_near_zero_fraction", "weights_top1pct_share", "status", "seed", "lr", "batch_size"):
        assert runs[column].notna().all(), column
    epochs = pd.read_csv(out / "epochs.csv")
    assert set(epochs.columns) >= {"train_crossentropy", "train_accuracy", "val_crossentropy", "val_accuracy",
                                   "penalty", "seconds"}
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["technique"]) == ["none", "dropout"]
    assert summary.loc[1, "pairs"] == 2 and summary.loc[1, "diff_ci_low"] <= summary.loc[1, "diff_ci_high"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"].startswith("regbench ")
    assert manifest["config"]["train_size"] == 200 and manifest["seeds"] == [0, 1]
    assert manifest["protocol"] == {"name": "course", "select": "final"}  # the default protocol: final weights
    assert {"python", "keras", "numpy", "tensorflow", "regbench"} <= set(manifest["versions"])
    assert manifest["device"]["kind"] == "cpu"
    assert manifest["techniques"] == {"dropout": {"input_rate": 0.0, "rate": 0.5}}
    assert "4 runs trained, 0 reused" in first.stdout
    assert ("[run 4/4] dropout input_rate=0 rate=0.5 seed 1 (200 images, batch 32, mlp 128-64) epoch 1/1"
            in first.stderr and "left" in first.stderr)

    again = compare(runner, tmp_path, "--technique", "dropout", *TINY)
    assert again.exit_code == 0 and "0 runs trained, 4 reused" in again.stdout
    assert again.stdout.splitlines()[:3] == first.stdout.splitlines()[:3]  # the same summary table
    assert f"{out}/ is up to date: its 15 files were made from these runs, options and code" in again.stdout
    # Every run stored and nothing changed: no backend, statistics or figures are loaded.
    arguments = ["compare", "--technique", "dropout", *TINY, "--out", str(out),
                 "--store", str(tmp_path / "store.sqlite")]
    assert loaded(arguments, 0, ("keras", "tensorflow", "jax", "scipy", "matplotlib")) == []
    written = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
    (out / "cost.png").unlink()  # a file gone, or changed, is written again, with the rest
    redone = compare(runner, tmp_path, "--technique", "dropout", *TINY)
    assert "0 runs trained, 4 reused; wrote 15 files" in redone.stdout and (out / "cost.png").exists()
    (out / "REPORT.md").write_text((out / "REPORT.md").read_text() + " ")
    again = compare(runner, tmp_path, "--technique", "dropout", *TINY)
    assert "0 runs trained, 4 reused; wrote 15 files" in again.stdout
    assert all((out / name).stat().st_mtime_ns > mtime for name, mtime in written.items())

    shared = compare(runner, tmp_path, "--technique", "dropout,l2", *TINY, out="two")
    assert shared.exit_code == 0 and "2 runs trained, 4 reused" in shared.stdout  # one baseline per seed
    check_report_rebuild(runner, tmp_path / "two")


def check_report_rebuild(runner, out):
    """`regbench report` rewrites a self-contained HTML page and a Markdown report that cite every run."""
    (out / "report.html").unlink()
    (out / "REPORT.md").unlink()
    result = runner.invoke(cli, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 15 files" in result.stdout and "dropout" in result.stdout
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 5
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]*", "", page)  # base64 may spell 'http' by chance
    assert not re.search(r"(src|href)=\"(?!data:)", page) and "http" not in text.replace("http-equiv", "")
    markdown = (out / "REPORT.md").read_text()
    for text in ("## Summary", "p (Holm)", "95% CI (t, unadjusted)", "p (TOST, Holm)", "verdict", "## Setup",
                 "## Runs behind each row", "(learning_curves.png)", "**l2** (l2=0.0001)"):
        assert text in markdown, text
    runs = pd.read_csv(out / "runs.csv")
    assert all(run_id in markdown for run_id in runs["run_id"])  # every row traceable to its runs
    for table in re.findall(r"\n\n(\|.*?)\n\n", markdown, flags=re.S):  # every row as wide as its header
        widths = {row.count("|") for row in table.splitlines()}
        assert len(widths) == 1, table
    assert "## Lowest-validation-loss epoch and final epoch" in markdown and "best epoch" not in markdown
    weights = pd.read_csv(out / "weights.csv")
    assert set(weights.groupby("run_id")["count"].sum()) == {784 * 128 + 128 * 64 + 64 * 10}  # every kernel weight


def test_report_on_a_wrong_directory_exits_2(runner, tmp_path):
    result = runner.invoke(cli, ["report", str(tmp_path / "absent")])
    assert result.exit_code == 2 and "not a directory" in result.stderr
    (tmp_path / "empty").mkdir()
    result = runner.invoke(cli, ["report", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "missing manifest.json" in result.stderr


def test_diverging_runs_are_stored_as_diverged_and_the_sweep_goes_on(runner, tmp_path):
    result = compare(runner, tmp_path, "--technique", "l2", "--optimizer", "sgd", "--lr", "5000",
                     "--train-size", "200", "--epochs", "2", "--seeds", "1")
    assert result.exit_code == 0, result.output
    runs = pd.read_csv(tmp_path / "out" / "runs.csv")
    assert set(runs["status"]) == {"diverged"} and set(runs["diverged_epoch"]) == {1}
    assert "diverged at epoch 1" in result.stderr
    assert "no successful pair" in result.stdout and "2 diverged run(s) left out" in result.stdout
    assert pd.read_csv(tmp_path / "out" / "summary.csv")["diverged"].tolist() == [1, 1]


def test_one_seed_on_fashion_mnist_gives_a_difference_but_no_interval_and_names_the_data(runner, tmp_path):
    result = compare(runner, tmp_path, "--technique", "mixup", "--train-size", "200", "--epochs", "1",
                     "--seed-list", "7", "--dataset", "fashion-mnist", "--data", str(SMALL_FASHION))
    assert result.exit_code == 0, result.output
    assert "[no interval from one pair] n=1" in result.stdout
    runs = pd.read_csv(tmp_path / "out" / "runs.csv")
    assert runs["seed"].tolist() == [7, 7] and set(runs["dataset"]) == {"fashion-mnist"}
    data = json.loads((tmp_path / "out" / "manifest.json").read_text())["data"]
    assert data["dataset"] == "fashion-mnist" and data["content"].startswith("a subset of Fashion-MNIST")
    assert "200 training images of a subset of Fashion-MNIST" in (tmp_path / "out" / "REPORT.md").read_text()


def test_list_version_and_help(runner):
    listing = runner.invoke(cli, ["list"])
    assert listing.exit_code == 0
    for text in ("dropout", "rate=0.5", "l2=0.0001", "patience=3", "c=3", "weight-decay", "wd=0.0001",
                 "mlp", "cnn", "adamw", "tensorflow", "augment", "mixup_alpha=0.2", "ema_horizon=1000",
                 "spatial-dropout", "[cnn only]", "fashion-mnist", "Fashion-MNIST: 28x28 grey images, 10 classes"):
        assert text in listing.output
    assert runner.invoke(cli, ["--version"]).output.strip() == f"regbench, version {__version__}"
    help_text = runner.invoke(cli, ["compare", "--help"])
    assert help_text.exit_code == 0 and "--technique" in help_text.output and "--seed-list" in help_text.output


BAD_INPUTS = [
    (["--technique", "dropuot"], "did you mean 'dropout'"),
    (["--technique", "none"], "'none' is the baseline"),
    (["--technique", "none,dropout"], "'none' is the baseline"),
    (["--technique", "dropout,dropout"], "names dropout twice"),
    (["--technique", "l2+dropout,dropout+l2"], "names dropout+l2 twice"),
    (["--technique", "batchnorm", "--param", "rate=0.3"], "parameter 'rate' belongs to dropout, which is not compared"),
    (["--technique", "dropout", "--param", "rate=0.3", "--param", "rate=0.4"], "--param rate is given twice"),
    (["--technique", "dropout", "--lr", "nan"], "not a finite number"),
    (["--technique", "dropout", "--optimizer", "sgd", "--momentum", "nan"], "not a finite number"),
    (["--technique", "dropout", "--seed-list", "4294967296"], "allowed 0..4294967295"),
    (["--technique", "dropout", "--param", "rte=0.3"], "did you mean 'rate'"),
    (["--technique", "dropout", "--param", "rate=1.5"], "allowed 0 <= rate < 1"),
    (["--technique", "l2", "--param", "l2=-1"], "allowed 0 <= l2"),
    (["--technique", "dropout", "--epochs", "0"], "'--epochs'"),
    (["--technique", "dropout", "--epochs", "ten"], "'--epochs'"),
    (["--technique", "dropout", "--batch-size", "0"], "'--batch-size'"),
    (["--technique", "dropout", "--train-size", "200", "--batch-size", "500"], "larger than the training set"),
    (["--technique", "dropout", "--train-size", "50"], "'--train-size'"),
    (["--technique", "dropout", "--train-size", "3000"], "allowed 100..2500"),
    (["--technique", "dropout", "--architecture", "resnet"], "'--architecture'"),
    (["--technique", "dropout", "--hidden", "0,10"], "each must be >= 1"),
    (["--technique", "dropout", "--hidden", "wide"], "comma-separated list of integers"),
    (["--technique", "dropout", "--optimizer", "adagrad"], "'--optimizer'"),
    (["--technique", "dropout", "--momentum", "0.9"], "--momentum applies to sgd and rmsprop"),
    (["--technique", "dropout", "--optimizer", "sgd", "--momentum", "1.5"], "'--momentum'"),
    (["--technique", "dropout", "--nesterov"], "--nesterov applies to sgd"),
    (["--technique", "dropout", "--lr", "0"], "'--lr'"),
    (["--technique", "dropout", "--seeds", "0"], "'--seeds'"),
    (["--technique", "dropout", "--seeds", "2", "--seed-list", "1,2"], "exclude each other"),
    (["--technique", "dropout", "--seed-list", "1,1"], "repeats a seed"),
    (["--technique", "dropout", "--backend", "theano"], "'--backend'"),
    (["--technique", "dropout", "--device", "tpu"], "'--device'"),
    (["--technique", "dropout", "--device", "gpu"], "sees no GPU"),
    (["--technique", "dropout", "--data", "/nonexistent/mnist.npz"], "no such file"),
    (["--technique", "dropout", "--dataset", "cifar10"], "'--dataset'"),
    (["--technique", "dropout", "--dataset", "fashion-mnist"], "holds images of MNIST, not Fashion-MNIST"),
    (["--technique", "spatial-dropout"], "spatial-dropout needs --architecture cnn"),
    (["--technique", "batchnorm+ghost-batchnorm"], "sets the normalization hook"),
    (["--technique", "ema", "--param", "ema_horizon=0.5"], "allowed 1 <= ema_horizon"),
    (["--epochs", "1"], "Missing option '--technique'"),
    (["--technique", "dropout", "--jobs", "256"], "more than the"),
    (["--technique", "dropout", "--jobs", "0"], "'--jobs'"),
    (["--technique", "dropout", "--jobs", "2", "--scheduler", "tcp://127.0.0.1:8786"], "give one"),
    (["--technique", "dropout", "--resources", "GPU=1"], "--resources applies to the workers of an existing"),
    (["--technique", "dropout", "--send-data"], "--send-data applies to the workers of an existing cluster"),
    (["--technique", "dropout", "--scheduler", "tcp://127.0.0.1:9", "--resources", "GPU=0"], "a positive amount"),
    (["--technique", "dropout", "--scheduler", "localhost"], "not a scheduler address"),
    (["--technique", "dropout", "--protocol", "long"], "'--protocol'"),
    (["--technique", "dropout", "--schedule", "step"], "'--schedule'"),
    (["--technique", "dropout", "--select", "best"], "'--select'"),
    (["--technique", "dropout", "--warmup-epochs", "1"], "--warmup-epochs applies to --schedule cosine"),
    (["--technique", "dropout", "--schedule", "cosine", "--epochs", "3", "--warmup-epochs", "3"], "allowed 0..2"),
    (["--technique", "dropout", "--warmup-epochs", "-1"], "'--warmup-epochs'"),
    (["--technique", "dropout", "--tune", "--trials", "0"], "'--trials'"),
    (["--technique", "dropout", "--tune", "--trials", "-2"], "'--trials'"),
    (["--technique", "dropout", "--tune", "--tune-seeds", "0"], "'--tune-seeds'"),
    (["--technique", "dropout", "--tune", "--tune-seeds", "2", "--tune-seed-list", "7"], "exclude each other"),
    (["--technique", "dropout", "--tune", "--tune-seed-list", "2,9", "--seeds", "3"], "tuning seed(s) 2 are also"),
    (["--technique", "dropout", "--tune", "--seed-list", "1000"], "tuning seed(s) 1000 are also evaluation"),
    (["--technique", "dropout", "--tune", "--search", "c=1:2"], "unknown parameter 'c'"),
    (["--technique", "dropout", "--tune", "--search", "rate=0.5:0.5"], "LO must be below HI"),
    (["--technique", "l2", "--tune", "--search", "l2=0:1e-3"], "log scale, so LO must be above 0"),
    (["--technique", "dropout", "--tune", "--param", "rate=0.3"], "--tune searches rate"),
    (["--technique", "dropout", "--search", "rate=0:0.5"], "--search applies to --tune"),
    (["--technique", "dropout", "--trials", "4"], "--trials applies to --tune"),
    (["--technique", "dropout", "--tune", "--tune-metric", "loss"], "'--tune-metric'"),
    (["--technique", "dropout", "--hidden", "5000000"], "the mlp with hidden widths 5000000 has 3,975,000,010 "
                                                        "parameters: training it needs about 118.5 GiB"),
]


@pytest.mark.parametrize("args, message", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(runner, tmp_path, args, message):
    result = compare(runner, tmp_path, *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "store.sqlite").exists()


def test_bare_regbench_prints_its_help_and_a_missing_dataset_is_one_line(tmp_path):
    bare = subprocess.run([sys.executable, "-m", "regbench"], capture_output=True, text=True, timeout=60)
    assert bare.returncode == 0 and bare.stdout.startswith("Usage: regbench")
    assert "Error" not in bare.stdout + bare.stderr
    env = {key: value for key, value in os.environ.items() if key not in ("REGBENCH_DATA", "REGBENCH_OFFLINE")}
    env["HOME"] = str(tmp_path)  # no Keras cache; Keras' download goes to a closed port on loopback, never out
    env.update({name: "http://127.0.0.1:9" for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")})
    missing = subprocess.run([sys.executable, "-m", "regbench", "compare", "--technique", "dropout", "--out",
                              str(tmp_path / "o"), "--store", str(tmp_path / "s.sqlite")], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and missing.stderr.startswith("Error: MNIST not found; tried"), missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1 and missing.stdout == ""  # no "Downloading", no TF log lines
    assert not (tmp_path / "o").exists() and not (tmp_path / "s.sqlite").exists()


def test_bad_data_files_and_output_paths_exit_2(runner, tmp_path):
    not_npz = tmp_path / "mnist.npz"
    not_npz.write_text("hello")
    result = compare(runner, tmp_path, "--technique", "dropout", "--data", str(not_npz))
    assert result.exit_code == 2 and "a text file, not an .npz archive" in result.stderr
    gzipped = tmp_path / "train-images-idx3-ubyte.gz"
    gzipped.write_bytes(gzip.compress(b"\x00" * 100))
    result = compare(runner, tmp_path, "--technique", "dropout", "--data", str(gzipped))
    assert result.exit_code == 2 and "a gzip file, not an .npz archive" in result.stderr
    with np.load(SMALL_MNIST) as full:
        arrays = {key: full[key] for key in full.files}
    np.savez(tmp_path / "sixty.npz", **{**arrays, "x_train": arrays["x_train"][:60], "y_train": arrays["y_train"][:60]})
    result = compare(runner, tmp_path, "--technique", "dropout", "--data", str(tmp_path / "sixty.npz"))
    assert result.exit_code == 2 and "x_train has 60 images; regbench needs at least 120" in result.stderr
    for option in ("--out", "--store"):
        result = runner.invoke(cli, ["compare", "--technique", "dropout", "--out", str(tmp_path / "o"),
                                     "--store", str(tmp_path / "s.sqlite"), option, "/proc/regbench-x"])
        assert result.exit_code == 2 and "holds no files (such as /proc)" in result.stderr, result.output
    out_file = tmp_path / "taken"
    out_file.write_text("x")
    result = runner.invoke(cli, ["compare", "--technique", "dropout", "--out", str(out_file),
                                 "--store", str(tmp_path / "store.sqlite")])
    assert result.exit_code == 2 and "is a file" in result.stderr
    assert not (tmp_path / "store.sqlite").exists()


def test_results_of_another_comparison_are_never_overwritten_silently(runner, tmp_path):
    tiny = ["--train-size", "200", "--epochs", "1", "--seed-list", "0", "--store", str(tmp_path / "s.sqlite")]
    with runner.isolated_filesystem(temp_dir=tmp_path):
        assert runner.invoke(cli, ["compare", "--technique", "dropout", *tiny]).exit_code == 0
        second = runner.invoke(cli, ["compare", "--technique", "dropout", "--param", "rate=0.3", *tiny])
        assert second.exit_code == 0 and "results/compare-dropout_rate=0.3/" in second.stdout
        kept = pd.read_csv("results/compare-dropout/runs.csv")
        assert set(kept["technique_params"].dropna()) == {"input_rate=0 rate=0.5"}
        other = runner.invoke(cli, ["compare", "--technique", "dropout", *tiny[:-4], "--seed-list", "1",
                                    "--store", str(tmp_path / "s.sqlite")])
        assert other.exit_code == 2 and "holds the results of another comparison (different seeds)" in other.stderr
        assert pd.read_csv("results/compare-dropout/runs.csv").equals(kept)
        forced = runner.invoke(cli, ["compare", "--technique", "dropout", *tiny[:-4], "--seed-list", "1",
                                     "--store", str(tmp_path / "s.sqlite"), "--force"])
        assert forced.exit_code == 0 and set(pd.read_csv("results/compare-dropout/runs.csv")["seed"]) == {1}


def test_dry_run_lists_the_plan_and_writes_nothing(runner, tmp_path):
    store = tmp_path / "s.sqlite"
    tiny = ["--technique", "l2", "--train-size", "200", "--epochs", "1", "--seed-list", "0", "--store", str(store)]
    plan = runner.invoke(cli, ["compare", *tiny, "--out", str(tmp_path / "o"), "--dry-run"])
    assert plan.exit_code == 0, plan.output
    assert plan.stdout.count("  to train\n") == 2 and "no time estimate: the store holds no run" in plan.stdout
    assert not store.exists() and not (tmp_path / "o").exists()
    assert runner.invoke(cli, ["compare", *tiny, "--out", str(tmp_path / "o")]).exit_code == 0
    more = [*tiny[:-4], "--seed-list", "0,1,2", "--store", str(store), "--out", str(tmp_path / "o")]
    seeds = runner.invoke(cli, ["compare", *more, "--dry-run"])  # never refused for the comparison in o
    assert seeds.exit_code == 0 and "note: " in seeds.stdout and "holds the results of another" in seeds.stdout
    assert seeds.stdout.count("  stored\n") == 2 and seeds.stdout.count("  to train\n") == 4
    estimate = float(re.search(r"estimated time: about (\d+)s for 4 of the 4 runs", seeds.stdout).group(1))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)  # the same comparison, in a process as a user runs it
    done = subprocess.run([sys.executable, "-m", "regbench", "compare", *more[:-1], str(tmp_path / "p")],
                          capture_output=True, text=True, timeout=300)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # its CPU seconds, its wall time when it has a core to
    took = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime  # itself (not beside a test worker)
    assert done.returncode == 0 and "4 runs trained, 2 reused" in done.stdout, done.stderr
    assert took / 2 <= estimate <= took * 2, (estimate, took)  # it once said 1 s for 41 s
    listed = runner.invoke(cli, ["runs", "--store", str(store), "--technique", "l2"])
    assert listed.exit_code == 0 and "3 run(s) in" in listed.stdout and " l2 " in listed.stdout
    for other in ("l2:l2=0.001", "dropout"):  # another setting of l2 (once: every l2 run), another technique
        assert "0 run(s) in" in runner.invoke(cli, ["runs", "--store", str(store), "--technique", other]).stdout
    refused = runner.invoke(cli, ["runs", "--store", str(store), "--remove"], input="n\n")
    assert refused.exit_code == 0 and "Remove these 6 run(s) from" in refused.stderr
    assert refused.stdout.endswith("nothing removed (the 6 run(s) stay in " + str(store) + ")\n")
    removed = runner.invoke(cli, ["runs", "--store", str(store), "--technique", "l2", "--remove", "--yes"])
    assert removed.exit_code == 0 and "removed 3 run(s)" in removed.stdout
    assert "0 run(s) in" in runner.invoke(cli, ["runs", "--store", str(store), "--technique", "l2"]).stdout
    assert "3 run(s) in" in runner.invoke(cli, ["runs", "--store", str(store)]).stdout


def test_protocol_presets_are_resolved_recorded_and_overridden(runner, tmp_path):
    tiny = ["--train-size", "200", "--seeds", "2", "--technique", "early-stopping", "--param", "patience=1"]
    result = compare(runner, tmp_path, *tiny, "--protocol", "converged", "--epochs", "3", "--warmup-epochs", "1")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["protocol"] == {"name": "converged", "select": "best-val"}
    assert manifest["config"]["schedule"] == "cosine" and manifest["config"]["epochs"] == 3  # preset, overridden
    runs = pd.read_csv(tmp_path / "out" / "runs.csv")
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("technique")
    # every arm is measured at its best validation epoch: the summary reads the best_* numbers
    baseline = runs[runs["technique"] == "none"]
    assert summary.loc["none", "test_accuracy_mean"] == pytest.approx(baseline["best_test_accuracy"].mean())
    epochs = pd.read_csv(tmp_path / "out" / "epochs.csv")
    best = epochs.groupby("run_id")["val_accuracy"].max()  # the best epoch's weights, measured again
    assert np.allclose(runs.set_index("run_id").loc[best.index, "best_val_accuracy"], best, atol=1e-6)
    report = (tmp_path / "out" / "REPORT.md").read_text()
    assert "its selected epoch (the epoch of highest validation accuracy" in report
    # the course protocol on the same store: other runs (a constant learning rate), none of them stored
    course = compare(runner, tmp_path, *tiny, "--epochs", "3", "--dry-run", out="course")
    assert course.exit_code == 0 and course.stdout.count("  to train\n") == 4, course.output
    # --resample-data: a data split per seed, recorded, and said to be what the intervals are across
    drawn = compare(runner, tmp_path, *tiny, "--epochs", "1", "--resample-data", out="drawn")
    assert drawn.exit_code == 0, drawn.output
    assert json.loads((tmp_path / "drawn" / "manifest.json").read_text())["config"]["resample_data"] is True
    assert "across data splits" in (tmp_path / "drawn" / "REPORT.md").read_text()
    assert "conditional on this one training/validation split" in (tmp_path / "out" / "REPORT.md").read_text()


def loaded(args: list[str], code: int, names: tuple[str, ...]) -> list[str]:
    """Run the CLI with `args` in a fresh interpreter (expecting exit status `code`); return which of the modules
    `names` it loaded."""
    script = ("import sys; from click.testing import CliRunner; from regbench.cli import cli; "
              f"result = CliRunner().invoke(cli, {args!r}); assert result.exit_code == {code}, result.output; "
              f"import json; print(json.dumps([name for name in {names!r} if name in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_help_list_and_report_start_without_keras_or_a_backend(tmp_path):
    """--help and list load no pandas either; report loads everything it renders with (its statistics, figures and
    report modules; here on a missing directory, which it refuses after loading them), but no Keras or backend."""
    heavy = ("keras", "tensorflow", "jax", "torch", "pandas")
    for args in (["--help"], ["list"]):
        assert loaded(args, 0, (*heavy, "matplotlib")) == []
    assert loaded(["report", str(tmp_path / "missing")], 2, (*heavy[:4], "matplotlib")) == ["matplotlib"]


def test_a_combination_measured_slower_here_gets_a_one_line_note():
    from regbench.config import RunConfig
    from regbench.runner import say_if_slower_here

    lines: list[str] = []
    for config in (RunConfig(architecture="cnn", hidden=(16,), backend="jax"), RunConfig(architecture="cnn"),
                   RunConfig(backend="jax"), RunConfig(architecture="cnn", backend="jax", device="gpu")):
        say_if_slower_here(config, lines.append)
    assert len(lines) == 1 and lines[0].startswith("note: on a CPU the cnn takes about") and "tensorflow" in lines[0]
