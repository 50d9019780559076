"""Run in a JAX process by tests/helpers.py: `regbench study NAME --quick [OPTION ...]` for each NAME given, one
after another in this one process (so that they share its compiled programs), printing their outputs as JSON.

Usage: quick_studies.py ROOT DATA NAME [NAME ...] [-- OPTION ...]: each study writes ROOT/out/NAME-quick and
every study stores its runs in ROOT/runs.sqlite.
"""

import json
import sys

from click.testing import CliRunner

from regbench.cli import cli

root, data, *rest = sys.argv[1:]
names, options = (rest[:rest.index("--")], rest[rest.index("--") + 1:]) if "--" in rest else (rest, [])
results = {}
for name in names:
    result = CliRunner().invoke(cli, ["study", name, "--quick", "--backend", "jax", "--out", f"{root}/out/{name}-quick",
                                      "--store", f"{root}/runs.sqlite", "--data", data, *options])
    results[name] = {"exit_code": result.exit_code, "stdout": result.stdout, "stderr": result.stderr}
print(json.dumps(results))
