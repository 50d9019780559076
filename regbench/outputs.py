"""A comparison's output directory: its files written all or nothing, checked before anything trains, and read back
(tables checked cell by cell); the only module that writes them."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypedDict

import pandas as pd

from regbench.config import LEGACY_PROTOCOL, code_digest, with_added_defaults
from regbench.errors import UsageError
from regbench.experiment import EXPERIMENT_FILE
from regbench.store import RunTables, check_filesystem, nan_to_none
from regbench.techniques import BASELINE

REQUIRED_COLUMNS = {  # what a results table must hold to be read back
    "runs": {"run_id", "technique", "seed", "status", "test_accuracy", "gap", "epochs_run", "seconds_per_epoch"},
    "epochs": {"run_id", "technique", "epoch", "val_accuracy", "val_crossentropy"},
    "weights": {"run_id", "technique", "bin_low", "bin_high", "count"},
}
NUMERIC_COLUMNS = {"seed", "test_accuracy", "gap", "epochs_run", "seconds_per_epoch", "epoch", "val_accuracy",
                   "val_crossentropy", "bin_low", "bin_high", "count"}  # checked cell by cell as numbers


class Manifest(TypedDict, total=False):
    """manifest.json: what a comparison was made from and how. A key added later is absent from manifests written
    before it (readers use `.get` for those)."""

    command: str  # the command line, or the Python call
    date: str  # when it was written, ISO 8601 in UTC
    config: dict  # the base run configuration (RunConfig's fields)
    seeds: list[int]  # the evaluation seeds
    baseline: dict  # the reference arm: its label and values ("none" when absent)
    protocol: dict  # the training budget as resolved: epochs, optimizer, learning rate, schedule, selection
    tune: dict | None  # --tune: budget, tuning seeds, metric, sampler, pruner, race, search spaces
    tuned: dict | None  # --tune: every trial and each choice
    tune_repeats: list[dict] | None  # --tune-repeats: each repeat's choices and effects
    sequential_seeds: dict | None  # --seeds auto: batch and maximum (part of the comparison's identity)
    sequential: dict | None  # --seeds auto: the rule and every arm's looks
    techniques: dict[str, dict]  # each arm's label -> its parameter values
    analysis: dict  # margin and target effect
    options: dict  # every option as resolved (as experiment.toml holds them)
    data: dict  # the images' source, fingerprint and content
    device: dict  # the device the runs trained on
    versions: dict[str, str]  # Python's and the libraries'
    run_ids: dict[str, list[str]]  # each arm's runs
    python_executable: str
    made_from: str  # a digest of everything the files are made from
    files: dict[str, str]  # each file's SHA-256 as written


COMPARISON_TABLES = ("runs", "epochs", "weights", "summary", "effects", "best_and_final_epochs")
COMPARISON_FIGURES = ("learning_curves", "gap_curves", "paired_test_accuracy", "weight_histograms", "cost",
                      "sensitivity")
# Every file a comparison writes (tuning.csv and the sensitivity figure: with --tune).
COMPARISON_FILES = [*(f"{name}.csv" for name in (*COMPARISON_TABLES, "tuning")),
                    *(f"{name}.png" for name in COMPARISON_FIGURES), "REPORT.md", "report.html", "manifest.json",
                    EXPERIMENT_FILE]


def check_output_dir(path: str | os.PathLike) -> Path:
    """Check, before any training and without writing, that `path` can hold a comparison's results."""
    out = Path(path)
    existing = next(parent for parent in [out, *out.parents] if parent.exists())
    if not existing.is_dir():
        raise UsageError(f"--out {out}: {existing} is a file; expected a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: {existing} is not writable")
    check_filesystem(out, "--out")
    return out


def _writer_of(content: pd.DataFrame | bytes | str) -> Callable[[Path], object]:
    """Return how to write `content` to a path: a table as CSV, bytes as they are, text as UTF-8."""
    if isinstance(content, bytes):
        return lambda path: path.write_bytes(content)
    if isinstance(content, str):
        return lambda path: path.write_text(content, encoding="utf-8")
    return lambda path: content.to_csv(path, index=False)


def write_outputs(out: Path, tables: dict, images: dict, manifest: Mapping[str, Any],
                  texts: dict | None = None) -> list[Path]:
    """Write tables as CSV, PNG images, text files and the manifest as JSON into `out`; return the paths.
    The manifest records each file's SHA-256 as written ('files'), so that an unchanged file can be told.

    All or nothing: every file is first written beside its target, then all are renamed into place;
    if any step fails, the files that were there before are put back and the error is one line.
    The directory itself is never replaced (it may hold other results); of what is in it, the files the earlier
    manifest lists as written by regbench and not written again (a tuned comparison's tuning.csv, rewritten
    without --tune) are removed once the new files are in place.
    """
    writers = {f"{name}.csv": _writer_of(table) for name, table in tables.items()}
    writers |= {f"{name}.png": _writer_of(data) for name, data in images.items()}
    writers |= {name: _writer_of(text) for name, text in (texts or {}).items()}
    writers["manifest.json"] = lambda temp: Path(temp).write_text(
        json.dumps(nan_to_none(manifest), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    check_replaceable(out, list(writers))
    stale = [out / name for name in written_files(out) if name not in writers and name not in manifest.get("files", {})]
    staged: dict[str, Path] = {}
    kept: dict[str, Path] = {}
    placed: list[str] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, write in writers.items():  # 1. stage every file beside its target (the manifest last, with theirs)
            if name == "manifest.json":
                manifest = {**manifest, "files": {**manifest.get("files", {}),
                                                  **{other: _sha256(path) for other, path in staged.items()}}}
            staged[name] = out / f".{name}.{os.getpid()}.staged"
            write(staged[name])
        for name in writers:  # 2. keep the old files, then rename the new ones into place
            target = out / name
            if target.exists():
                kept[name] = out / f".{name}.{os.getpid()}.old"
                os.link(target, kept[name])
            os.replace(staged[name], target)
            del staged[name]
            placed.append(name)
    except OSError as error:
        for name in placed:  # put the old files back (or take new ones away) before reporting
            if name in kept:
                os.replace(kept.pop(name), out / name)
            else:
                (out / name).unlink(missing_ok=True)
        raise UsageError(f"{out}: cannot write {Path(error.filename or out).name} ({error.strerror}); "
                         "its results are left as they were") from None
    finally:
        for path in [*staged.values(), *kept.values()]:
            path.unlink(missing_ok=True)
    for path in stale:
        path.unlink(missing_ok=True)
    return [out / name for name in writers]


def written_files(out: Path) -> list[str]:
    """Return the files that the manifest in `out` lists as written with it ([] without a readable one)."""
    try:
        files = json.loads((out / "manifest.json").read_text(encoding="utf-8")).get("files", {})
    except (OSError, ValueError, AttributeError):
        return []
    return list(files) if isinstance(files, dict) else []


def _sha256(path: Path) -> str:
    """Return the SHA-256 of a file's bytes, in hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def inputs_digest(tables: RunTables, manifest: Manifest, tuning: pd.DataFrame | None) -> str:
    """Return a digest of everything a comparison's files are made from: its run tables, its tuning runs, its
    manifest (but the date, the command line and the data's path, which may differ for the same options and
    data: flags or --config, paths relative or absolute) and regbench's own code (so a changed figure or report is
    drawn again)."""
    digest = hashlib.sha256()
    for table in (tables.runs, tables.epochs, tables.weights, tuning):
        digest.update(b"none" if table is None else table.to_csv(index=False).encode())
    made: dict[str, Any] = {key: value for key, value in manifest.items() if key not in ("date", "command")}
    if isinstance(made.get("data"), dict):
        made["data"] = {key: value for key, value in made["data"].items() if key != "source"}
    digest.update(json.dumps(made, sort_keys=True, default=str).encode())
    digest.update(code_digest().encode())
    return digest.hexdigest()


def unchanged_outputs(out: Path, made_from: str) -> list[Path] | None:
    """Return the files of `out` when it holds a comparison made from `made_from` (inputs_digest) and each of its
    files is as it was written; else None (it is to be written)."""
    try:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        if manifest.get("made_from") != made_from or not manifest.get("files"):
            return None
        if any(_sha256(out / name) != digest for name, digest in manifest["files"].items()):
            return None
    except (OSError, ValueError, AttributeError):  # missing, unreadable or not a manifest of this kind
        return None
    return [out / name for name in (*manifest["files"], "manifest.json")]


def check_same_comparison(out: Path, identity: dict, force: bool) -> None:
    """Raise UsageError if `out` holds the results of another comparison or study (unless `force`).

    `identity` holds the manifest fields that make the results what they are; results of the same
    ones are simply re-rendered.
    """
    try:
        earlier = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # nothing there that regbench wrote (or nothing readable): a missing manifest is new results
    wanted = json.loads(json.dumps(nan_to_none(identity)))
    if isinstance(earlier.get("config"), dict) and "config" in wanted:  # fields added since mean their defaults
        earlier["config"] = with_added_defaults(earlier["config"])
        wanted["config"] = with_added_defaults(wanted["config"])
    if "protocol" in wanted and "study" not in earlier:
        earlier.setdefault("protocol", LEGACY_PROTOCOL)
        earlier.setdefault("baseline", {BASELINE: {}})
    differing = [key for key, value in wanted.items() if earlier.get(key) != value]
    if differing and not force:
        what = f"study {earlier['study']}" if "study" in earlier else "another comparison"
        raise UsageError(f"{out} holds the results of {what} (different {', '.join(differing)}); "
                         "choose another --out, or pass --force to replace them")


def check_replaceable(out: Path, names: list[str]) -> None:
    """Raise UsageError unless `out` is (or can become) a writable directory whose files `names` can be replaced."""
    check_output_dir(out)
    if out.is_dir() and not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"{out}: is not writable; its results cannot be replaced")
    blocking = [name for name in names if (out / name).is_dir()]
    if blocking:
        raise UsageError(f"{out}/{blocking[0]}: is a directory where regbench writes a file; move it away")


def read_comparison(directory: Path) -> tuple[RunTables, Manifest]:
    """Read a compare output directory back: its run tables and manifest, or a UsageError saying what is wrong."""
    if not directory.is_dir():
        raise UsageError(f"{directory}: not a directory; expected the output directory of `regbench compare`")
    try:
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        tables = RunTables(*(_read_table(directory / f"{name}.csv") for name in ("runs", "epochs", "weights")))
    except FileNotFoundError as error:
        raise UsageError(f"{directory}: missing {Path(error.filename).name}; "
                         "expected the output directory of `regbench compare`") from None
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise UsageError(f"{directory}: damaged results ({type(error).__name__}: {error})") from None
    missing = [key for key in ("config", "techniques", "seeds", "run_ids", "data", "device", "versions")
               if key not in manifest]
    if missing:
        raise UsageError(f"{directory}/manifest.json: missing {', '.join(missing)}; written by another regbench?")
    for name, required in REQUIRED_COLUMNS.items():
        table = getattr(tables, name)
        absent = required - set(table.columns)
        if absent:
            raise UsageError(f"{directory}/{name}.csv: missing column(s) {', '.join(sorted(absent))}; "
                             "damaged, or written by another regbench?")
        _check_cells(directory / f"{name}.csv", table, finished=name == "runs")
    _check_run_rows(directory, tables.runs, manifest)
    return tables, manifest


def _read_table(path: Path) -> pd.DataFrame:
    """Read a comparison's CSV table with only empty cells as missing (as to_csv writes NaN): 'n/a' stays text."""
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def _check_cells(path: Path, table: pd.DataFrame, finished: bool) -> None:
    """Refuse a table whose numbers are not numbers, whose accuracies lie outside [0, 1], or (`finished`: runs.csv)
    where a run stored as ok lacks a measured number (UsageError naming file, row and column)."""
    def refuse(row, column: str, what: str):
        raise UsageError(f"{path}: row {row + 2}, column {column}: {what}; damaged? Rerun the comparison that "
                         "wrote it (its runs are kept in the store)")

    measured = [column for column in table.columns if column.endswith(("accuracy", "crossentropy")) or column in
                NUMERIC_COLUMNS]
    for column in measured:
        values = pd.to_numeric(table[column], errors="coerce")
        for row in table.index[values.isna() & table[column].notna()][:1]:
            refuse(row, column, f"{table.at[row, column]!r} is not a number")
        table[column] = values
        if column.endswith("accuracy"):
            for row in table.index[(values < 0) | (values > 1)][:1]:
                refuse(row, column, f"accuracy {float(values[row])!r} is outside [0, 1]")
    if finished and "status" in table:
        complete = [column for column in ("test_accuracy", "test_crossentropy", "val_accuracy", "train_accuracy", "gap")
                    if column in table]
        for column in complete:
            for row in table.index[(table["status"] == "ok") & table[column].isna()][:1]:
                refuse(row, column, f"empty for run {table.at[row, 'run_id']}, which finished (status ok)")


def _check_run_rows(directory: Path, runs: pd.DataFrame, manifest: Manifest) -> None:
    """Refuse runs.csv unless it holds each run the manifest names exactly once, in its arm, and no other (so every
    seed has its pair)."""
    path, arms = directory / "runs.csv", run_arms(manifest)
    for row in runs.index[runs["run_id"].duplicated()][:1]:
        raise UsageError(f"{path}: row {row + 2}, column run_id: run {runs.at[row, 'run_id']} is listed twice; "
                         "damaged?")
    for row in runs.index[~runs["run_id"].isin(list(arms))][:1]:
        raise UsageError(f"{path}: row {row + 2}, column run_id: run {runs.at[row, 'run_id']} is not one that "
                         "manifest.json names; damaged?")
    missing = [run_id for run_id in arms if run_id not in set(runs["run_id"])]
    if missing:
        raise UsageError(f"{path}: no row for run {missing[0]} ({arms[missing[0]]}), which manifest.json names, so a "
                         "seed lacks its pair; damaged? Rerun the comparison that wrote it")
    for row in runs.index[runs["run_id"].map(arms) != runs["technique"]][:1]:
        raise UsageError(f"{path}: row {row + 2}, column technique: {runs.at[row, 'technique']!r}, but manifest.json "
                         f"puts run {runs.at[row, 'run_id']} in {arms[runs.at[row, 'run_id']]!r}; damaged?")


def read_tuning(directory: Path, manifest: Manifest) -> pd.DataFrame | None:
    """Read a tuned comparison's tuning.csv back (None for a comparison made without --tune)."""
    if not manifest.get("tune"):
        return None
    try:
        return pd.read_csv(directory / "tuning.csv", dtype={"trial": "Int64"})
    except FileNotFoundError:
        raise UsageError(f"{directory}: missing tuning.csv, though manifest.json says the comparison was tuned; "
                         f"rerun `{manifest.get('command')}`") from None
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise UsageError(f"{directory}/tuning.csv: damaged ({type(error).__name__}: {error})") from None


def baseline_label(manifest: Manifest) -> str:
    """Return the label of a comparison's reference arm (--baseline; 'none' in manifests written before it)."""
    return next(iter(manifest.get("baseline", {BASELINE: {}})))


def run_arms(manifest: Manifest) -> dict[str, str]:
    """Return each run of a comparison with its arm's label, by run id, as its manifest names them."""
    return {run_id: arm for arm, ids in manifest["run_ids"].items() for run_id in ids}
