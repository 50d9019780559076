"""Run in a JAX process by tests/helpers.py: `regbench study NAME --quick [OPTION ...]` for each NAME given, one
after another in this one process (so that they share its compiled programs), printing their outputs as JSON.

Usage: quick_studies.py ROOT DATA NAME [NAME ...] [-- OPTION ...]: each study writes ROOT/out/NAME-quick and
every study stores its runs in ROOT/runs.sqlite.

With REGBENCH_TEST_ORACLE set, the studies write ROOT/oracle/NAME-quick instead, and everything a choice must not
read is turned upside down as the study reads it (tests/helpers.py: check_choices_blind): every test number of
every stored run, every validation number of the evaluation seeds' runs (seeds below the tuning seeds), and the
test set's labels (permuted). The studies named in REGBENCH_TEST_ORACLE_OWN_VALIDATION (comma-separated) keep their
evaluation seeds' validation numbers: their choices are per-run rules that read each run's own validation curve by
design (where early stopping stops), so only the test set is hidden from them.
"""

import json
import os
import sys

import numpy as np
from click.testing import CliRunner

from regbench.cli import cli
from regbench.config import DEFAULT_TUNE_SEEDS

HIDDEN = {"evaluation validation": True}  # whether the study running now must not read the evaluation seeds' validation


def scramble_what_choices_must_not_read() -> None:
    """Make RunStore.load and Splits.get return noise where a choice has no business reading."""
    from dataclasses import replace

    from regbench.data import Splits
    from regbench.store import RunStore, RunTables

    load, get = RunStore.load, Splits.get

    def scrambled(table, evaluation):
        """Turn every hidden number upside down (x -> max + min - x over the rows hidden): whatever ranks by them
        ranks the other way round."""
        table = table.copy()
        for column in table.columns:
            hidden = column.startswith(("test_", "best_test_")) or (
                column.startswith(("val_", "best_val_")) and column != "best_val_epoch")
            if hidden and table[column].dtype.kind == "f":
                rows = evaluation(table) if column.startswith(("val_", "best_val_")) else slice(None)
                values = table.loc[rows, column]
                table.loc[rows, column] = values.max() + values.min() - values
        return table

    def noisy_load(self, run_ids):
        tables = load(self, run_ids)
        if not len(tables.runs):
            return tables

        def evaluation(table):
            return (table["seed"] < min(DEFAULT_TUNE_SEEDS)) & HIDDEN["evaluation validation"]

        return RunTables(scrambled(tables.runs, evaluation), scrambled(tables.epochs, evaluation), tables.weights)

    def noisy_get(self, *key):
        split = get(self, *key)
        return replace(split, y_test=np.random.default_rng(1).permutation(split.y_test))

    RunStore.load, Splits.get = noisy_load, noisy_get


root, data, *rest = sys.argv[1:]
names, options = (rest[:rest.index("--")], rest[rest.index("--") + 1:]) if "--" in rest else (rest, [])
oracle = bool(os.environ.get("REGBENCH_TEST_ORACLE"))
if oracle:
    scramble_what_choices_must_not_read()
own_validation = set(filter(None, os.environ.get("REGBENCH_TEST_ORACLE_OWN_VALIDATION", "").split(",")))
results = {}
for name in names:
    HIDDEN["evaluation validation"] = name not in own_validation
    out = f"{root}/{'oracle' if oracle else 'out'}/{name}-quick"
    result = CliRunner().invoke(cli, ["study", name, "--quick", "--backend", "jax", "--out", out,
                                      "--store", f"{root}/runs.sqlite", "--data", data, *options])
    results[name] = {"exit_code": result.exit_code, "stdout": result.stdout, "stderr": result.stderr}
print(json.dumps(results))
