"""The options layer: a command's options, from flags, a TOML file or Python keywords, resolved into a checked request.

Flags arrive through click (cli.py), files through `from_toml` and keywords through `from_keywords` (api.py), each
as one dict of values by parameter name. `resolve_compare` and `resolve_studies` then hold every rule and derived
default of a comparison and a study: protocol presets, the learning rate and hidden widths that follow from the
optimizer and architecture, arms, seeds, tuning, the executor, the output name and the options experiment.toml
records. Nothing here trains or writes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from regbench.backend import check_installed, select_backend
from regbench.config import (
    DEFAULT_HIDDEN,
    DEFAULT_MARGIN,
    DEFAULT_MAX_SEEDS,
    DEFAULT_RACE_SEEDS,
    DEFAULT_SEED_BATCH,
    DEFAULT_TRIALS,
    DEFAULT_TUNE_SEEDS,
    PROTOCOLS,
    RunConfig,
    run_settings,
)
from regbench.data import DEFAULT_DATASET
from regbench.errors import UsageError, did_you_mean
from regbench.executor import Executor, executor_for
from regbench.experiment import read_toml, toml_text
from regbench.techniques import (
    BASELINE,
    Arm,
    applicable,
    check_architecture,
    describe_params,
    exact_text,
    parse_arm,
    parse_param_overrides,
)

if TYPE_CHECKING:  # annotations only: the runner loads pandas and the store
    from regbench.runner import CompareRequest
    from regbench.studies import PlannedStudy

DEFAULT_STORE = Path("results/regbench.sqlite")  # the run store every command uses unless told another
DEFAULT_SEEDS = 3  # compare: evaluation seeds 0..2 unless --seeds or --seed-list
MAX_SEED = 2**32 - 1  # NumPy's global seed (which Keras sets) takes 0..2**32-1
PATH_OPTIONS = ("data", "store")  # recorded options that are paths, relative to where experiment.toml is


# 1. Values from a TOML file or Python keywords, converted and checked as their flags would be.

def from_toml(path: Path, command: click.Command, ctx: click.Context) -> dict:
    """Return the option values of TOML file `path` for `command`, by parameter name. Keys are long option names
    ('train-size' or 'train_size'); relative paths are relative to the file; a mistake names the key and its line."""
    values, where = read_toml(path)
    return convert(values, command, ctx, where, "key", relative_to=path.parent)


def from_keywords(command: click.Command, keywords: dict, call: str) -> dict:
    """Return every parameter of `command` as its flags would give them, from Python keywords named as the long
    options (train_size=2000; config="FILE.toml" reads a file whose values the keywords override), the rest at their
    defaults; a mistake is one UsageError naming the keyword."""
    keywords = {key: value for key, value in keywords.items() if value is not None}
    config = keywords.pop("config", None)
    ctx = click.Context(command, info_name=command.name)
    values = from_toml(Path(os.fspath(config)), command, ctx) if config is not None else {}
    values |= convert(keywords, command, ctx, lambda key: call, "keyword")
    try:
        return command.make_context(command.name, [], default_map=values).params
    except click.ClickException as error:
        raise UsageError(f"{call}: {error.format_message()}") from None


def convert(values: dict, command: click.Command, ctx: click.Context, where: Callable[[str], str], noun: str,
            relative_to: Path | None = None) -> dict:
    """Return `values` (long option names, with '-' or '_') by parameter name, each converted and checked as its
    flag would be; `where(key)` says where a mistake is. Paths are taken relative to `relative_to` when given."""
    options = {name[2:]: param for param in command.params if isinstance(param, click.Option)
               for name in param.opts if name.startswith("--") and name != "--config"}
    options |= {name.replace("-", "_"): param for name, param in options.items()}
    chosen = {}
    for key, value in values.items():
        if key not in options:
            spelled = [name for name in options if ("_" if noun == "key" else "-") not in name]  # as the flags, or
            raise UsageError(f"{where(key)}: unknown {noun} {key!r}{did_you_mean(key, spelled)}; the {noun}s are "
                             f"the long option names of `regbench {command.name}`"  # as Python names them
                             f"{'' if noun == 'key' else ' with _ for -'} (see --help)")
        param = options[key]
        if param.name in chosen:
            raise UsageError(f"{where(key)}: {key} is given twice (as {key.replace('_', '-')} and "
                             f"{key.replace('-', '_')}); give it once")
        value = _plain(value)
        if isinstance(param.type, click.Path) and isinstance(value, str) and relative_to is not None:
            value = os.path.normpath(relative_to / Path(value).expanduser())
        given = f"{where(key)}: {key} = {toml_text(value) if noun == 'key' else repr(value)}"
        try:
            chosen[param.name] = param.type_cast_value(ctx, _as_flag_value(key, value, param))
        except click.BadParameter as error:
            raise UsageError(f"{given}: {error.message}") from None
        except _WrongType as error:
            raise UsageError(f"{given} is {error}") from None
    return chosen


class _WrongType(Exception):
    """A value of a type the option does not take."""


def _plain(value):
    """Return a Python value as TOML would hold it: paths as text, tuples as lists."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return list(value) if isinstance(value, tuple) else value


def _as_flag_value(key: str, value, param: click.Option):
    """Return a value as its command-line flag would give it, or raise _WrongType saying what was expected."""
    if isinstance(value, dict):
        if param.metavar == "NAME=N[,NAME=N]":  # --resources as a table: {GPU = 1}
            return ",".join(f"{name}={amount}" for name, amount in value.items())
        raise _WrongType("a table; expected a single value")
    if param.is_flag:
        if not isinstance(value, bool):
            raise _WrongType("not a boolean; write true or false")
        return value
    if param.multiple:
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(item, str) for item in items):
            raise _WrongType('not a string or a list of strings, e.g. ["rate=0.3"]')
        return tuple(items)
    if isinstance(value, bool):
        raise _WrongType(f"a boolean; {key} takes a value")
    if isinstance(param.type, click.types.IntParamType):
        if not isinstance(value, int):
            raise _WrongType("not an integer")
        return value
    if isinstance(param.type, click.types.FloatParamType):
        if not isinstance(value, (int, float)):
            raise _WrongType("not a number")
        return float(value)
    if isinstance(value, list):  # a comma-separated option (--hidden, --seed-list, --technique) as a list
        if not all(isinstance(item, (str, int)) and not isinstance(item, bool) for item in value):
            raise _WrongType("a list of other things than strings or integers")
        return ",".join(str(item) for item in value)
    if isinstance(value, (int, float)):  # a number where the flag takes text (--hidden 64, --seeds 5)
        return str(value)
    if not isinstance(value, str):
        raise _WrongType("not a string")
    return value


# 2. Rules and derived defaults.

def executor_of(values: dict) -> Executor:
    """Return the executor that --jobs, --scheduler, --resources and --send-data choose (nothing started yet)."""
    return executor_for(values["jobs"], values["scheduler"], values["resources"] or {}, values["send_data"],
                        values["backend"], values["scheduler_timeout"], values["device"])


def _cluster_device(device: str, resources: dict | None) -> str:
    """Return the device runs train on in a Dask cluster: the GPU when asked, or when each run asks for one."""
    return "gpu" if device == "gpu" or (device == "auto" and "GPU" in (resources or {})) else "cpu"


def _relative_to(path: str, out: Path) -> str:
    """Write `path` relative to the output directory `out` (where experiment.toml is written)."""
    return os.path.relpath(Path(path).expanduser().absolute(), out.absolute())


# 3. A comparison.

@dataclass(frozen=True)
class ResolvedCompare:
    """A comparison as its options resolve: the request, where its runs train, and whether only to list them."""

    request: CompareRequest
    executor: Executor
    device: str  # where runs train: 'cpu' or 'gpu', as resolved
    dry_run: bool


def resolve_compare(values: dict, command: str, write: bool = True) -> ResolvedCompare:
    """Resolve the options of `regbench compare` (by parameter name, as its flags give them) into a checked request;
    choose the backend (before Keras is imported), without starting it. Not `write`: a comparison kept in memory,
    whose recorded paths are relative to the working directory."""
    # 1. Check every option that needs no data or backend.
    reference, arms = _arms(values["techniques"], values["baseline"], values["architecture"])
    overrides = parse_param_overrides(values["params"], [arm.names for arm in (reference, *arms)])
    _check_distinct(reference, arms, overrides)
    if values["seeds"] is not None and values["seed_list"] is not None:
        raise UsageError("--seeds and --seed-list exclude each other; give one")
    protocol, preset = values["protocol"], PROTOCOLS[values["protocol"]]
    given = {name: values[name] for name in ("epochs", "optimizer", "lr", "schedule", "select", "hidden")
             if values[name] is not None}
    settings = run_settings({**given, "architecture": values["architecture"]},
                            {**preset, "architecture": "mlp", "hidden": DEFAULT_HIDDEN["mlp"]})
    warmup_epochs = values["warmup_epochs"]
    if warmup_epochs is None:  # the preset's warm-up belongs to the preset's schedule
        warmup_epochs = preset["warmup_epochs"] if settings["schedule"] == preset["schedule"] else 0
    if warmup_epochs and settings["schedule"] != "cosine":
        raise UsageError(f"--warmup-epochs applies to --schedule cosine, not {settings['schedule']}")
    if warmup_epochs >= settings["epochs"]:
        raise UsageError(f"--warmup-epochs {warmup_epochs} leaves no epoch to decay in; allowed "
                         f"0..{settings['epochs'] - 1} with {settings['epochs']} epochs")
    optimizer = settings["optimizer"]
    if values["momentum"] is not None and optimizer not in ("sgd", "rmsprop"):
        raise UsageError(f"--momentum applies to sgd and rmsprop, not {optimizer}")
    if values["nesterov"] and optimizer != "sgd":
        raise UsageError(f"--nesterov applies to sgd, not {optimizer}")
    executor = executor_of(values)
    sequential = _sequential(values["seeds"], values["max_seeds"], values["seed_batch"])
    eval_seeds = values["seed_list"] or tuple(range(sequential[1] if sequential else values["seeds"] or DEFAULT_SEEDS))
    base = RunConfig(
        architecture=values["architecture"], hidden=tuple(settings["hidden"]), activation=values["activation"],
        optimizer=optimizer, lr=settings["lr"], momentum=values["momentum"] or 0.0, nesterov=values["nesterov"],
        epochs=settings["epochs"], batch_size=values["batch_size"], backend=values["backend"],
        schedule=settings["schedule"], warmup_epochs=warmup_epochs, resample_data=values["resample_data"],
        dataset=values["dataset"], train_size=values["train_size"] or RunConfig.train_size,
    )
    tune = _tune_request(values, [arm.names for arm in (reference, *arms)], overrides, eval_seeds, base)
    # 2. Choose the backend (before Keras is imported). In this process the first run to train starts it; on a Dask
    # cluster the workers do, and this process plans and reports without it.
    if executor.trains_here:
        device = select_backend(values["backend"], values["device"], start=False)
    else:
        check_installed(values["backend"])
        device = _cluster_device(values["device"], values["resources"])
    from regbench.runner import CompareRequest

    out = Path(values["out"] or _default_out([arm.label for arm in arms], overrides, reference, values)) if write \
        else None
    margin = DEFAULT_MARGIN * 100 if values["margin"] is None else values["margin"]
    request = CompareRequest(
        settings=tuple((arm.label, arm.values(overrides)) for arm in arms),
        baseline=(reference.label, reference.values(overrides)),
        seeds=eval_seeds, base=base, train_size=values["train_size"], out=out, store=Path(values["store"]),
        data=values["data"], command=command, force=values["force"], protocol=protocol, select=settings["select"],
        tune=tune, sequential=sequential, analysis={"margin_pp": margin, "target_effect_pp": values["target_effect"]},
        options=_recorded(values, arms, reference, overrides, sequential, eval_seeds, base, settings, warmup_epochs,
                          margin, tune, device, out),
    )
    return ResolvedCompare(request, executor, device, values["dry_run"])


def _default_out(names: list[str], overrides: dict, reference: Arm, values: dict) -> str:
    """Return a comparison's default output directory: its arms, --param values, protocol, tuning, dataset and
    reference arm, in its name."""
    suffix = "".join(f"_{name}={value:g}" for name, value in sorted(overrides.items()))
    return (f"results/compare-{'_'.join(names)}{suffix}"
            f"{'' if values['protocol'] == 'course' else '-' + values['protocol']}{'-tuned' if values['tune'] else ''}"
            f"{'' if values['dataset'] == DEFAULT_DATASET else '-' + values['dataset']}"
            f"{'' if reference.label == BASELINE else '-vs-' + reference.label}")


def _recorded(values: dict, arms: list[Arm], reference: Arm, overrides: dict, sequential, eval_seeds, base: RunConfig,
              settings: dict, warmup_epochs: int, margin: float, tune, device: str, out: Path | None) -> dict:
    """Return every option that decides a comparison's results, as resolved: experiment.toml, which reruns them
    exactly (paths relative to `out`, where it is written, or to the working directory; options left unset are left
    out)."""
    out = out or Path(".")
    recorded = {
        "technique": ",".join(arm.label for arm in arms), "baseline": reference.label,
        "param": [f"{name}={exact_text(value)}" for name, value in sorted(overrides.items())],
        **({"seeds": "auto", "max-seeds": sequential[1], "seed-batch": sequential[0]} if sequential
           else {"seed-list": list(eval_seeds)}), "protocol": values["protocol"], "epochs": settings["epochs"],
        "batch-size": base.batch_size, "train-size": values["train_size"], "architecture": base.architecture,
        "hidden": list(base.hidden), "activation": base.activation, "optimizer": base.optimizer, "lr": base.lr,
        "momentum": values["momentum"], "nesterov": base.nesterov, "schedule": base.schedule,
        "warmup-epochs": warmup_epochs, "select": settings["select"], "backend": base.backend, "device": device,
        "dataset": base.dataset, "data": values["data"] and _relative_to(values["data"], out),
        "resample-data": base.resample_data, "margin": margin, "target-effect": values["target_effect"],
        "tune": values["tune"],
        **({"trials": tune.trials, "tune-seed-list": list(tune.seeds), "tune-metric": tune.metric,
            "search": list(values["searches"]), "tune-shared": values["tune_shared"], "race-seeds": tune.race_seeds,
            "tune-repeats": tune.repeats} if tune else {}),
        "out": ".", "store": _relative_to(values["store"], out),
    }
    return {name: value for name, value in recorded.items() if value not in (None, [])}


def rebase(recorded: dict, old: Path, new: Path) -> dict:
    """Return recorded options (experiment.toml's) with their paths, relative to folder `old`, made relative to
    folder `new` (where the comparison is written now)."""
    return {key: _relative_to(os.path.join(old, value), new) if key in PATH_OPTIONS and key in recorded else value
            for key, value in recorded.items()}


def _arms(techniques: str, baseline: str, architecture: str) -> tuple[Arm, list[Arm]]:
    """Parse --baseline and --technique into the reference arm and the compared arms, checked against the
    architecture ('all' is every technique alone that applies to it)."""
    reference = parse_arm(baseline)
    texts = [text.strip() for text in techniques.split(",") if text.strip()]
    texts = [name for text in texts for name in (applicable(architecture) if text == "all" else [text])]
    arms = [parse_arm(text) for text in texts]
    check_architecture([arm.names for arm in (reference, *arms)], architecture)
    if not arms:
        raise UsageError("--technique needs at least one technique, e.g. dropout (see `regbench list`)")
    if reference.label == BASELINE and any(arm.label == BASELINE for arm in arms):
        raise UsageError("--technique: 'none' is the baseline, which every comparison runs; leave it out")
    return reference, arms


def _check_distinct(reference: Arm, arms: list[Arm], overrides: dict) -> None:
    """Refuse two arms that would train the same runs, the reference among them (UsageError)."""
    seen: dict[tuple, str] = {}
    for arm in (reference, *arms):
        setting = (arm.technique, arm.values(overrides))
        if setting in seen:
            values = describe_params(dict(setting[1])) or "no parameters"
            what = (f"--baseline {seen[setting]} is also a compared arm" if seen[setting] == reference.label
                    else f"--technique names {arm.label} twice" if seen[setting] == arm.label
                    else f"--technique: {seen[setting]} and {arm.label} are the same setting")
            raise UsageError(f"{what} ({arm.technique}, {values}); give each setting once")
        seen[setting] = arm.label


def _sequential(seeds, max_seeds: int | None, seed_batch: int | None) -> tuple[int, int] | None:
    """Check --seeds auto's options against each other; return (seeds per batch, most seeds), or None for a fixed
    number of seeds."""
    if seeds != "auto":
        stray = "--max-seeds" if max_seeds is not None else "--seed-batch" if seed_batch is not None else None
        if stray:
            raise UsageError(f"{stray} applies to --seeds auto; add it, or leave {stray} out")
        return None
    batch, most = seed_batch or DEFAULT_SEED_BATCH, max_seeds or DEFAULT_MAX_SEEDS
    if most < batch:
        raise UsageError(f"--max-seeds {most} is below the first batch of --seed-batch {batch} seeds; allowed "
                         f"{batch} or more")
    return batch, most


def _tune_request(values: dict, settings, overrides: dict, eval_seeds, base: RunConfig):
    """Check the --tune options against each other, the compared settings and the evaluation seeds; return the
    TuneRequest (None without --tune)."""
    given = {"--trials": values["trials"], "--tune-seeds": values["tune_seeds"],
             "--tune-seed-list": values["tune_seed_list"], "--tune-metric": values["tune_metric"],
             "--search": values["searches"] or None, "--tune-shared": values["tune_shared"],
             "--tune-repeats": values["tune_repeats"], "--race-seeds": values["race_seeds"]}
    if not values["tune"]:
        stray = [name for name, value in given.items() if value is not None]
        if stray:
            raise UsageError(f"{stray[0]} applies to --tune; add --tune, or leave {stray[0]} out")
        return None
    if values["tune_seeds"] is not None and values["tune_seed_list"] is not None:
        raise UsageError("--tune-seeds and --tune-seed-list exclude each other; give one")
    from regbench.tune import (
        TuneRequest,
        parse_search_ranges,
        parse_shared,
        race_seed_list,
        searches_for,
        shared_params,
    )

    first, count = DEFAULT_TUNE_SEEDS[0], values["tune_seeds"] or len(DEFAULT_TUNE_SEEDS)
    seeds = values["tune_seed_list"] or tuple(range(first, first + count))
    race_seeds = values["race_seeds"] or max(DEFAULT_RACE_SEEDS, len(seeds))
    if race_seeds < len(seeds):
        raise UsageError(f"--race-seeds {race_seeds} is below the {len(seeds)} tuning seeds every trial trains on; "
                         f"allowed {len(seeds)} or more")
    request = TuneRequest(seeds=seeds, race_seeds=race_seeds, repeats=values["tune_repeats"] or 1)
    race = [seed for repeat in range(request.repeats) for seed in race_seed_list(request.repeated(repeat))]
    if len(set(race)) < len(race):
        raise UsageError("--tune-repeats: the repeats' tuning seeds (100 apart) overlap; give tuning seeds less than "
                         "100 apart (--tune-seed-list) or fewer --race-seeds")
    overlap = sorted(set(race) & set(eval_seeds))
    if overlap:
        raise UsageError(f"tuning seed(s) {', '.join(map(str, overlap))} are also evaluation seeds; tuning seeds "
                         f"(and the race's, up to {max(race)}) must be apart from them (see --tune-seed-list, "
                         "--race-seeds, --seeds, --seed-list)")
    shared = parse_shared(values["tune_shared"])
    if "batch_size" in shared and any("ghost-batchnorm" in names for names in settings):
        raise UsageError("--tune-shared batch-size cannot be searched with ghost-batchnorm, whose group must divide "
                         "the batch size; leave batch-size out")
    ranges = parse_search_ranges(values["searches"], settings, shared_params(base, shared))
    searched = {search.param.name for setting in settings for search in searches_for(setting, ranges)}
    fixed = sorted(searched & set(overrides))
    if fixed:
        raise UsageError(f"--param {fixed[0]}: --tune searches {fixed[0]}; give its range with --search "
                         f"{fixed[0]}=LO:HI instead, or leave --tune out")
    return replace(request, trials=values["trials"] or DEFAULT_TRIALS, metric=values["tune_metric"] or "accuracy",
                   ranges=tuple(sorted(ranges.items())), shared=shared)


# 4. Studies.

@dataclass(frozen=True)
class ResolvedStudies:
    """Studies as their options resolve: each planned (checked, nothing trained), and where their runs train."""

    planned: list[PlannedStudy]
    executor: Executor


def resolve_studies(values: dict, echo: Callable[[str], None]) -> ResolvedStudies:
    """Resolve the options of `regbench study NAME` (by parameter name) and check every named study before any
    trains; start the backend (this process evaluates the studies' models, on the CPU beside a cluster)."""
    from regbench.studies import plan_study, study_names

    names = study_names(values["name"])
    options = {key: values[key] for key in ("epochs", "batch_size", "train_size", "architecture", "hidden",
                                            "activation", "optimizer", "lr", "backend", "dataset")
               if values[key] is not None}
    executor = executor_of(values)
    if executor.trains_here:
        device = select_backend(values["backend"], values["device"])
    else:
        select_backend(values["backend"], "cpu")
        device = _cluster_device(values["device"], values["resources"])
    planned, out, quick = [], values["out"], values["quick"]
    for name in names:
        folder = f"{name}-quick" if quick else name  # a quick look never overwrites full results
        directory = Path(out or "results/studies") / folder if (out is None or len(names) > 1) else Path(out)
        planned.append(plan_study(name, options, values["seeds"], quick, directory, Path(values["store"]),
                                  values["data"], device, echo=echo, executor=executor, force=values["force"]))
    return ResolvedStudies(planned, executor)
