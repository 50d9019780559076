"""Check a comparison's files: recompute them from its runs, match them to the store, retrain a few runs."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from regbench import stats
from regbench.config import RunConfig
from regbench.data import load_images, split_images
from regbench.errors import UsageError
from regbench.outputs import COMPARISON_FILES, Manifest, read_tuning, run_arms
from regbench.provenance import PROVENANCE_FIELDS, package_versions
from regbench.report import comparison_statistics, comparison_texts
from regbench.runner import device_description
from regbench.store import RunStore, RunTables
from regbench.techniques import TECHNIQUES, technique_of

TIMING = {"train_seconds", "seconds_per_epoch", "seconds", "finished_at", "warmup_seconds", "wall_seconds",  # vary
          "seconds_per_epoch_mean", "seconds_per_epoch_sd", "time_ratio",
          "warmup_in_epochs"}  # whether a run's compile fell in its epochs: whether its process had compiled it before
RERUN_SEED = 0  # picks which runs --rerun retrains
# How far a retrained run may land from the stored one on another CPU (other kernels round differently,
# and training amplifies it): 2.5x the largest differences benchmarks/rounding.py measured under narrower
# kernels (benchmarks/ROUNDING.md). Epoch counts are not compared there: a best epoch moved by 5 of 10.
# 2.5 times the largest difference benchmarks/rounding.py measured (ROUNDING.md, two runs of 6 retrained runs each)
CROSS_CPU_TOLERANCE = {"accuracy": 0.01,  # accuracies and gap, absolute (1 pp; measured up to 0.382 pp)
                       "crossentropy": 0.04,  # cross-entropies and penalty, absolute nats (measured up to 0.0149)
                       "relative": 0.3}  # weight statistics, relative (measured up to 12.1%, near-zero fraction)
NOT_COMPARED_ACROSS_CPUS = {"best_epoch", "epochs_run", "diverged_epoch"}
_PARAM_KINDS = {param.name: param.kind for technique in TECHNIQUES.values() for param in technique.params}


@dataclass
class Verification:
    """What `verify` checked, and every difference it found (none: verified)."""

    checked: list[str] = field(default_factory=list)  # one phrase per check made
    unchecked: list[str] = field(default_factory=list)  # what could not be checked, and why
    problems: list[str] = field(default_factory=list)


def _text(value) -> str:
    """Write a cell as text, with every kind of missing value as ''."""
    return "" if pd.isna(value) else str(value)


def _differences(name: str, stored: pd.DataFrame, fresh: pd.DataFrame, key, tolerance: dict | None = None,
                 labels=("in the file", "recomputed")) -> list[str]:
    """Compare two tables cell by cell, ignoring timing columns; numbers to 1e-9 relative unless `tolerance`."""
    problems = []
    stored, fresh = stored.set_index(key), fresh.set_index(key)
    for row in fresh.index.difference(stored.index):
        problems.append(f"{name}: row {row} is {labels[1]} but not {labels[0]}")
    for row in stored.index.difference(fresh.index):
        problems.append(f"{name}: row {row} is {labels[0]} but not {labels[1]}")
    rows = stored.index.intersection(fresh.index)
    skipped = TIMING | (NOT_COMPARED_ACROSS_CPUS if tolerance else set())
    for column in sorted((set(stored.columns) & set(fresh.columns)) - skipped):
        left, right = stored.loc[rows, column], fresh.loc[rows, column]
        if pd.api.types.is_numeric_dtype(left) and pd.api.types.is_numeric_dtype(right):
            left, right = left.astype(float), right.astype(float)
            same = np.isclose(left, right, equal_nan=True, **_allowed(column, tolerance))
        else:
            same = (left.map(_text) == right.map(_text)).to_numpy()
        problems += [f"{name}: {column} of {row} is {a!r} {labels[0]} but {b!r} {labels[1]}"
                     for row, a, b, ok in zip(rows, left, right, same) if not ok]
    return problems


def _allowed(column: str, tolerance: dict | None) -> dict:
    """Return np.isclose's rtol and atol for `column`: 1e-9 relative, or the cross-CPU tolerance."""
    if tolerance is None:
        return {"rtol": 1e-9, "atol": 0}
    if "accuracy" in column or column == "gap":
        return {"rtol": 0, "atol": tolerance["accuracy"]}
    if "crossentropy" in column or "penalty" in column:
        return {"rtol": 0, "atol": tolerance["crossentropy"]}
    if column in ("parameter_count",):
        return {"rtol": 0, "atol": 0}
    return {"rtol": tolerance["relative"], "atol": 1e-12}


def verify_comparison(directory: Path, written: RunTables, manifest: Manifest, store_path: Path, rerun: int,
                      data: str | None, echo: Callable[[str], None]) -> Verification:
    """Check every file of a comparison that can be checked; say what was checked and what differs."""
    result = Verification()
    # 1. The files manifest.json lists are there as written, and no result file is there that it does not list.
    result.problems += _file_differences(directory, manifest)
    result.checked.append("every file manifest.json lists, against its SHA-256 as written")
    # 2. The runs named in manifest.json are the rows of runs.csv.
    named = list(run_arms(manifest))
    result.problems += [f"manifest.json: run {run_id} has no row in runs.csv"
                        for run_id in sorted(set(named) - set(written.runs["run_id"]))]
    result.problems += [f"runs.csv: run {run_id} is not named in manifest.json"
                        for run_id in sorted(set(written.runs["run_id"]) - set(named))]
    # 3. Every derived table and the report, recomputed from runs.csv and epochs.csv.
    techniques = list(manifest["techniques"])
    runs, effects, summary = comparison_statistics(written.runs, manifest)
    tuning = read_tuning(directory, manifest)
    derived = {"summary.csv": (summary, "technique"), "effects.csv": (effects, ["technique", "metric"]),
               "best_and_final_epochs.csv": (stats.best_and_final_epochs(written.epochs), "technique")}
    for name, (table, key) in derived.items():
        result.problems += _differences(name, pd.read_csv(directory / name), table, key)
    texts = comparison_texts(manifest, runs, written.epochs, summary, effects, derived["best_and_final_epochs.csv"][0],
                             tuning=tuning)
    result.problems += _text_differences(directory, texts)
    result.checked.append(f"{', '.join(derived)} recomputed from runs.csv and epochs.csv, and the text of "
                          "REPORT.md and report.html re-rendered from them")
    result.unchecked.append("the figures' pixels")
    if tuning is not None and "pruner" in (manifest["tune"] or {}):  # tuned before successive halving: not replayed
        result.problems += _choice_differences(tuning, manifest)
        result.checked.append("each tuned setting's choice re-derived from tuning.csv (its successive halving "
                              "and race replayed from the tuning runs' validation scores)")
    # 4. runs.csv, epochs.csv and weights.csv against the store, for the runs it holds.
    store = RunStore(store_path, create=False)
    held = sorted(store.finished(named))
    if held:
        stored = store.load(held).labelled(run_arms(manifest))
        for name in ("runs", "epochs", "weights"):
            mine = getattr(written, name)
            key = ["run_id", "epoch"] if name == "epochs" else ["run_id", "bin_low"] if name == "weights" else "run_id"
            result.problems += _differences(f"{name}.csv", mine[mine["run_id"].isin(held)], getattr(stored, name),
                                            key, labels=("in the file", "in the store"))
        result.checked.append(f"runs.csv, epochs.csv and weights.csv against the {len(held)} of its runs in "
                              f"{store_path}")
    if len(held) < len(named):
        result.unchecked.append(f"{len(named) - len(held)} of {len(named)} runs against a store ({store_path} "
                                "does not hold them; pass --store to name the one the comparison was made with)")
    echo(f"checked {len(written.runs)} runs of {len(techniques)} technique(s) in {directory}")
    # 5. Retrain a few runs and compare every number but the timings.
    if rerun:
        result.problems += _rerun(written.runs, rerun, data, manifest, result, echo)
    return result


def _file_differences(directory: Path, manifest: Manifest) -> list[str]:
    """List the files manifest.json names that are missing or changed, and the result files it does not name (left
    by another comparison, or put there by hand)."""
    listed, problems = manifest.get("files") or {}, []
    for name, digest in sorted(listed.items()):
        path = directory / name
        if not path.is_file():
            problems.append(f"{name}: listed in manifest.json but missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            problems.append(f"{name}: changed since it was written (its SHA-256 is not the one in manifest.json)")
    if listed:  # manifests before the file list name none
        problems += [f"{name}: a result file that manifest.json does not list (left by another comparison?); "
                     "remove it, or rerun the comparison" for name in COMPARISON_FILES
                     if name not in listed and name != "manifest.json" and (directory / name).is_file()]
    return problems


def _choice_differences(tuning: pd.DataFrame, manifest: Manifest) -> list[str]:
    """Replay each tuned setting's search from tuning.csv and list where the manifest says otherwise."""
    from regbench.tune import rederive

    choices, problems = rederive(manifest, tuning)
    tuned = manifest["tuned"]
    assert tuned is not None  # a tuned comparison
    recorded = {**tuned["chosen"], **({"none": tuned["baseline"]} if tuned.get("baseline") else {})}
    for setting, choice in choices.items():
        mine = recorded.get(setting) or {}
        if choice["trial"] != mine.get("trial") or not math.isclose(choice["score"], mine.get("score", math.nan),
                                                                   rel_tol=1e-9):
            problems.append(f"tuning.csv: {setting}'s search chooses trial {choice['trial']} (score "
                            f"{choice['score']!r}), but manifest.json records trial {mine.get('trial')} (score "
                            f"{mine.get('score')!r})")
    return problems


def _text_differences(directory: Path, texts: dict[str, str]) -> list[str]:
    """Compare REPORT.md and report.html (figures left out) with their re-rendering."""
    problems = []
    for name, text in texts.items():
        try:
            on_disk = (directory / name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            problems.append(f"{name}: cannot be read ({error})")
            continue
        if _without_images(on_disk) != _without_images(text):
            line = next((number for number, (a, b) in enumerate(
                zip(_without_images(on_disk).splitlines() + [""], _without_images(text).splitlines() + [""]), 1)
                if a != b), 0)
            problems.append(f"{name}: differs from its re-rendering from the tables (first at line {line})")
    return problems


def _without_images(text: str) -> str:
    """Return a report's text with embedded images left out."""
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]*", "data:image/png", text)


def config_from_row(row: dict) -> RunConfig:
    """Rebuild a run's configuration from its runs.csv row; raise UsageError if it does not give its run id back."""
    values = {}
    for spec in fields(RunConfig):
        value = row.get(spec.name, spec.default)
        if isinstance(value, float) and math.isnan(value):
            value = "" if spec.name in ("technique_params", "variant", "data") else spec.default
        values[spec.name] = value
    values["technique"] = technique_of(values["technique"])  # runs.csv names the run's arm
    values["hidden"] = tuple(int(width) for width in str(values["hidden"]).split(","))
    values["technique_params"] = tuple(
        (name, _PARAM_KINDS[name](float(text)))
        for name, _, text in (pair.partition("=") for pair in str(values["technique_params"]).split())
    )
    for name in ("train_size", "epochs", "batch_size", "seed", "warmup_epochs", "stop_epoch"):
        values[name] = int(values[name])
    for name in ("lr", "momentum"):
        values[name] = float(values[name])
    values["nesterov"] = str(values["nesterov"]) == "True"
    values["resample_data"] = str(values["resample_data"]) == "True"
    config = RunConfig(**values)
    if config.run_id != row["run_id"] and config.legacy_run_id() == row["run_id"]:
        revised = ", ".join(f"{key} ({rule})" for key, rule in config.revised().items())
        raise UsageError(f"runs.csv: run {row['run_id']} was trained by an earlier rule than this version's "
                         f"{revised}, so this version cannot retrain it (see RunConfig.revised in regbench/config.py)")
    if config.run_id != row["run_id"]:
        raise UsageError(f"runs.csv: the configuration of run {row['run_id']} cannot be rebuilt from its row "
                         "(its parameters are rounded there); pass the --store that holds it")
    return config


def _rerun(runs: pd.DataFrame, count: int, data: str | None, manifest: Manifest, result: Verification,
           echo) -> list[str]:
    """Retrain `count` random runs of runs.csv and list every recorded number that came out different.

    On the machine that made the runs (same processor and versions) they must match exactly; on
    another, within CROSS_CPU_TOLERANCE.
    """
    if count > len(runs):
        raise UsageError(f"--rerun {count}: the comparison has only {len(runs)} runs; allowed 0..{len(runs)}")
    chosen = np.random.default_rng(RERUN_SEED).choice(runs["run_id"].to_numpy(), count, replace=False)
    rows = runs.set_index("run_id", drop=False)
    configs = [config_from_row(rows.loc[run_id].to_dict()) for run_id in chosen]
    here = device_description(configs[0])
    same_machine = (manifest["device"].get("cpu") == here["cpu"]
                    and manifest["versions"] == package_versions(manifest["config"]["backend"]))
    tolerance = None if same_machine else CROSS_CPU_TOLERANCE
    from regbench.train import train_run  # here: checking the files needs no Keras

    images = load_images(configs[0].dataset, data)
    problems, identical = [], 0
    for number, config in enumerate(configs, start=1):
        if config.data != images.fingerprint:
            raise UsageError(f"{images.source} is not the data run {config.run_id} was trained on; pass --data")
        echo(f"[rerun {number}/{count}] {config.technique} seed {config.seed} ({config.run_id})")
        fresh = train_run(config, split_images(images, *config.split_key)).record
        fresh = pd.DataFrame([{"run_id": config.run_id, **fresh}]).drop(
            columns=["weight_histogram", "keras_backend", *PROVENANCE_FIELDS], errors="ignore")
        compared = (f"rerun of {config.run_id}", runs[runs["run_id"] == config.run_id], fresh, "run_id")
        identical += not _differences(*compared, None)
        problems += _differences(*compared, tolerance, labels=("stored", "retrained"))
    where = ("exactly (this machine made them: same processor and versions)" if same_machine else
             f"within the cross-CPU tolerance (accuracies ±{CROSS_CPU_TOLERANCE['accuracy'] * 100:g} pp, "
             f"cross-entropies ±{CROSS_CPU_TOLERANCE['crossentropy']:g}, weight statistics "
             f"±{CROSS_CPU_TOLERANCE['relative']:.0%}; epoch counts not compared), since the manifest names another "
             "processor or other versions")
    result.checked.append(f"{count} run(s) retrained from their recorded configuration and compared {where}: "
                          f"{identical} of {count} came out identical")
    return problems

