"""Hypothesis: any combination of good and bad options ends in exit 0 or a one-line exit 2, never a crash."""

import sqlite3

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regbench.cli import cli

OPTIONS = {
    "--technique": ["dropout", "l2+dropout", "dropuot", "none", "", ",", "max-norm", "l1,l1"],
    "--param": ["rate=0.2", "rate=2", "rte=0.1", "l2=abc", "=1", "c=0", "patience=1.5"],
    "--train-size": ["100", "150", "50", "-3", "abc", "999999"],
    "--epochs": ["1", "0", "-1", "x"],
    "--seeds": ["1", "0", "two"],
    "--seed-list": ["3", "1,1", "a", "-1"],
    "--batch-size": ["64", "0", "100000"],
    "--architecture": ["mlp", "cnn", "resnet"],
    "--hidden": ["16", "0", "a,b", "8,8"],
    "--activation": ["tanh", "swish"],
    "--optimizer": ["sgd", "rmsprop", "adamw", "bogus"],
    "--lr": ["0.01", "0", "-1", "nan", "inf"],
    "--momentum": ["0.5", "2"],
    "--backend": ["tensorflow", "theano", "jax"],
    "--device": ["cpu", "tpu"],
    "--data": ["/nonexistent.npz"],
}


def stored(path):
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(sorted(OPTIONS)), st.data(), max_size=5), st.data())
def test_option_combinations_never_crash(tmp_path, chosen, data):
    args = ["compare", "--technique", "dropout", "--train-size", "100", "--epochs", "1", "--seeds", "1"]
    for option in chosen:
        args += [option, data.draw(st.sampled_from(OPTIONS[option]), label=option)]
    store = tmp_path / "store.sqlite"
    before = stored(store)
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "out"), "--store", str(store)])
    assert result.exit_code in (0, 2), (args, result.output, result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), (args, result.stderr)
        assert stored(store) == before  # a mistake leaves the store untouched
