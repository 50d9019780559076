"""Plan paired runs (arms x seeds), skip finished ones, train the rest, write the comparison."""

from __future__ import annotations

import math
import platform
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from regbench.config import MEMORY_COPIES, SLOWER_HERE, RunConfig, available_memory, parameter_count
from regbench.data import Images, Splits, get_dataset, load_images, training_size
from regbench.errors import UsageError
from regbench.executor import Executor
from regbench.outputs import (
    COMPARISON_FILES,
    Manifest,
    check_replaceable,
    check_same_comparison,
    inputs_digest,
    unchanged_outputs,
)
from regbench.provenance import cpu_model, package_versions
from regbench.store import RunStore, RunTables
from regbench.sweep import format_duration, train_todo
from regbench.techniques import BASELINE, check_groups, describe_params, hooks_for, technique_of
from regbench.verdicts import Kind, kind_of

if TYPE_CHECKING:  # Optuna, the statistics and the figures load only where a command tunes or draws
    from regbench.tune import TuneOutcome, TunePlan, TuneRequest

@dataclass(frozen=True)
class CompareRequest:
    """One `regbench compare`: the arms, the seeds, the shared run settings and where to write."""

    settings: tuple[tuple[str, tuple], ...]  # the compared arms: (label, its parameter values)
    seeds: tuple[int, ...]  # one pair per seed
    base: RunConfig  # every field but technique, technique_params, seed, train_size, device and data
    train_size: int | None  # --train-size, or None for every training image
    out: Path | None  # the comparison's output directory; None: write nothing (a comparison kept in memory)
    store: Path  # the SQLite run store shared by all invocations
    data: str | None  # --data PATH, or None for the look-up order
    command: str  # the command line, for the manifest
    force: bool = False  # replace the results of another comparison in `out`
    protocol: str = "course"  # the named budget the run settings came from (config.PROTOCOLS)
    select: str = "final"  # which weights of every run are measured (config.SELECTIONS)
    tune: TuneRequest | None = None  # --tune: choose each setting's values on validation first
    analysis: dict = field(default_factory=dict)  # how effects are judged: margin_pp and target_effect_pp (pp)
    baseline: tuple[str, tuple] = (BASELINE, ())  # the reference arm every arm is paired with: (label, values)
    arm_options: dict = field(default_factory=dict)  # label -> the run settings chosen for it alone (--tune-shared)
    sequential: tuple[int, int] | None = None  # --seeds auto: (seeds per batch, most seeds); `seeds` lists all
    arm_seeds: dict = field(default_factory=dict)  # label -> how many of `seeds` the arm trains (sequential seeds)
    options: dict = field(default_factory=dict)  # the command's options as resolved (experiment.toml)


@dataclass(frozen=True)
class CompareOutcome:
    """What a comparison produced: its runs' tables, manifest and tuning runs, its summary table (when its files
    were written or kept) and the files."""

    tables: RunTables  # the comparison's runs, epochs and weights, each run under its arm's label
    manifest: Manifest  # what manifest.json records, with what the files are made from ('made_from')
    tuning: pd.DataFrame | None  # the tuning runs of a --tune comparison
    summary: pd.DataFrame | None  # None: nothing written (no output directory)
    files: list[Path]
    trained: int  # runs trained by this invocation
    reused: int  # runs found in the store (finished earlier, or by another process meanwhile)
    render_seconds: float = 0.0  # loading the runs, statistics, figures and report: a comparison's fixed cost
    written: bool = True  # False: the output directory was made from the same runs, options and code, and kept


def _planned(request: CompareRequest) -> list[tuple[str, RunConfig]]:
    """Return the runs of a comparison with their arms' labels, seed by seed, each seed's baseline first."""
    return [(label, replace(request.base, technique=technique_of(label), technique_params=params, seed=seed,
                            **dict(request.arm_options.get(label, ()))))
            for index, seed in enumerate(request.seeds) for label, params in (request.baseline, *request.settings)
            if index < request.arm_seeds.get(label, len(request.seeds))]


def plan_runs(request: CompareRequest) -> list[RunConfig]:
    """Return the runs of a comparison, seed by seed, each seed's baseline first."""
    return [config for _, config in _planned(request)]


def arm_of_run(request: CompareRequest) -> dict[str, str]:
    """Return each run's arm label, by run id."""
    return {config.run_id: label for label, config in _planned(request)}


def check_fits_in_memory(base: RunConfig) -> None:
    """Refuse a model whose training would not fit in this machine's available memory (UsageError), before a
    backend starts or anything is written."""
    spec = get_dataset(base.dataset)
    count = parameter_count(base.architecture, base.hidden, spec.image_shape, spec.classes)
    needed, available = count * 4 * MEMORY_COPIES, available_memory()
    if needed > available:
        raise UsageError(f"the {base.architecture} with hidden widths {','.join(map(str, base.hidden))} has {count:,} "
                         f"parameters: training it needs about {needed / 2**30:,.1f} GiB ({MEMORY_COPIES} float32 "
                         f"copies), and this machine has {available / 2**30:,.1f} GiB available; choose smaller "
                         "--hidden widths")


def _checked_plan(request: CompareRequest, device: str, writing: bool = True):
    """Check everything a user can get wrong (nothing is written); return the data, base config and the tuning
    plan (None without --tune). Not `writing` (a dry run), another comparison in the output directory is no error."""
    check_fits_in_memory(request.base)
    images = load_images(request.base.dataset, request.data)
    train_size = training_size(images, request.train_size)  # the split itself is made where runs train
    if request.base.batch_size > train_size:
        raise UsageError(
            f"--batch-size {request.base.batch_size} is larger than the training set "
            f"({train_size} images); allowed 1..{train_size}"
        )
    check_groups((request.baseline, *request.settings), request.base.batch_size, train_size)
    base = replace(request.base, train_size=train_size, device=device, data=images.fingerprint)
    plan = None
    if request.tune:
        from regbench.tune import plan_tuning

        plan = plan_tuning(_tuned_arms(request), base, request.tune)
    if writing and request.out is not None:
        check_replaceable(request.out, COMPARISON_FILES)
        check_same_comparison(request.out, _identity(request, base, plan), request.force)
    RunStore(request.store, create=False)  # a file that is not a run store is refused here, and left as it is
    return images, base, plan


def run_compare(request: CompareRequest, device: str, echo: Callable[[str], None],
                executor: Executor) -> CompareOutcome:
    """Tune if asked, train what is missing of `request` with `executor` and write its tables, figures, manifest
    and report."""
    # 1. Check everything a user can get wrong before any training.
    images, base, plan = _checked_plan(request, device)
    say_if_slower_here(base, echo)
    store = RunStore(request.store)
    splits = Splits.of(images)
    trained, tuned = 0, None
    # 2. With --tune, search first (rung by rung, then the races), choosing every arm's values on validation alone.
    tuning_runs, given = 0, request
    repeats: list[dict] = []
    if plan is not None:
        tuned, tuning_trained, tuning_runs = _tune(plan, request, splits, store, echo, executor)
        trained += tuning_trained
        request = _at_choices(request, tuned)
    # 3. Train the evaluation runs the store does not hold yet; each is stored the moment it ends. With --seeds auto,
    # a batch of seeds at a time, to the arms still undecided.
    evaluated, looks = replace(request, base=base), None
    if request.sequential:
        switched_off = {name for name, choice in (tuned.record["chosen"] if tuned else {}).items() if choice["off"]}
        evaluated, looks, sequential_trained = _sequential_seeds(evaluated, splits, store, echo, executor,
                                                                 switched_off)
        trained += sequential_trained
    configs = plan_runs(evaluated)
    trained += train_missing(configs, splits, store, echo, executor)
    # With --tune-repeats, repeat the whole search on tuning seeds of its own and evaluate each repeat's choices.
    if plan is not None and tuned is not None and plan.request.repeats > 1:
        repeats, repeat_trained, repeat_runs = _repeat_searches(plan, tuned, given, evaluated, splits, store, echo,
                                                                executor)
        trained, tuning_runs = trained + repeat_trained, tuning_runs + repeat_runs
    # 4. Build the comparison, its figures and its report from the store, each run under its arm's label; a
    # directory already made from the same runs, options and code is left as it is.
    started = time.perf_counter()
    tables = store.load([c.run_id for c in configs]).labelled(arm_of_run(evaluated))
    manifest = _manifest(request, base, images, tables.runs, plan, tuned)
    if repeats:
        manifest["tune_repeats"] = repeats
    if looks:
        manifest["sequential"] = _sequential_record(request, looks)
    tuning = tuned.table if tuned else None
    manifest["made_from"] = inputs_digest(tables, manifest, tuning)
    summary: pd.DataFrame | None = None
    files: list[Path] = []
    written = False
    if request.out is not None:
        kept = unchanged_outputs(request.out, manifest["made_from"])
        written = kept is None
        if kept is None:
            from regbench.report import write_comparison

            summary, files = write_comparison(request.out, tables, manifest, tuning)
        else:
            summary, files = pd.read_csv(request.out / "summary.csv"), kept
    planned = len(configs) + tuning_runs
    return CompareOutcome(tables, manifest, tuning, summary, files, trained=trained, reused=planned - trained,
                          render_seconds=time.perf_counter() - started, written=written)


def _tune(plan: TunePlan, request: CompareRequest, splits: Splits, store: RunStore, echo: Callable[[str], None],
          executor: Executor) -> tuple[TuneOutcome, int, int]:
    """Train the searches' runs stage by stage (each stage is what the replay of the stored runs asks for next)
    until every choice is made; return the outcome, the runs trained and the tuning runs read."""
    from regbench.tune import describe_choice, search_all

    for name in plan.untuned:
        echo(f"--tune: {name} has nothing to tune; it is compared at {_values(request, name)}")
    shared = f", with {', '.join(plan.request.shared)} searched for every arm and the baseline" \
        if plan.request.shared else ""
    echo(f"tuning: {len(plan.searches)} setting(s) x {plan.request.trials} trials on the tuning seeds "
         f"{list(plan.request.seeds)}, pruned by successive halving, then the best raced on up to "
         f"{len(plan.race_seeds)} tuning seeds against off (no regularization){shared}")
    trained = 0

    def train(todo: list[RunConfig]) -> pd.DataFrame:
        nonlocal trained
        trained += train_missing(todo, splits, store, echo, executor)
        return store.load([config.run_id for config in todo]).runs

    def on_stage(stage: int, todo: list[RunConfig]) -> None:
        partial = sum(1 for config in todo if config.stop_epoch)
        echo(f"tuning stage {stage}: {len(todo)} runs ({partial} partial: a rung's first epochs)")

    (tuned,), runs_read = search_all([plan], train, request.select, on_stage)
    if plan.baseline is not None:
        echo(describe_choice(BASELINE, tuned.record["baseline"], plan.request.metric))
    for name, record in tuned.record["chosen"].items():
        echo(describe_choice(name, record, plan.request.metric))
    return tuned, trained, runs_read


def _sequential_seeds(request: CompareRequest, splits: Splits, store: RunStore, echo: Callable[[str], None],
                      executor: Executor, switched_off: set[str]) -> tuple[CompareRequest, dict, int]:
    """Train a batch of seeds at a time (--seeds auto), each batch only for the arms still undecided, the baseline
    on as many seeds as the arm that needs most, until every arm is decided or at the most seeds; return the
    request with each arm's seeds, every arm's looks, and the runs trained. An arm tuning `switched_off` trains
    the first batch only (its difference is 0 by construction). Each look is computed again from the stored runs,
    so a killed comparison resumes to the same looks."""
    from regbench.sequential import next_pairs

    assert request.sequential is not None  # --seeds auto
    batch, most = request.sequential
    labels = [label for label, _ in request.settings if label not in switched_off]
    looks, trained = {label: [batch] for label in labels}, 0  # each arm's looks, in seeds trained
    while True:
        counts = {label: seeds[-1] for label, seeds in looks.items()}
        current = replace(request, arm_seeds={**dict.fromkeys(switched_off, batch), **counts,
                                              request.baseline[0]: max([batch, *counts.values()])})
        configs = plan_runs(current)
        trained += train_missing(configs, splits, store, echo, executor)
        if not labels:  # every arm switched off: nothing to decide
            return current, {}, trained
        runs = store.load([config.run_id for config in configs]).labelled(arm_of_run(current)).runs
        analysed, differences = _analysed_looks(current, runs, looks)
        echo(f"look {max(map(len, looks.values()))}: " + "; ".join(
            f"{label} {sequence[-1].verdict} after {counts[label]} seeds" for label, sequence in analysed.items()))
        todo = next_pairs({label: replace(sequence[-1], pairs=counts[label]) for label, sequence in analysed.items()},
                          batch, most)
        if not todo:
            return current, _looks_record(current, looks, analysed, differences), trained
        for label, count in todo.items():
            looks[label].append(count)


def _analysed_looks(request: CompareRequest, runs: pd.DataFrame, looks: dict) -> tuple[dict, dict]:
    """Return every arm's confidence sequence at each of its looks (in seeds trained), and its paired test-accuracy
    differences in seed order."""
    from regbench import stats
    from regbench.sequential import analyse

    differences, pair_looks = {}, {}
    measured = stats.selected(runs, request.select)  # every run at its selected weights, as the report measures it
    for label, seeds in looks.items():
        paired = stats.paired_differences(measured, stats.PRIMARY, label, request.baseline[0])
        differences[label] = paired.to_numpy()
        pair_looks[label] = [int(paired.index.isin(request.seeds[:count]).sum()) for count in seeds]  # ok pairs
    return analyse(differences, pair_looks, stats.analysis_of({"analysis": request.analysis})["margin"]), differences


def _looks_record(request: CompareRequest, looks: dict, analysed: dict, differences: dict) -> dict:
    """Return every arm's looks as the manifest records them; an arm undecided at the most seeds also says about
    how many seeds would decide it (its SD at the 80% upper confidence bound)."""
    from regbench import stats
    from regbench.sequential import seeds_to_decide

    recorded = {label: [{"seeds": seeds, **_finite(vars(look)), "verdict": str(look.verdict)}
                        for seeds, look in zip(looks[label], sequence, strict=True)]
                for label, sequence in analysed.items()}
    margin = stats.analysis_of({"analysis": request.analysis})["margin"]
    for label, sequence in recorded.items():
        if kind_of(sequence[-1]["verdict"]) is Kind.UNDECIDED:
            sd = stats.planning_sd(float(np.std(differences[label], ddof=1)), len(differences[label]))
            sequence[-1]["seeds_to_decide"] = seeds_to_decide(sequence[-1]["mean"], sd, margin,
                                                              stats.ALPHA / len(recorded), sequence[-1]["seeds"])
    return recorded


def _finite(values: dict) -> dict:
    """Return `values` with infinite bounds as None (a sequence not yet bounded), as the manifest's JSON keeps them."""
    return {key: None if isinstance(value, float) and math.isinf(value) else value for key, value in values.items()}


def _sequential_record(request: CompareRequest, looks: dict) -> dict:
    """Return the manifest's record of sequential seeds: the rule, and every arm's looks."""
    from regbench.sequential import ALPHA, METHOD

    assert request.sequential is not None  # --seeds auto
    batch, most = request.sequential
    return {"method": METHOD, "alpha": ALPHA, "seed_batch": batch, "max_seeds": most, "looks": looks}


def _at_choices(request: CompareRequest, tuned: TuneOutcome) -> CompareRequest:
    """Return `request` with every arm (and a tuned reference arm) at the values and run settings tuning chose."""
    chosen = dict(tuned.settings)
    return replace(request, baseline=(request.baseline[0], chosen.get(*request.baseline)),
                   settings=tuple((label, chosen[label]) for label, _ in request.settings),
                   arm_options={label: shared for label, shared in tuned.shared.items() if shared})


def _repeat_searches(plan: TunePlan, tuned: TuneOutcome, given: CompareRequest, evaluated: CompareRequest,
                     splits: Splits, store: RunStore, echo: Callable[[str], None],
                     executor: Executor) -> tuple[list[dict], int, int]:
    """Repeat the search of `plan` (--tune-repeats) on each repeat's own tuning seeds and proposals, train each
    repeat's choices on the evaluation seeds; return every repeat's record (the first is `tuned`, evaluated as
    `evaluated`), the runs trained and the runs read."""
    from regbench.tune import plan_tuning

    records, trained, read = [_repeat_record(0, plan, tuned, evaluated, store)], 0, 0
    for number in range(1, plan.request.repeats):
        echo(f"tuning repeat {number + 1} of {plan.request.repeats}: the whole search again on its own tuning seeds")
        again = plan_tuning(_tuned_arms(given), plan.base, plan.request.repeated(number))
        outcome, tuning_trained, runs_read = _tune(again, given, splits, store, echo, executor)
        at_choices = replace(_at_choices(given, outcome), base=plan.base)
        trained += tuning_trained + train_missing(plan_runs(at_choices), splits, store, echo, executor)
        read += runs_read + len(plan_runs(at_choices))
        records.append(_repeat_record(number, again, outcome, at_choices, store))
    return records, trained, read


def _repeat_record(number: int, plan: TunePlan, tuned: TuneOutcome, evaluated: CompareRequest,
                   store: RunStore) -> dict:
    """Return one repeat of the search as the manifest records it: its tuning seeds, and per arm the values it chose
    and their mean paired test-accuracy difference to the reference arm on the evaluation seeds."""
    from regbench import stats

    runs = store.load([config.run_id for config in plan_runs(evaluated)]).labelled(arm_of_run(evaluated)).runs
    arms = {}
    for label, _ in evaluated.settings:
        record = tuned.record["chosen"].get(label)
        diff = stats.paired_differences(runs, stats.PRIMARY, label, evaluated.baseline[0])
        arms[label] = {"values": None if record is None else {**record["searched"]},
                       "off": bool(record and record["off"]),
                       "test_accuracy_diff": float(diff.mean()) if len(diff) else None}
    return {"repeat": number, "tuning_seeds": list(plan.race_seeds), "arms": arms}


def _tuned_arms(request: CompareRequest) -> tuple[tuple[str, tuple], ...]:
    """Return the arms --tune chooses values for: every compared arm, and the reference arm unless it is 'none'
    (both sides of every pair at their validated best)."""
    return request.settings if request.baseline[0] == BASELINE else (request.baseline, *request.settings)


def _values(request: CompareRequest, name: str) -> str:
    """Say the parameter values a setting is compared at."""
    return describe_params(dict(dict(_tuned_arms(request))[name])) or "its only form (no parameters)"


def dry_run_lines(request: CompareRequest, device: str) -> list[str]:
    """Describe what `request` would do: each planned run, whether it is stored, and the training time left."""
    _, base, plan = _checked_plan(request, device, writing=False)
    configs = plan.first_configs() if plan else plan_runs(replace(request, base=base))
    store = RunStore(request.store, create=False)
    stored = store.finished([c.run_id for c in configs])
    claims, failures = store.claims(), store.failures([c.run_id for c in configs])
    history = store.load(store.run_ids()).runs
    lines = [f"{'run id':<16}  {'technique':<22} {'parameters':<28} {'seed':>5}  status"]
    estimate, unknown, compiled = 0.0, 0, set()
    for config in configs:
        shared = [(name, getattr(config, name)) for name in ("lr", "batch_size", "epochs")
                  if getattr(config, name) != getattr(base, name)]  # tuned for this run (--tune-shared)
        params = " ".join(f"{name}={value:g}" for name, value in (*config.technique_params, *shared)) or "-"
        params += f" ({config.stop_epoch} of {config.epochs} epochs)" if config.stop_epoch else ""
        status = ("stored" if config.run_id in stored else
                  f"being trained by {claims[config.run_id]}" if config.run_id in claims else
                  "failed on the workers before: to train" if config.run_id in failures else "to train")
        lines.append(f"{config.run_id:<16}  {config.technique:<22} {params:<28} {config.seed:>5}  {status}")
        if status.endswith("to train"):
            seconds = _run_seconds(history, config, first=replace(config, seed=0) not in compiled)
            compiled.add(replace(config, seed=0))  # runs that differ only in seed share one compiled program
            estimate += seconds or 0.0
            unknown += seconds is None
    todo = sum(line.endswith("to train") for line in lines)
    lines.append(f"{len(configs)} {'tuning ' if plan else ''}runs planned, {len(stored)} already in {request.store}, "
                 f"{todo} to train on {base.backend}/{device} with {base.train_size} training images; nothing was "
                 "trained or written")
    if plan:
        lines.append("these are the search's first stage; its later rungs and races, and then "
                     f"{len(plan_runs(request))} evaluation runs at the values tuning chooses, depend on validation "
                     "scores not known before they are trained")
    if request.out is not None and (request.out / "manifest.json").exists():
        try:
            check_same_comparison(request.out, _identity(request, base, plan), request.force)
        except UsageError as error:
            lines.append(f"note: {error}")  # the dry run writes nothing, so it goes on; the real run would stop
    if todo and unknown == todo:
        lines.append("no time estimate: the store holds no run of the same model, backend, device and batch size")
    elif todo:
        known = todo - unknown
        estimate += STARTUP_SECONDS[base.backend] + REPORT_SECONDS
        lines.append(f"estimated time: about {format_duration(estimate)} for {known} of the {todo} runs, from "
                     "stored runs of the same model, backend and batch size (each run's training scaled by its "
                     "images, its evaluation, one compile per model structure, start-up and the report)"
                     + (f"; no estimate for {unknown} (no comparable stored run)" if unknown else ""))
    return lines


def _run_seconds(history: pd.DataFrame, config: RunConfig, first: bool) -> float | None:
    """Estimate a run's wall time from stored runs of the same structure (None if there are none): its epochs'
    training scaled by its images, each epoch's evaluation, the final measurements, and the compile warm-up when it
    is the `first` run of its structure in the process."""
    if history.empty:
        return None
    same = history[(history["status"] == "ok") & (history["backend"] == config.backend)
                   & (history["device"] == config.device) & (history["architecture"] == config.architecture)
                   & (history["hidden"] == ",".join(map(str, config.hidden)))
                   & (history["batch_size"] == config.batch_size) & (history["optimizer"] == config.optimizer)]
    for candidates in (same[same["technique"] == config.technique], same):
        if len(candidates):
            training = float((candidates["seconds_per_epoch"] / candidates["train_size"]).median()) * config.train_size
            walled = candidates.dropna(subset=["wall_seconds"]) if "wall_seconds" in candidates else candidates[:0]
            warmup = float(candidates["warmup_seconds"].fillna(0).max()) if first else 0.0
            if walled.empty:  # stored before runs recorded their wall time: training and warm-up only
                return training * config.epochs + warmup
            rest = (walled["wall_seconds"] - walled["train_seconds"] - walled["warmup_seconds"].fillna(0))
            per_epoch = float((rest / walled["epochs_run"]).median())  # evaluation, and the run's fixed part spread
            return (training + per_epoch) * config.epochs + warmup
    return None


def say_if_slower_here(base: RunConfig, echo: Callable[[str], None]) -> None:
    """Say in one line when runs like `base` train on a backend measured to be the slower one here (SLOWER_HERE)."""
    slower = SLOWER_HERE.get((base.backend, base.architecture, base.device))
    if slower:
        echo(f"note: {slower}")


def train_missing(configs: list[RunConfig], splits: Splits, store: RunStore, echo: Callable[[str], None],
                  executor: Executor) -> int:
    """Train and store, with `executor`, the runs of `configs` the store does not hold yet, each on its split from
    `splits`; say how many there are first. Return how many this process trained."""
    finished = store.finished([c.run_id for c in configs])
    todo = [c for c in configs if c.run_id not in finished]
    if todo:
        store.require_writable(f"the {len(todo)} of {len(configs)} runs it does not hold cannot be trained into it")
        retried = store.failures([c.run_id for c in todo])
        echo(f"{len(configs)} runs planned, {len(configs) - len(todo)} already in {store.path}, {len(todo)} to train "
             f"on {todo[0].backend}/{todo[0].device} {executor.description}"
             + (f" ({len(retried)} failed on the workers before: tried again)" if retried else ""))
    else:
        echo(f"{len(configs)} runs planned, all already in {store.path}")
    return train_todo(todo, splits, store, executor, echo)


def trained_models(configs: list[RunConfig], splits: Splits, store: RunStore, echo: Callable[[str], None],
                   executor: Executor) -> tuple[list, int]:
    """Return each config's trained model (from kept weights, or trained with `executor` and kept now) and how
    many were trained. Needs the runs' backend in this process."""
    from regbench.models import build_model
    from regbench.train import train_run, weights_bytes

    unkept = [c for c in configs if not store.weights_path(c.run_id).exists()]
    finished = store.finished([c.run_id for c in unkept]) if unkept else set()
    todo = [c for c in unkept if c.run_id not in finished]
    if todo:
        echo(f"{len(todo)} runs to train and keep the weights of, {executor.description}")
    trained = train_todo(todo, splits, store, executor, echo, keep_weights=True)
    for config in unkept:
        if not store.weights_path(config.run_id).exists():  # stored by an earlier sweep without weights
            echo(f"retraining stored run {config.run_id} ({config.technique} seed {config.seed}) for its weights")
            model = train_run(config, splits.get(*config.split_key)).model
            store.save_weights(config.run_id, weights_bytes(model))
            trained += 1
    models = []
    for config in configs:
        model = build_model(config, hooks_for(config.technique, config.technique_params))
        with warnings.catch_warnings():  # the kept file also holds optimizer state, which is not needed here
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(store.weights_path(config.run_id))
        models.append(model)
    return models, trained


def device_description(base: RunConfig) -> dict:
    """Describe where runs of `base` train: device kind, Keras backend, platform and processor."""
    return {"kind": base.device, "keras_backend": base.backend, "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpu": cpu_model()}


STARTUP_SECONDS = {"tensorflow": 5.2, "jax": 3.0, "torch": 5.0}  # a process importing Keras, its backend and
# regbench's training and report modules, measured here (2 cores; torch not measured)
REPORT_SECONDS = 2.5  # statistics, figures and report of a small comparison (compare prints its own time)


def _identity(request: CompareRequest, base: RunConfig, plan: TunePlan | None) -> dict:
    """Return what makes a comparison the one it is: its shared configuration, techniques (or, tuned, their
    searches and budget) and seeds."""
    identity = {
        "config": {k: v for k, v in base.identity().items() if k not in ("technique", "technique_params", "seed")},
        "seeds": list(request.seeds),
        "baseline": {request.baseline[0]: dict(request.baseline[1])},
        "protocol": {"name": request.protocol, "select": request.select},
        "tune": None if plan is None else plan.record(),
    }
    if request.sequential:  # --seeds auto: `seeds` are the most an arm may train
        identity["sequential_seeds"] = {"seed_batch": request.sequential[0], "max_seeds": request.sequential[1]}
    if plan is None:  # a tuned comparison's values are chosen, so its searches say what it is
        identity["techniques"] = {technique: dict(params) for technique, params in request.settings}
    return identity


def manifest_identity(manifest: Manifest) -> dict:
    """Return what makes the comparison of `manifest` the one it is, as `_identity` gives it."""
    keys = ("config", "seeds", "baseline", "protocol", "tune", "sequential_seeds",
            *(() if manifest.get("tune") else ("techniques",)))
    stored = dict(manifest)
    return {key: stored[key] for key in keys if key in stored}


def _manifest(request: CompareRequest, base: RunConfig, images: Images, runs, plan: TunePlan | None,
              tuned: TuneOutcome | None) -> Manifest:
    """Record the command, the full configuration, the tuning and its choices, versions, device and date."""
    return {
        "command": request.command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        **_identity(request, base, plan),
        "techniques": {technique: dict(params) for technique, params in request.settings},
        "tuned": tuned.record if tuned else None,
        "analysis": request.analysis,
        "options": request.options,
        "data": images.record(),
        "device": device_description(base),
        "versions": package_versions(base.backend),
        "run_ids": {t: list(runs.loc[runs["technique"] == t, "run_id"]) for t in runs["technique"].unique()},
        "python_executable": sys.executable,
    }
