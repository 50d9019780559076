"""regbench from Python: the API writes what the command line writes, refuses what it refuses with the same line,
and reads saved comparisons back."""

import html
import json
import tomllib
from pathlib import Path

import pandas as pd
import pytest

import regbench
from regbench.cli import cli

SMALL_MNIST = Path(__file__).parent / "data" / "mnist-small.npz"
OPTIONS = {"technique": "dropout", "train_size": 200, "epochs": 1, "seeds": 2, "data": str(SMALL_MNIST)}


def _flags(options: dict) -> list[str]:
    """Return `options` as the command line's flags."""
    return [item for key, value in options.items() for item in (f"--{key.replace('_', '-')}", str(value))]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """One comparison made twice from one store: by the command line into cli/, by the API kept in memory and saved
    into api/; (root, the API's Comparison)."""
    from click.testing import CliRunner

    root = tmp_path_factory.mktemp("api")
    store = str(root / "store.sqlite")
    result = CliRunner().invoke(cli, ["compare", *_flags(OPTIONS), "--store", store, "--out", str(root / "cli")])
    assert result.exit_code == 0, result.output
    comparison = regbench.compare(**OPTIONS, store=store, verbose=False)
    assert comparison.directory is None and not (root / "api").exists()  # nothing written until saved
    comparison.save(root / "api")
    return root, comparison


def test_the_api_and_the_command_line_write_the_same_files(made):
    root, _ = made
    names = sorted(path.name for path in (root / "cli").iterdir())
    assert names == sorted(path.name for path in (root / "api").iterdir()) and len(names) == 15
    stamps = {side: json.loads((root / side / "manifest.json").read_text()) for side in ("cli", "api")}
    for name in names:
        cli_bytes, api_bytes = ((root / side / name).read_bytes() for side in ("cli", "api"))
        if name in ("REPORT.md", "report.html"):  # the same but for when and by which call they were made
            cli_bytes, api_bytes = (_unstamped(data.decode(), stamps[side])
                                    for data, side in ((cli_bytes, "cli"), (api_bytes, "api")))
        if name == "manifest.json":
            cli_bytes, api_bytes = ({key: value for key, value in json.loads(data).items()
                                     if key not in ("date", "command", "made_from", "files")}
                                    for data in (cli_bytes, api_bytes))
        assert cli_bytes == api_bytes, name
    manifest = json.loads((root / "api" / "manifest.json").read_text())
    assert manifest["command"].startswith("regbench.compare(technique='dropout', train_size=200")


def _unstamped(text: str, manifest: dict) -> str:
    """Return a report's text without the date and the command that made it."""
    for stamp in (manifest["date"], manifest["command"], html.escape(manifest["command"], quote=False)):
        text = text.replace(stamp, "")
    return text


def test_a_comparison_gives_its_tables_verdicts_and_figures_in_memory(made):
    root, comparison = made
    for name in ("summary", "effects", "runs", "epochs", "weights", "best_and_final_epochs"):
        assert getattr(comparison, name).to_csv(index=False) == (root / "cli" / f"{name}.csv").read_text(), name
    written = pd.read_csv(root / "cli" / "summary.csv")
    assert comparison.verdicts.to_dict() == {"dropout": written.loc[1, "verdict"]}
    assert set(comparison.figures) == {path.stem for path in (root / "cli").glob("*.png")}
    assert comparison.figures["learning_curves"].axes
    shown = comparison._repr_html_()
    assert "<table>" in shown and written.loc[1, "verdict"] in shown and "<strong>dropout</strong>" in shown


def test_a_saved_comparison_loads_back_and_its_experiment_file_points_at_its_store(made):
    root, comparison = made
    loaded = regbench.load(root / "api")
    pd.testing.assert_frame_equal(loaded.summary, comparison.summary)
    assert loaded.report == (root / "api" / "REPORT.md").read_text()
    options = tomllib.loads((root / "api" / "experiment.toml").read_text())
    assert (root / "api" / options["store"]).resolve() == (root / "store.sqlite").resolve()
    assert (root / "api" / options["data"]).resolve() == SMALL_MNIST.resolve()
    loaded.save(root / "moved")  # saved again elsewhere: its paths follow
    moved = tomllib.loads((root / "moved" / "experiment.toml").read_text())
    assert (root / "moved" / moved["store"]).resolve() == (root / "store.sqlite").resolve()
    with pytest.raises(regbench.UsageError, match="holds the results of another comparison"):
        regbench.load(root / "api").save(_other(root))


def _other(root: Path) -> Path:
    """Return a directory holding another comparison (made from the API's files with other seeds)."""
    other = root / "other"
    other.mkdir(exist_ok=True)
    manifest = json.loads((root / "api" / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**manifest, "seeds": [5, 6]}))
    return other


@pytest.mark.parametrize("keywords, flags", [
    ({"technique": "dropuot"}, ["--technique", "dropuot"]),
    ({"technique": "dropout", "seeds": 0}, ["--technique", "dropout", "--seeds", "0"]),
    ({"technique": "dropout", "seeds": 3, "seed_list": [1, 2]}, ["--technique", "dropout", "--seeds", "3",
                                                                  "--seed-list", "1,2"]),
    ({"technique": "dropout", "train_size": 10}, ["--technique", "dropout", "--train-size", "10"]),
    ({"technique": "dropout", "trials": 4}, ["--technique", "dropout", "--trials", "4"]),
])
def test_a_mistake_raises_the_command_lines_message(runner, keywords, flags, tmp_path):
    result = runner.invoke(cli, ["compare", *flags, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    message = result.stderr.strip().removeprefix("Error: ")
    with pytest.raises(regbench.UsageError) as raised:
        regbench.compare(**keywords, out=tmp_path / "out", verbose=False)
    said = str(raised.value)
    assert said.count("\n") == 0 and not (tmp_path / "out").exists()
    # A flag's mistake names the flag; the API's names the keyword, after the call
    assert said == message or said.split(": ", 1)[1].split(": ", 1)[-1] in message, (said, message)


def test_a_mistyped_keyword_is_named_with_the_closest_one():
    with pytest.raises(regbench.UsageError, match=r"unknown keyword 'seedz' \(did you mean 'seeds'\?\)"):
        regbench.compare("dropout", seedz=3)


def test_the_signature_shows_the_keywords_with_their_defaults():
    import inspect

    signature = inspect.signature(regbench.compare)
    assert signature.parameters["train_size"].default is None
    assert signature.parameters["batch_size"].default == 32
    assert signature.parameters["tune"].default is False
    assert "dry_run" not in signature.parameters


def test_a_study_mistake_raises_the_command_lines_message(runner):
    result = runner.invoke(cli, ["study", "capacty"])
    assert result.exit_code == 2
    with pytest.raises(regbench.UsageError) as raised:
        regbench.study("capacty", verbose=False)
    assert str(raised.value) == result.stderr.strip().removeprefix("Error: ")
    assert "did you mean 'capacity'" in str(raised.value)
    with pytest.raises(regbench.UsageError, match="seeds = 1: 1 is not in the range 2<=x<=1000"):
        regbench.study("capacity", quick=True, seeds=1, verbose=False)


def test_progress_is_a_bar_where_one_is_seen_lines_elsewhere_and_nothing_when_silent(capsys):
    from regbench.progress import Echo
    from regbench.sweep import _Progress
    from tests.helpers import config_for

    todo = [config_for("none", epochs=2), config_for("dropout", epochs=2)]
    row = {"epoch": 1, "train_crossentropy": 0.5, "train_accuracy": 0.8, "val_crossentropy": 0.4,
           "val_accuracy": 0.9, "seconds": 0.1}
    lines = []
    for echo in (Echo(lines.append, bars=True), Echo(lines.append, bars=False), Echo(None, bars=True)):
        progress = _Progress(todo, echo, "in this process")
        progress.epoch_done(0, row)
        echo("a line said while the runs train")
        progress.run_ended(0)  # stopped early: its epochs count as done
        progress.run_ended(1)  # trained elsewhere, likewise
        progress.close()
    shown = capsys.readouterr().err
    assert "2 runs: 100%" in shown and "4/4 [" in shown  # the bar, to its end
    assert "a line said while the runs train" in shown  # written above the bar
    assert len(lines) == 2 and lines[0].startswith("[run 1/2] none") and "val ce 0.4000 acc 0.9000" in lines[0]
    assert lines[1] == "a line said while the runs train"  # without a bar: a line per epoch; silent: nothing


def test_the_shell_completes_techniques_and_study_names(runner):
    def complete(words: str) -> list[str]:
        result = runner.invoke(cli, [], env={"_REGBENCH_COMPLETE": "bash_complete", "COMP_WORDS": words,
                                             "COMP_CWORD": str(len(words.split()) - 1)}, prog_name="regbench")
        return [line.partition(",")[2] for line in result.output.splitlines()]

    assert complete("regbench compare --technique dropout,ba") == ["dropout,batchnorm"]
    assert complete("regbench study cap") == ["capacity"]
    assert "--technique" in complete("regbench compare --tech")
