"""Run the CLI as `python -m regbench`."""

from regbench.cli import cli

cli(prog_name="regbench")
