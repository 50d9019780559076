"""The `regbench` command line: parse and check options, call one library function, echo paths."""

from __future__ import annotations

import math
import shlex
import sys
import time
from pathlib import Path

import click

from regbench import __version__
from regbench.backend import DEVICES, select_backend
from regbench.config import (
    ACTIVATIONS,
    ARCHITECTURES,
    BACKENDS,
    DEFAULT_LR,
    DEFAULT_MARGIN,
    DEFAULT_MAX_SEEDS,
    DEFAULT_RACE_SEEDS,
    DEFAULT_SEED_BATCH,
    DEFAULT_TRIALS,
    DEFAULT_TUNE_SEEDS,
    OPTIMIZERS,
    PROTOCOLS,
    SCHEDULES,
    SELECTIONS,
    TUNE_METRICS,
)
from regbench.data import DATASETS, DEFAULT_DATASET, MAX_TRAIN_SIZE, MIN_TRAIN_SIZE
from regbench.errors import Interrupted, SweepError, UsageError
from regbench.executor import CONNECT_SECONDS
from regbench.options import DEFAULT_SEEDS, DEFAULT_STORE, MAX_SEED, from_toml, resolve_compare, resolve_studies
from regbench.progress import Echo
from regbench.techniques import ARM_SYNTAX, BASELINE, TECHNIQUES, parse_arm


class _Commands(click.Group):
    """A group whose every error is one line on stderr with exit status 2 (no traceback)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        self.arguments = list(sys.argv[1:] if args is None else args)  # for the manifests' command line
        if not self.arguments:  # bare `regbench`: its help, as --help gives it
            self.arguments, args = ["--help"], ["--help"]
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as error:
            click.echo(f"Error: {error.format_message()}", err=True)
            sys.exit(error.exit_code)
        except UsageError as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(2)
        except SweepError as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(1)
        except Interrupted:  # the sweep has said what it stored and how to resume
            sys.exit(130)
        except click.exceptions.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(130)
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)


class _IntList(click.ParamType):
    """A comma-separated list of integers, each within minimum..maximum."""

    name = "N,N,..."

    def __init__(self, minimum: int, maximum: int = 2**31 - 1):
        self.minimum, self.maximum = minimum, maximum

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            numbers = tuple(int(part) for part in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers, e.g. 1024,1024", param, ctx)
        if any(number < self.minimum for number in numbers):
            self.fail(f"{value!r} has a value below {self.minimum}; each must be >= {self.minimum}", param, ctx)
        if any(number > self.maximum for number in numbers):
            self.fail(f"{value!r} has a value above {self.maximum}; allowed {self.minimum}..{self.maximum}", param, ctx)
        if len(set(numbers)) != len(numbers) and param.name in ("seed_list", "tune_seed_list"):
            self.fail(f"{value!r} repeats a seed", param, ctx)
        return numbers


class _Resources(click.ParamType):
    """Dask worker resources a run asks for: NAME=N[,NAME=N], e.g. GPU=1."""

    name = "NAME=N[,NAME=N]"

    def convert(self, value, param, ctx):
        if isinstance(value, dict):
            return value
        resources = {}
        for part in str(value).split(","):
            name, _, amount = (text.strip() for text in part.partition("="))
            try:
                resources[name] = float(amount)
            except ValueError:
                self.fail(f"{part!r} is not NAME=N with a number N, e.g. GPU=1", param, ctx)
            if not name or not math.isfinite(resources[name]) or resources[name] <= 0:
                self.fail(f"{part!r}: give a name and a positive amount, e.g. GPU=1", param, ctx)
        return resources


class _SeedCount(click.ParamType):
    """A number of seeds, 1..1000, or 'auto' (sequential seeds)."""

    name = "N|auto"

    def convert(self, value, param, ctx):
        if value == "auto" or isinstance(value, int) and 1 <= value <= 1000:
            return value
        try:
            count = int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number of seeds nor 'auto'", param, ctx)
        if not 1 <= count <= 1000:
            self.fail(f"{count} is not in the range 1<=x<=1000 (or 'auto')", param, ctx)
        return count


class _FiniteFloatRange(click.FloatRange):
    """A float range that also refuses NaN and infinities (which pass every comparison or bound)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number; allowed {self._describe_range()}", param, ctx)
        return number


def _settings(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Complete the last of --technique's comma-separated settings with a technique's name (shell completion)."""
    given, _, last = incomplete.rpartition(",")
    return [f"{given},{name}" if given else name for name in (*TECHNIQUES, "all") if name.startswith(last)]


def _study_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Complete a study's name (shell completion)."""
    from regbench.studies import CATALOGUE

    return [name for name in (*CATALOGUE, "all") if name.startswith(incomplete)]


def _command_line() -> str:
    """Return the command line being run, as a shell would take it."""
    return shlex.join(["regbench", *cli.arguments])


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="regbench")
def cli():
    """Paired regularization benchmarks on real MNIST and Fashion-MNIST with Keras."""


def _read_config(ctx: click.Context, param: click.Parameter, path: str | None) -> None:
    """Make the options of --config FILE.toml the command's defaults, so that flags on the command line win."""
    if path is not None:
        ctx.default_map = {**(ctx.default_map or {}), **from_toml(Path(path), ctx.command, ctx)}


_config_option = click.option(
    "--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False, callback=_read_config,
    metavar="FILE.toml",
    help="Read options from a TOML file whose keys are the long option names (train-size = 2000, technique = "
         "\"dropout\"); options given on the command line win. Every comparison writes its own as experiment.toml.")


def _run_options(command_defaults: bool):
    """Return the model, data and backend options shared by `compare` and `study`.

    `study` leaves the run settings unset (None) so that each study's own preset applies.
    """
    def default(value):
        return value if command_defaults else None

    hint = "" if command_defaults else " [default: the study's]"
    preset = " [default: the --protocol's]" if command_defaults else hint
    options = [
        click.option("--epochs", type=click.IntRange(1, 10_000), default=None, help="Maximum epochs." + preset),
        click.option("--batch-size", type=click.IntRange(1), default=default(32), show_default=command_defaults,
                     help="Images per step." + hint),
        click.option("--train-size", type=click.IntRange(MIN_TRAIN_SIZE, MAX_TRAIN_SIZE), default=None,
                     help="Stratified subset of the 50k training images" + (hint or " [default: all]") + "."),
        click.option("--architecture", type=click.Choice(ARCHITECTURES), default=default("mlp"),
                     show_default=command_defaults, help=hint.strip() or None),
        click.option("--hidden", type=_IntList(1), default=None,
                     help="Hidden dense widths [default: "
                     + ("128,64 for mlp; 128 for the cnn's head" if command_defaults
                        else "the study's; 128 for the cnn's head") + "]."),
        click.option("--activation", type=click.Choice(ACTIVATIONS), default=default("relu"),
                     show_default=command_defaults, help=hint.strip() or None),
        click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=None, help=preset.strip()),
        click.option("--lr", type=_FiniteFloatRange(0, 1e6, min_open=True), default=None,
                     help="Learning rate [default: " + ("the --protocol's; " if command_defaults else "")
                          + "1e-3; 1e-2 for sgd]."),
        click.option("--backend", type=click.Choice(BACKENDS), default="tensorflow", show_default=True,
                     help="Keras' backend. On a CPU here jax is the fastest for the mlp, tensorflow for the cnn "
                          "(docs: Speed)."),
        click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True),
        click.option("--dataset", type=click.Choice(list(DATASETS)), default=default(DEFAULT_DATASET),
                     show_default=command_defaults, help="The images to train and test on." + hint),
        click.option("--data", type=click.Path(), default=None,
                     help="The --dataset's images: an .npz in Keras' layout (as mnist.npz) or a directory of its idx "
                          "files (as Keras' fashion-mnist/) [default: $REGBENCH_DATA, then Keras' cache in "
                          "~/.keras/datasets, then Keras' download]."),
        click.option("--store", type=click.Path(dir_okay=False), default=str(DEFAULT_STORE), show_default=True,
                     help="SQLite run store shared by all invocations."),
        click.option("--jobs", type=click.IntRange(1, 256), default=1, show_default=True,
                     help="Runs trained at once (CPU only). JAX: N threads of this process, sharing its data and "
                          "compiled programs; TensorFlow: a local Dask cluster of N worker processes on 127.0.0.1, "
                          "one CPU core and one thread each. Per-epoch seconds are then measured while N runs "
                          "share the cores."),
        click.option("--scheduler", default=None, metavar="tcp://HOST:PORT",
                     help="Train on the Dask cluster of this scheduler [default: $REGBENCH_SCHEDULER; none: "
                          "--jobs decides]."),
        click.option("--scheduler-timeout", type=_FiniteFloatRange(0, 600, min_open=True), default=CONNECT_SECONDS,
                     show_default=True, metavar="SECONDS",
                     help="--scheduler: how long the scheduler has to answer before regbench says what it found "
                          "there."),
        click.option("--resources", type=_Resources(), default=None, metavar="NAME=N[,NAME=N]",
                     help="--scheduler: what each run asks of a worker, e.g. GPU=1 for workers started with "
                          "`dask worker ... --resources GPU=1` (runs then train on the GPU)."),
        click.option("--send-data", is_flag=True,
                     help="--scheduler: send the data from this process to the workers, rather than have each "
                          "read the --data path from its own disk."),
    ]

    def apply(command):
        for option in reversed(options):
            command = option(command)
        return command

    return apply


@cli.command()
@click.option("--technique", "techniques", required=True, metavar="SETTING[,SETTING...]", shell_complete=_settings,
              help="The arms to compare with the baseline, each SETTING one arm: 'dropout', 'dropout+l2', "
                   "'dropout,l2,batchnorm'; several settings of one technique as TECHNIQUE:NAME=VALUE, e.g. "
                   f"'l2:l2=1e-4,l2:l2=1e-3,dropout:rate=0.2' (in full `{ARM_SYNTAX}`; '+' combines); "
                   "'all' is every technique alone that applies to the --architecture.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Set a technique parameter for every arm that takes it, e.g. rate=0.3 or l2=1e-3 (repeatable; "
                   "see `regbench list`); a value given in --technique as TECHNIQUE:NAME=VALUE wins for its arm.")
@click.option("--baseline", default=BASELINE, show_default=True, metavar="SETTING",
              help="The reference arm every arm is paired with, a SETTING as in --technique, e.g. "
                   "--baseline dropout --technique dropout+batchnorm.")
@click.option("--seeds", type=_SeedCount(), default=None,
              help=f"Number of seeds 0..N-1 [default: {DEFAULT_SEEDS}], or 'auto': add seeds a batch at a time to the "
                   "arms still undecided, with confidence sequences that hold under that stopping rule "
                   "(see --max-seeds).")
@click.option("--max-seeds", type=click.IntRange(2, 1000), default=None,
              help=f"--seeds auto: the most seeds an arm trains [default: {DEFAULT_MAX_SEEDS}].")
@click.option("--seed-batch", type=click.IntRange(1, 1000), default=None,
              help=f"--seeds auto: seeds added per look [default: {DEFAULT_SEED_BATCH}].")
@click.option("--seed-list", type=_IntList(0, MAX_SEED), default=None, help="Explicit seeds, e.g. 0,4,7.")
@click.option("--momentum", type=_FiniteFloatRange(0, 1, max_open=True), default=None,
              help="Momentum (sgd, rmsprop) [default: 0].")
@click.option("--nesterov", is_flag=True, help="Nesterov momentum (sgd).")
@click.option("--out", type=click.Path(), default=None,
              help="Output directory [default: results/compare-SETTINGS, with any --param values in the name].")
@click.option("--force", is_flag=True, help="Replace the results of another comparison in the output directory.")
@click.option("--dry-run", is_flag=True,
              help="List the planned runs, which are stored already, and a time estimate; train and write nothing.")
@click.option("--protocol", type=click.Choice(list(PROTOCOLS)), default="course", show_default=True,
              help="Training budget preset: course (10 epochs, Adam 1e-3 constant, final epoch) or converged "
                   f"({PROTOCOLS['converged']['epochs']} epochs, cosine decay, best-validation epoch); explicit "
                   "options override its values.")
@click.option("--schedule", type=click.Choice(SCHEDULES), default=None,
              help="Learning rate over a run: constant, or cosine decay to 0 [default: the --protocol's].")
@click.option("--warmup-epochs", type=click.IntRange(0), default=None,
              help="Cosine schedule: epochs of linear warm-up from 0 to --lr [default: the --protocol's].")
@click.option("--select", type=click.Choice(SELECTIONS), default=None,
              help="Measure every run at its final epoch, or at its best validation epoch (highest validation "
                   "accuracy) with that epoch's weights [default: the --protocol's].")
@click.option("--tune", is_flag=True,
              help="Choose each setting's parameter values on validation data first: a declared search (see "
                   "`regbench list`) trained on tuning seeds apart from the evaluation seeds.")
@click.option("--trials", type=click.IntRange(1, 1000), default=None,
              help=f"--tune: settings tried per technique setting [default: {DEFAULT_TRIALS}].")
@click.option("--tune-seeds", type=click.IntRange(1, 1000), default=None,
              help=f"--tune: seeds each trial trains on, {DEFAULT_TUNE_SEEDS[0]} upward "
                   f"[default: {len(DEFAULT_TUNE_SEEDS)}].")
@click.option("--tune-seed-list", type=_IntList(0, MAX_SEED), default=None,
              help="--tune: explicit tuning seeds, none of them an evaluation seed.")
@click.option("--tune-metric", type=click.Choice(list(TUNE_METRICS)), default=None,
              help="--tune: the validation metric a trial is scored by, at each run's selected weights "
                   "[default: accuracy].")
@click.option("--search", "searches", multiple=True, metavar="NAME=LO:HI",
              help="--tune: search parameter NAME over LO..HI instead of its declared range (repeatable).")
@click.option("--tune-shared", default=None, metavar="NAME[,NAME...]",
              help="--tune: also search these training options (lr, batch-size, epochs) jointly with every arm's own "
                   "values, and for the baseline in the same budget, so both sides of every pair are at their "
                   "validated best.")
@click.option("--tune-repeats", type=click.IntRange(1, 20), default=None,
              help="--tune: repeat the whole search this many times on tuning seeds of its own (100 apart) and "
                   "evaluate each repeat's choices on the evaluation seeds, to show how much of an effect is the "
                   "draw of the search [default: 1].")
@click.option("--race-seeds", type=click.IntRange(1, 100), default=None,
              help="--tune: the most tuning seeds a racing candidate trains on before the race ends undecided "
                   f"[default: {DEFAULT_RACE_SEEDS}].")
@click.option("--margin", type=_FiniteFloatRange(0, 100, min_open=True), default=None,
              help="The smallest test-accuracy effect that matters, in percentage points: an effect shown to lie "
                   f"within ±margin is 'equivalent' or 'negligible' [default: {DEFAULT_MARGIN * 100:g}].")
@click.option("--target-effect", type=_FiniteFloatRange(0, 100, min_open=True), default=None,
              help="Plan seeds: how many pairs would detect this test-accuracy effect (percentage points) with 80% "
                   "power, from this comparison's SD (its 80% upper confidence bound).")
@click.option("--resample-data", is_flag=True,
              help="Each seed also draws its own stratified validation split and training subset, so the intervals "
                   "include data-sampling variation (the test set stays the same).")
@_run_options(command_defaults=True)
@_config_option
def compare(**values):
    """Train baseline and treated models pairwise over seeds; write tables, figures and a report."""
    resolved = resolve_compare(values, _command_line())
    from regbench.runner import dry_run_lines, run_compare

    if resolved.dry_run:
        for line in dry_run_lines(resolved.request, resolved.device):
            click.echo(line)
        return
    with resolved.executor:
        outcome = run_compare(resolved.request, resolved.device, echo=_echo, executor=resolved.executor)
    click.echo(format_summary(outcome.summary))
    done = (f"wrote {len(outcome.files)} files to {resolved.request.out}/ (tables, statistics, figures and report"
            if outcome.written else f"{resolved.request.out}/ is up to date: its {len(outcome.files)} files were made "
            "from these runs, options and code (checked")
    click.echo(f"{outcome.trained} runs trained, {outcome.reused} reused; {done} in {outcome.render_seconds:.1f} s)")


_echo = Echo(lambda line: click.echo(line, err=True))  # what a command is doing, on stderr (stdout: its results)


def format_summary(summary) -> str:
    """Render the summary table for the console: means, SDs and the paired difference with its CI (the baseline arm
    first)."""
    import pandas as pd  # loaded only to print a table: --help and list start without it

    width = max(22, *summary["technique"].str.len())
    sequential = "sequence_low" in summary  # --seeds auto: the anytime-valid sequences, which the verdicts rest on
    low, high, kind, rule = (("sequence_low", "sequence_high", "anytime-valid", "sequential; ±margin") if sequential
                             else ("diff_ci_low", "diff_ci_high", "95% CI, unadjusted", "Holm; ±margin"))
    lines = [f"{'technique':<{width}} {'runs':>4} {'test acc %':>14} {'gap %':>14} {'epochs':>6} "
             f"{'s/epoch':>7}  paired test-acc diff, pp [{kind}]  verdict ({rule})"]
    for index, row in summary.iterrows():
        diff = "(baseline)" if index == 0 and row["technique"] != BASELINE else ""
        if index > 0 and pd.notna(row["test_accuracy_diff"]):
            interval = (f"[{row[low] * 100:+.2f}, {row[high] * 100:+.2f}]" if pd.notna(row[low]) else
                        "[not yet bounded]" if sequential else "[no interval from one pair]")
            diff = f"{row['test_accuracy_diff'] * 100:+.2f} {interval} n={int(row['pairs'])}  {row['verdict']}"
        elif index > 0:
            diff = "no successful pair"
        lines.append(
            f"{row['technique']:<{width}} {row['runs']:>4} {_mean_sd(row, 'test_accuracy', 100):>14} "
            f"{_mean_sd(row, 'gap', 100):>14} {row['epochs_run_mean']:>6.1f} "
            f"{row['seconds_per_epoch_mean']:>7.2f}  {diff}"
        )
    if summary["diverged"].sum():
        lines.append(f"{summary['diverged'].sum()} diverged run(s) left out of the statistics (see runs.csv)")
    compiling = summary.get("compiling_seconds_per_epoch_mean", pd.Series(dtype=float)).dropna()
    if len(compiling):  # as the report says it (report.compiling_note), without loading the report's modules
        lines.append(f"s/epoch leaves out the first run of each model in its process, whose epochs also compiled "
                     f"it ({compiling.min():.2f}-{compiling.max():.2f} s/epoch; runs.csv: warmup_in_epochs)")
    return "\n".join(lines)


def _mean_sd(row, metric: str, scale: float) -> str:
    """Format 'mean ± sd' (just the mean when there is no SD)."""
    mean, sd = row[f"{metric}_mean"] * scale, row[f"{metric}_sd"] * scale
    return f"{mean:.2f} ± {sd:.2f}" if math.isfinite(sd) else f"{mean:.2f}"


@cli.command()
@click.argument("name", required=False, metavar="NAME|all", shell_complete=_study_names)
@click.option("--list", "list_only", is_flag=True, help="List the studies with their questions and exit.")
@click.option("--quick", is_flag=True,
              help="A tiny configuration, a first look and the CI test, too small for conclusions: 2 seeds, 192 "
                   "training images, 1 epoch, one hidden layer of 32, but what a study sweeps or needs (capacity: "
                   "widths 8 and 64; data-size: 128 and 192 images; early-stopping: 6 epochs at lr 0.01; "
                   "batchnorm-noise: batches of 48; large-weights: 10 planted pixels).")
@click.option("--seeds", type=click.IntRange(2, 1000), default=None,
              help="Number of seeds 0..N-1, at least 2 (the intervals are across seeds) [default: the study's].")
@click.option("--out", type=click.Path(), default=None,
              help="Output directory [default: results/studies/NAME, or NAME-quick; with 'all', one "
                   "subdirectory per study].")
@click.option("--force", is_flag=True, help="Replace results of another study or setting in the output directory.")
@_run_options(command_defaults=False)
@_config_option
def study(**values):
    """Run a named study (a textbook claim, measured) and write its tables, figures and REPORT.md."""
    from regbench.studies import CATALOGUE, run_study

    if values["list_only"] or not values["name"]:
        if not values["list_only"]:
            raise UsageError("name a study (or 'all'); `regbench study --list` lists them")
        for study_name, (claim, question) in CATALOGUE.items():
            click.echo(f"  {study_name:<16} \"{claim}\": {question}")
        return
    resolved = resolve_studies(values, echo=_echo)
    with resolved.executor:
        for plan in resolved.planned:
            findings, files = run_study(plan, command=_command_line())
            click.echo(f"{plan.name}: {findings.verdict}")
            click.echo(f"wrote {len(files)} files to {plan.out}/ (REPORT.md, report.html)")


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False))
def report(directory):
    """Re-render the report of a compare DIRECTORY (statistics, figures, REPORT.md, report.html) or a study's."""
    from regbench.report import rebuild_report, rebuild_study_page

    study_manifest = rebuild_study_page(Path(directory))
    if study_manifest:
        click.echo(f"study {study_manifest['study']}: re-rendered report.html from REPORT.md and its figures; "
                   f"its numbers come from its runs: rerun `{study_manifest['command']}` to recompute them")
        return
    started = time.perf_counter()
    summary, files = rebuild_report(directory)
    click.echo(format_summary(summary))
    click.echo(f"wrote {len(files)} files to {directory}/ (REPORT.md, report.html) in "
               f"{time.perf_counter() - started:.1f} s")


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--store", type=click.Path(dir_okay=False), default=str(DEFAULT_STORE), show_default=True,
              help="The run store the comparison was made from (its runs are also checked against it, if it holds "
                   "them).")
@click.option("--rerun", type=click.IntRange(0), default=0, show_default=True,
              help="Also retrain this many random runs from their recorded configuration and compare every number "
                   "but timings.")
@click.option("--data", type=click.Path(), default=None,
              help="The comparison's images (an .npz or a directory of idx files), for --rerun.")
def verify(directory, store, rerun, data):
    """Check a compare DIRECTORY: recompute its tables and report from its runs, match the store; exit 1 on a
    difference."""
    from regbench.outputs import read_comparison

    written, manifest = read_comparison(Path(directory))
    if rerun:
        select_backend(manifest["config"]["backend"], manifest["config"]["device"])
    from regbench.verify import verify_comparison

    result = verify_comparison(Path(directory), written, manifest, Path(store), rerun, data,
                               echo=lambda line: click.echo(line, err=True))
    for problem in result.problems:
        click.echo(f"DIFFERS: {problem}")
    click.echo("checked: " + "; ".join(result.checked))
    if result.unchecked:
        click.echo("not checked: " + "; ".join(result.unchecked))
    if result.problems:
        click.echo(f"{directory}: {len(result.problems)} difference(s)")
        sys.exit(1)
    click.echo(f"{directory}: verified, no differences in what was checked")


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--tensorboard", "logdir", type=click.Path(file_okay=False), default=None, metavar="LOGDIR",
              help="Write the runs as TensorBoard event files with the HParams plugin into LOGDIR (new or empty); "
                   "view with `tensorboard --logdir LOGDIR`. Needs regbench[tensorboard].")
@click.option("--mlflow", "uri", default=None, metavar="URI",
              help="Log the runs to the MLflow tracking store at URI: sqlite:///PATH.db (artifacts beside it, in "
                   "mlartifacts/) or a tracking server's http(s):// address. Needs regbench[mlflow].")
@click.option("--mlflow-experiment", default=None, metavar="NAME",
              help="--mlflow: the experiment to log to, new or empty [default: regbench/DIRECTORY's name].")
@click.option("--store", type=click.Path(dir_okay=False), default=str(DEFAULT_STORE), show_default=True,
              help="The run store the comparison was made from; its runs are read from DIRECTORY's files when the "
                   "store does not hold them all.")
def export(directory, logdir, uri, mlflow_experiment, store):
    """Export a compare DIRECTORY's runs to TensorBoard, MLflow, or both.

    Each run goes with its per-epoch numbers, final metrics, arm, parameters and seed."""
    from regbench import export as sinks

    if logdir is None and uri is None:
        raise UsageError("name where to export to: --tensorboard LOGDIR, --mlflow URI, or both")
    if mlflow_experiment is not None and uri is None:
        raise UsageError("--mlflow-experiment applies to --mlflow; add --mlflow URI, or leave it out")
    if logdir is not None:  # every target is checked before anything is written
        sinks.require("tensorboard")
        sinks.check_empty(Path(logdir))
    if uri is not None:
        sinks.require("mlflow")
        sinks.check_mlflow_uri(uri)
    comparison = sinks.load_comparison(Path(directory), Path(store))
    experiment = mlflow_experiment or f"regbench/{Path(directory).resolve().name}"
    tracking = sinks.open_mlflow(uri, experiment) if uri else None
    if logdir is not None:
        count = sinks.to_tensorboard(comparison, Path(logdir))
        click.echo(f"wrote {count} runs from {comparison.source} to {logdir}/ as TensorBoard event files "
                   f"(`tensorboard --logdir {logdir}`)")
    if tracking is not None:
        count = sinks.to_mlflow(comparison, *tracking)
        click.echo(f"logged {count} runs from {comparison.source} to MLflow experiment {experiment!r} (id "
                   f"{tracking[1]}) at {uri}, under one parent run with the report and figures")


@cli.command()
@click.option("--store", type=click.Path(dir_okay=False), default=str(DEFAULT_STORE), show_default=True,
              help="The run store to list.")
@click.option("--technique", default=None, metavar="SETTING",
              help="Only runs of this setting, as in compare --technique: its values as given, the rest at their "
                   "defaults (dropout is rate=0.5; dropout:rate=0.2, dropout+l2, l2:l2=1e-3).")
@click.option("--seed", type=click.IntRange(0), default=None, help="Only runs of this seed.")
@click.option("--status", type=click.Choice(["ok", "diverged", "partial"]), default=None,
              help="Only runs of this status (partial: a tuning rung's first epochs).")
@click.option("--backend", type=click.Choice(BACKENDS), default=None, help="Only runs trained on this backend.")
@click.option("--remove", is_flag=True, help="Remove the listed runs (and their kept weights) from the store.")
@click.option("--yes", is_flag=True, help="With --remove: do not ask for confirmation.")
def runs(store, technique, seed, status, backend, remove, yes):
    """List the runs in a store, filtered; with --remove, delete them so they train again when next needed."""
    import pandas as pd

    from regbench.store import RunStore

    if not Path(store).is_file():
        raise UsageError(f"--store {store}: no such run store")
    arm = parse_arm(technique) if technique is not None else None
    run_store = RunStore(store, create=False)
    table = run_store.load(run_store.run_ids()).runs
    if len(table):
        chosen = pd.Series(True, index=table.index)
        for column, value in (("technique", arm and arm.technique), ("seed", seed), ("status", status),
                              ("backend", backend)):
            if value is not None:
                chosen &= table[column] == value
        if arm is not None:  # the setting's every value, as the store writes them: one setting, not every rate
            chosen &= table["technique_params"].fillna("") == " ".join(
                f"{name}={value:g}" for name, value in arm.values({}))
        table = table[chosen]
    columns = ["run_id", "technique", "technique_params", "seed", "train_size", "epochs", "backend", "status",
               "test_accuracy", "finished_at", "executor", "cpus", "compute_threads"]
    if len(table):
        click.echo(table.reindex(columns=columns).fillna("").to_string(index=False))
        provenance = table.reindex(columns=["cpu_model", "versions"]).fillna("not recorded (stored before provenance)")
        for (cpu, versions), count in provenance.value_counts(sort=False).items():
            click.echo(f"{count} run(s) computed on {cpu} with {versions}")
    click.echo(f"{len(table)} run(s) in {store} match")
    if not remove or table.empty:
        return
    run_store.require_writable("nothing can be removed from it")
    try:
        confirmed = yes or click.confirm(f"Remove these {len(table)} run(s) from {store}?", default=False, err=True)
    except click.exceptions.Abort:  # no answer (no terminal)
        raise UsageError(f"nothing removed: no answer to confirm removing {len(table)} run(s); pass --yes to remove "
                         "without asking") from None
    if not confirmed:
        click.echo(f"nothing removed (the {len(table)} run(s) stay in {store})")
        return
    run_store.remove(list(table["run_id"]))
    click.echo(f"removed {len(table)} run(s) from {store}; comparisons that use them will train them again")


@cli.command(name="list")
def list_choices():
    """List techniques with their parameters and defaults, architectures, optimizers and backends."""
    click.echo("Techniques (combine with '+', compare several with ','; set parameters with --param NAME=VALUE, or "
               "for one arm as TECHNIQUE:NAME=VALUE):")
    for technique in TECHNIQUES.values():
        only = "" if technique.architectures == ARCHITECTURES else f" [{', '.join(technique.architectures)} only]"
        click.echo(f"  {technique.name:<15} {technique.summary}{only}")
        for param in technique.params:
            searched = f"; --tune searches {param.describe_search()}" if param.search else ""
            searched += f"; off at {param.off:g}" if param.off is not None else ""
            click.echo(f"  {'':<15}   {param.name}={param.default:g}  ({param.kind.__name__}, "
                       f"{param.allowed()}) {param.help}{searched}")
    click.echo("Architectures:")
    click.echo("  mlp             784-128-64-10 dense net (widths via --hidden), softmax output")
    click.echo("  cnn             two conv(3x3)+max-pool blocks (32, 64 filters), dense head (--hidden, default 128)")
    click.echo("Optimizers (default learning rate):")
    for name in OPTIMIZERS:
        click.echo(f"  {name:<15} lr {DEFAULT_LR[name]:g}")
    click.echo(f"Backends: {', '.join(BACKENDS)} (default tensorflow); devices: {', '.join(DEVICES)}")
    click.echo(f"Datasets (--dataset; default {DEFAULT_DATASET}):")
    for spec in DATASETS.values():
        shape = "x".join(map(str, spec.image_shape))
        click.echo(f"  {spec.name:<15} {spec.title}: {shape} grey images, {spec.classes} classes "
                   f"({', '.join(spec.class_names)}); by {spec.credit}")
