"""regbench from Python: `compare`, `study` and `load`, with results as pandas DataFrames and matplotlib figures.

The keywords are the command line's long options (`train_size=2000` for `--train-size 2000`), converted, checked
and resolved by the same options layer; a mistake raises `UsageError` with the command line's one-line message.
A process that stays (a notebook, a script that loops) keeps the loaded data, the backend and its compiled programs
between calls.
"""

from __future__ import annotations

import functools
import html
import inspect
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from regbench import options as layer
from regbench.errors import UsageError
from regbench.progress import Echo

if TYPE_CHECKING:  # annotations only: these load pandas and matplotlib
    import pandas as pd
    from matplotlib.figure import Figure

    from regbench.outputs import Manifest
    from regbench.store import RunTables

__all__ = ["Comparison", "Study", "UsageError", "compare", "load", "study"]

OptionValue = str | int | float | bool | Sequence[str | int] | os.PathLike | dict | None  # any keyword's value


class Comparison:
    """A comparison's results: its tables (the columns of its CSV files), verdicts, figures and report.

    Made by `compare` or read back by `load`. Statistics and figures are computed when first asked for.
    """

    def __init__(self, tables: RunTables, manifest: Manifest, tuning: pd.DataFrame | None, base: Path,
                 directory: Path | None = None):
        from regbench.report import as_stored

        self._tables, self.manifest, self.tuning = tables, as_stored(manifest), tuning
        self._base = base  # the folder the recorded paths (--data, --store) are relative to
        self.directory = directory  # where its files are, if written

    @property
    def runs(self) -> pd.DataFrame:
        """One row per run: configuration, final and measured metrics, timings (runs.csv)."""
        return self._tables.runs

    @property
    def epochs(self) -> pd.DataFrame:
        """One row per run and epoch: training and validation metrics, seconds (epochs.csv)."""
        return self._tables.epochs

    @property
    def weights(self) -> pd.DataFrame:
        """Each run's histogram of kernel weight magnitudes (weights.csv)."""
        return self._tables.weights

    @functools.cached_property
    def _statistics(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        from regbench.report import comparison_statistics

        return comparison_statistics(self._tables.runs, self.manifest)

    @property
    def summary(self) -> pd.DataFrame:
        """One row per arm, the baseline first: means, SDs, paired effect on test accuracy and verdict
        (summary.csv)."""
        return self._statistics[2]

    @property
    def effects(self) -> pd.DataFrame:
        """Every arm's paired effect on every metric with its tests (effects.csv)."""
        return self._statistics[1]

    @property
    def best_and_final_epochs(self) -> pd.DataFrame:
        """Each arm's best-validation and final epoch (best_and_final_epochs.csv)."""
        from regbench.stats import best_and_final_epochs

        return best_and_final_epochs(self._tables.epochs)

    @property
    def verdicts(self) -> pd.Series:
        """Each compared arm's verdict on test accuracy against the baseline, by arm."""
        return self.summary.set_index("technique")["verdict"].iloc[1:]

    @property
    def bottom_line(self) -> list[str]:
        """Each compared arm's result in one sentence: effect, the interval its verdict rests on, verdict."""
        from regbench.report import bottom_lines

        return bottom_lines(self.manifest, self.summary)

    @functools.cached_property
    def figures(self) -> dict[str, Figure]:
        """The report's figures as matplotlib Figures, by name (as their PNG files are named)."""
        from regbench.report import comparison_figures

        return comparison_figures(self._tables, self.manifest, self.summary, self.tuning)

    @property
    def report(self) -> str:
        """The report, REPORT.md's Markdown (figures linked by their file names)."""
        from regbench.report import comparison_texts

        return comparison_texts(self.manifest, self._statistics[0], self.epochs, self.summary, self.effects,
                                self.best_and_final_epochs, tuning=self.tuning)["REPORT.md"]

    def save(self, directory: str | os.PathLike, force: bool = False) -> list[Path]:
        """Write the comparison's files into `directory`, as `regbench compare --out DIRECTORY` writes them; refuse
        (UsageError) a directory holding another comparison unless `force`. Return the paths written."""
        from regbench.outputs import check_same_comparison
        from regbench.report import write_comparison
        from regbench.runner import manifest_identity

        out = Path(directory)
        check_same_comparison(out, manifest_identity(self.manifest), force)
        manifest = self.manifest.copy()
        manifest["options"] = layer.rebase(self.manifest.get("options", {}), self._base, out)
        _, files = write_comparison(out, self._tables, manifest, self.tuning)
        self.directory = out
        return files

    def __repr__(self) -> str:
        from regbench.report import comparison_title

        where = f", saved in {self.directory}" if self.directory else ""
        return f"<Comparison: {comparison_title(self.manifest)}{where}>\n" + "\n".join(self.bottom_line)

    def _repr_html_(self) -> str:
        """The notebook's display: the title, the bottom line and the summary table."""
        import markdown

        from regbench.report import comparison_title, summary_table

        lines = "".join(f"- {line}\n" for line in self.bottom_line)
        body = markdown.markdown(f"{lines}\n{summary_table(self.summary)}", extensions=["tables"])
        return f"<div><p><strong>{html.escape(comparison_title(self.manifest))}</strong></p>{body}</div>"


class Study:
    """A study's findings: its verdict, tables, figures and report, written in `directory`."""

    def __init__(self, name: str, verdict: str, tables: dict[str, pd.DataFrame], figures: dict[str, Figure],
                 directory: Path):
        self.name, self.verdict, self.tables, self.figures, self.directory = name, verdict, tables, figures, directory

    @property
    def report(self) -> str:
        """The study's REPORT.md."""
        return (self.directory / "REPORT.md").read_text(encoding="utf-8")

    def __repr__(self) -> str:
        return f"<Study {self.name} in {self.directory}>\n{self.verdict}"

    def _repr_html_(self) -> str:
        return f"<div><p><strong>Study {html.escape(self.name)}</strong></p><p>{html.escape(self.verdict)}</p></div>"


def compare(technique: str | Sequence[str], verbose: bool = True, **options: OptionValue) -> Comparison:
    """Train the baseline and each technique pairwise over seeds and return the comparison.

    `technique` and the keywords are `regbench compare`'s options (see `regbench compare --help`), e.g.
    ``compare("dropout,l2", seeds=5, backend="jax", tune=True)``. With `out`, its files are written there as the
    command line writes them; without, nothing is written until `Comparison.save`. `verbose=False` is silent.
    """
    from regbench.runner import run_compare

    call = _call_text("compare", {"technique": technique, **options})
    values = layer.from_keywords(_command("compare"), {"technique": technique, **options}, call)
    resolved = layer.resolve_compare(values, call, write=values["out"] is not None)
    if resolved.dry_run:
        raise UsageError(f"{call}: dry_run is for the command line (`regbench compare --dry-run`)")
    with resolved.executor:
        outcome = run_compare(resolved.request, resolved.device, echo=_echo(verbose), executor=resolved.executor)
    out = resolved.request.out
    return Comparison(outcome.tables, outcome.manifest, outcome.tuning, Path.cwd() / (out or ""), out)


def load(directory: str | os.PathLike) -> Comparison:
    """Read a comparison's output directory back (as `regbench compare` or `Comparison.save` wrote it)."""
    from regbench.outputs import read_comparison, read_tuning

    path = Path(directory)
    tables, manifest = read_comparison(path)
    return Comparison(tables, manifest, read_tuning(path, manifest), path.absolute(), path)


def study(name: str, verbose: bool = True, **options: OptionValue) -> Study:
    """Run the study `name` (see `regbench study --list`) and return its findings; the keywords are
    `regbench study`'s options (e.g. quick=True, seeds=3). Its files are written as the command line writes them."""
    from regbench.studies import run_study

    call = _call_text("study", {"name": name, **options})
    values = layer.from_keywords(_command("study"), options, call)
    resolved = layer.resolve_studies({**values, "name": name}, echo=_echo(verbose))
    if len(resolved.planned) != 1:
        raise UsageError(f"{call}: name one study; call study() once per study")
    plan = resolved.planned[0]
    with resolved.executor:
        findings, _ = run_study(plan, command=call)
    return Study(plan.name, findings.verdict, findings.tables, findings.figures, plan.out)


@functools.cache
def _command(name: str) -> click.Command:
    """Return the command line's command `name`, whose options declare the keywords."""
    from regbench.cli import cli

    return cli.commands[name]


def _call_text(function: str, keywords: dict) -> str:
    """Write a call as Python would (for the manifest's command and for messages)."""
    arguments = ", ".join(f"{key}={value!r}" for key, value in keywords.items() if key != "verbose")
    return f"regbench.{function}({arguments})"


def _echo(verbose: bool) -> Echo:
    """Return where progress goes: lines on stderr and a progress bar where one is seen, or nowhere."""
    return Echo((lambda line: print(line, file=sys.stderr, flush=True)) if verbose else None)


def _signature(command: str, first: str) -> inspect.Signature:
    """Return the signature a function taking `command`'s options as keywords shows (help(), a notebook's hints)."""
    params = [inspect.Parameter(first, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                annotation="str | Sequence[str]" if first == "technique" else "str"),
              inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=True, annotation=bool)]
    ctx = click.Context(_command(command))
    for param in _command(command).params:
        names = [name[2:].replace("-", "_") for name in param.opts if name.startswith("--")]
        if isinstance(param, click.Option) and names and names[0] not in (first, "config", "list", "dry_run"):
            default = param.get_default(ctx, call=False)
            default = False if param.is_flag and not isinstance(default, bool) else () if param.multiple else default
            params.append(inspect.Parameter(names[0], inspect.Parameter.KEYWORD_ONLY, default=default,
                                            annotation=_annotation(param)))
    params.append(inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None,
                                    annotation="str | os.PathLike | None"))
    return inspect.Signature(params, return_annotation=Comparison if command == "compare" else Study)


def _annotation(param: click.Option) -> str:
    """Return the type a keyword takes, as its option's type converts it."""
    if param.is_flag:
        return "bool"
    if param.multiple:
        return "str | Sequence[str]"
    kind = ("int" if isinstance(param.type, click.types.IntParamType) else
            "float" if isinstance(param.type, click.types.FloatParamType) else
            "str | os.PathLike" if isinstance(param.type, click.Path) else
            "Sequence[int] | str" if param.type.name == "N,N,..." else
            "dict[str, float] | str" if param.metavar == "NAME=N[,NAME=N]" else
            "int | str" if param.type.name == "N|auto" else "str")
    return kind if param.required else f"{kind} | None"


compare.__signature__ = _signature("compare", "technique")  # type: ignore[attr-defined]
study.__signature__ = _signature("study", "name")  # type: ignore[attr-defined]
