"""The `regbench` command line: parse and check options, call one library function, echo paths."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import click
import pandas as pd

from regbench import __version__
from regbench.backend import DEVICES, check_installed, select_backend
from regbench.config import (
    ACTIVATIONS, ARCHITECTURES, BACKENDS, DEFAULT_HIDDEN, DEFAULT_LR, OPTIMIZERS, RunConfig,
)
from regbench.errors import UsageError
from regbench.techniques import BASELINE, TECHNIQUES, parse_param_overrides, parse_setting, resolve_params

DEFAULT_STORE = Path("results/regbench.sqlite")
ALL_ALONE = [name for name in TECHNIQUES if name != BASELINE]  # what `--technique all` expands to


class _Commands(click.Group):
    """A group whose every error is one line on stderr with exit status 2 (no traceback)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        self.arguments = list(sys.argv[1:] if args is None else args)  # for the manifests' command line
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as error:
            click.echo(f"Error: {error.format_message()}", err=True)
            sys.exit(error.exit_code)
        except UsageError as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(2)
        except click.exceptions.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(130)
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)


class _IntList(click.ParamType):
    """A comma-separated list of integers, each at least `minimum`."""

    name = "N,N,..."

    def __init__(self, minimum: int):
        self.minimum = minimum

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            numbers = tuple(int(part) for part in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers, e.g. 1024,1024", param, ctx)
        if any(number < self.minimum for number in numbers):
            self.fail(f"{value!r} has a value below {self.minimum}; each must be >= {self.minimum}", param, ctx)
        if len(set(numbers)) != len(numbers) and param.name == "seed_list":
            self.fail(f"{value!r} repeats a seed", param, ctx)
        return numbers


def _command_line() -> str:
    """Return the command line being run, as a shell would take it."""
    return shlex.join(["regbench", *cli.arguments])


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="regbench")
def cli():
    """Paired regularization benchmarks on real MNIST with Keras."""


def _run_options(command_defaults: bool):
    """Return the model, data and backend options shared by `compare` and `study`.

    `study` leaves the run settings unset (None) so that each study's own preset applies.
    """
    def default(value):
        return value if command_defaults else None

    hint = "" if command_defaults else " [default: the study's]"
    options = [
        click.option("--epochs", type=click.IntRange(1, 10_000), default=default(10), show_default=command_defaults,
                     help="Maximum epochs." + hint),
        click.option("--batch-size", type=click.IntRange(1), default=default(32), show_default=command_defaults,
                     help="Images per step." + hint),
        click.option("--train-size", type=click.IntRange(100, 50_000), default=None,
                     help="Stratified subset of the 50k training images" + (hint or " [default: all]") + "."),
        click.option("--architecture", type=click.Choice(ARCHITECTURES), default=default("mlp"),
                     show_default=command_defaults, help=hint.strip() or None),
        click.option("--hidden", type=_IntList(1), default=None,
                     help="Hidden dense widths [default: 128,64 for mlp; 128 for the cnn's head]."),
        click.option("--activation", type=click.Choice(ACTIVATIONS), default=default("relu"),
                     show_default=command_defaults, help=hint.strip() or None),
        click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=default("adam"),
                     show_default=command_defaults, help=hint.strip() or None),
        click.option("--lr", type=click.FloatRange(0, 1e6, min_open=True), default=None,
                     help="Learning rate [default: 1e-3; 1e-2 for sgd]."),
        click.option("--backend", type=click.Choice(BACKENDS), default="tensorflow", show_default=True),
        click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True),
        click.option("--data", type=click.Path(dir_okay=False), default=None,
                     help="mnist.npz in Keras' layout [default: $REGBENCH_DATA, then ~/.keras/datasets/mnist.npz]."),
        click.option("--store", type=click.Path(dir_okay=False), default=str(DEFAULT_STORE), show_default=True,
                     help="SQLite run store shared by all invocations."),
        click.option("--jobs", type=click.IntRange(1, 256), default=1, show_default=True,
                     help="Runs trained at once, each in its own worker process on one CPU core with one thread "
                          "(CPU only)."),
    ]

    def apply(command):
        for option in reversed(options):
            command = option(command)
        return command

    return apply


@cli.command()
@click.option("--technique", "techniques", required=True, metavar="SETTING[,SETTING...]",
              help="Technique(s) to compare with the baseline: 'dropout', 'dropout+l2', 'dropout,l2,batchnorm'; "
                   "'all' is every technique alone.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Set a technique parameter, e.g. rate=0.3 or l2=1e-3 (repeatable; see `regbench list`).")
@click.option("--seeds", type=click.IntRange(1, 1000), default=None, help="Number of seeds 0..N-1 [default: 3].")
@click.option("--seed-list", type=_IntList(0), default=None, help="Explicit seeds, e.g. 0,4,7.")
@click.option("--momentum", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Momentum (sgd, rmsprop) [default: 0].")
@click.option("--nesterov", is_flag=True, help="Nesterov momentum (sgd).")
@click.option("--out", type=click.Path(), default=None, help="Output directory [default: results/compare-SETTINGS].")
@_run_options(command_defaults=True)
def compare(techniques, params, seeds, seed_list, epochs, batch_size, train_size, architecture, hidden,
            activation, optimizer, lr, momentum, nesterov, backend, device, data, out, store, jobs):
    """Train baseline and treated models pairwise over seeds; write tables, figures and a report."""
    # 1. Check every option that needs no data or backend.
    texts = [text.strip() for text in techniques.split(",") if text.strip()]
    texts = [name for text in texts for name in (ALL_ALONE if text == "all" else [text])]
    settings = [parse_setting(text) for text in texts]
    if not settings or any(names == (BASELINE,) for names in settings):
        raise UsageError("--technique needs at least one technique other than 'none' (the baseline is always run)")
    settings = list(dict.fromkeys(settings))
    overrides = parse_param_overrides(params, settings)
    if seeds is not None and seed_list is not None:
        raise UsageError("--seeds and --seed-list exclude each other; give one")
    if momentum is not None and optimizer not in ("sgd", "rmsprop"):
        raise UsageError(f"--momentum applies to sgd and rmsprop, not {optimizer}")
    if nesterov and optimizer != "sgd":
        raise UsageError(f"--nesterov applies to sgd, not {optimizer}")
    _check_jobs(jobs, device)
    names = ["+".join(setting) for setting in settings]
    base = RunConfig(
        architecture=architecture, hidden=hidden or DEFAULT_HIDDEN[architecture], activation=activation,
        optimizer=optimizer, lr=lr or DEFAULT_LR[optimizer], momentum=momentum or 0.0, nesterov=nesterov,
        epochs=epochs, batch_size=batch_size, backend=backend,
    )
    # 2. Start the backend (before Keras is imported), then hand over to the runner.
    # With --jobs the workers start the backend on the CPU; this process plans and reports without it.
    if jobs > 1:
        check_installed(backend)
        used_device = "cpu"
    else:
        used_device = select_backend(backend, device)
    from regbench.runner import CompareRequest, run_compare

    request = CompareRequest(
        settings=tuple((name, resolve_params(setting, overrides)) for name, setting in zip(names, settings)),
        seeds=seed_list or tuple(range(seeds or 3)),
        base=base,
        train_size=train_size,
        out=Path(out or f"results/compare-{'_'.join(names)}"),
        store=Path(store),
        data=data,
        command=_command_line(),
        jobs=jobs,
    )
    outcome = run_compare(request, used_device, echo=lambda line: click.echo(line, err=True))
    click.echo(format_summary(outcome.summary))
    click.echo(f"{outcome.trained} runs trained, {outcome.reused} reused; wrote {len(outcome.files)} files to {request.out}/")


def _check_jobs(jobs: int, device: str) -> str:
    """Check --jobs against the CPU cores and the device ('auto' before the backend starts); return the device."""
    cores = len(os.sched_getaffinity(0))
    if jobs > cores:
        raise UsageError(f"--jobs {jobs} is more than the {cores} CPU cores this process may use; allowed 1..{cores}")
    if jobs > 1 and device == "gpu":
        raise UsageError("--jobs trains on CPU cores, one run per core; on a GPU use --jobs 1 (or --device cpu)")
    return device


def format_summary(summary) -> str:
    """Render the summary table for the console: means, SDs and the paired difference with its CI."""
    lines = [f"{'technique':<22} {'runs':>4} {'test acc %':>14} {'gap %':>14} {'epochs':>6} "
             f"{'s/epoch':>7}  paired test-acc diff, pp [95% CI]  verdict"]
    for _, row in summary.iterrows():
        diff = ""
        if row["technique"] != BASELINE and pd.notna(row["test_accuracy_diff"]):
            interval = (f"[{row['diff_ci_low'] * 100:+.2f}, {row['diff_ci_high'] * 100:+.2f}]"
                        if pd.notna(row["diff_ci_low"]) else "[no interval from one pair]")
            diff = f"{row['test_accuracy_diff'] * 100:+.2f} {interval} n={int(row['pairs'])}  {row['verdict']}"
        elif row["technique"] != BASELINE:
            diff = "no successful pair"
        lines.append(
            f"{row['technique']:<22} {row['runs']:>4} {_mean_sd(row, 'test_accuracy', 100):>14} "
            f"{_mean_sd(row, 'gap', 100):>14} {row['epochs_run_mean']:>6.1f} "
            f"{row['seconds_per_epoch_mean']:>7.2f}  {diff}"
        )
    if summary["diverged"].sum():
        lines.append(f"{summary['diverged'].sum()} diverged run(s) left out of the statistics (see runs.csv)")
    return "\n".join(lines)


def _mean_sd(row, metric: str, scale: float) -> str:
    """Format 'mean ± sd' (just the mean when there is no SD)."""
    mean, sd = row[f"{metric}_mean"] * scale, row[f"{metric}_sd"] * scale
    return f"{mean:.2f} ± {sd:.2f}" if pd.notna(sd) else f"{mean:.2f}"


@cli.command()
@click.argument("name", required=False, metavar="NAME|all")
@click.option("--list", "list_only", is_flag=True, help="List the studies with their questions and exit.")
@click.option("--quick", is_flag=True, help="A tiny configuration: a first look in seconds (and the CI test).")
@click.option("--seeds", type=click.IntRange(1, 1000), default=None, help="Number of seeds 0..N-1 [default: the study's].")
@click.option("--out", type=click.Path(), default=None,
              help="Output directory [default: results/studies/NAME, or NAME-quick; with 'all', one "
                   "subdirectory per study].")
@_run_options(command_defaults=False)
def study(name, list_only, quick, seeds, out, epochs, batch_size, train_size, architecture, hidden, activation,
          optimizer, lr, backend, device, data, store, jobs):
    """Run a named study (a textbook claim, measured) and write its tables, figures and REPORT.md."""
    from regbench.studies import CATALOGUE, study_names

    if list_only or not name:
        if not list_only:
            raise UsageError("name a study (or 'all'); `regbench study --list` lists them")
        for study_name, (claim, question) in CATALOGUE.items():
            click.echo(f"  {study_name:<16} \"{claim}\": {question}")
        return
    names = study_names(name)
    options = {key: value for key, value in dict(
        epochs=epochs, batch_size=batch_size, train_size=train_size, architecture=architecture, hidden=hidden,
        activation=activation, optimizer=optimizer, lr=lr, backend=backend).items() if value is not None}
    _check_jobs(jobs, device)
    used_device = _check_jobs(jobs, select_backend(backend, device))
    from regbench.studies import run_study

    for study_name in names:
        folder = f"{study_name}-quick" if quick else study_name  # a quick look never overwrites full results
        directory = Path(out or "results/studies") / folder if (out is None or len(names) > 1) else Path(out)
        verdict, files = run_study(
            study_name, options, seeds, quick, directory, Path(store), data, used_device,
            command=_command_line(), echo=lambda line: click.echo(line, err=True), jobs=jobs,
        )
        click.echo(f"{study_name}: {verdict}")
        click.echo(f"wrote {len(files)} files to {directory}/ (REPORT.md, report.html)")


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False))
def report(directory):
    """Re-render REPORT.md, report.html, statistics and figures of a compare output DIRECTORY."""
    from regbench.report import rebuild_report

    summary, files = rebuild_report(directory)
    click.echo(format_summary(summary))
    click.echo(f"wrote {len(files)} files to {directory}/ (REPORT.md, report.html)")


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--store", type=click.Path(dir_okay=False), default=str(DEFAULT_STORE), show_default=True,
              help="The run store the comparison was made from.")
@click.option("--rerun", type=click.IntRange(0), default=0, show_default=True,
              help="Also retrain this many random stored runs and compare every number but timings.")
@click.option("--data", type=click.Path(dir_okay=False), default=None, help="mnist.npz, for --rerun.")
def verify(directory, store, rerun, data):
    """Recompute a compare DIRECTORY's runs and summary from the store; exit 1 if anything differs."""
    from regbench.store import read_comparison

    written, manifest = read_comparison(Path(directory))
    if not Path(store).is_file():
        raise UsageError(f"--store {store}: no such run store; pass the --store the comparison used")
    select_backend(manifest["config"]["backend"], manifest["config"]["device"])
    from regbench.verify import verify_comparison

    problems = verify_comparison(Path(directory), written, manifest, Path(store), rerun, data,
                                 echo=lambda line: click.echo(line, err=True))
    for problem in problems:
        click.echo(f"DIFFERS: {problem}")
    if problems:
        click.echo(f"{directory}: {len(problems)} difference(s) from the store")
        sys.exit(1)
    reran = f", and {rerun} retrained run(s) reproduced exactly" if rerun else ""
    click.echo(f"{directory}: verified, every row matches the store{reran}")


@cli.command(name="list")
def list_choices():
    """List techniques with their parameters and defaults, architectures, optimizers and backends."""
    click.echo("Techniques (combine with '+', compare several with ','; set parameters with --param NAME=VALUE):")
    for technique in TECHNIQUES.values():
        click.echo(f"  {technique.name:<15} {technique.summary}")
        for param in technique.params:
            click.echo(f"  {'':<15}   {param.name}={param.default:g}  ({param.kind.__name__}, "
                       f"{param.allowed()}) {param.help}")
    click.echo("Architectures:")
    click.echo("  mlp             784-128-64-10 dense net (widths via --hidden), softmax output")
    click.echo("  cnn             two conv(3x3)+max-pool blocks (32, 64 filters), dense head (--hidden, default 128)")
    click.echo("Optimizers (default learning rate):")
    for name in OPTIMIZERS:
        click.echo(f"  {name:<15} lr {DEFAULT_LR[name]:g}")
    click.echo(f"Backends: {', '.join(BACKENDS)} (default tensorflow); devices: {', '.join(DEVICES)}")
