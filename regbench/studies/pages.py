"""How a study's findings are written: REPORT.md, report.html, tables, figures and the manifest."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from regbench import wording
from regbench.config import STUDY_FIELDS, RunConfig, with_added_defaults
from regbench.outputs import write_outputs
from regbench.provenance import package_versions
from regbench.runner import device_description
from regbench.studies.context import Findings, StudyContext
from regbench.sweep import format_duration


def config_rows(base: RunConfig, sweeps: dict) -> list[list[str]]:
    """Return the setup table's rows: every configuration value, or what the study sweeps instead."""
    rows = []
    for name, value in asdict(base).items():
        if name in ("technique", "technique_params", "seed", "data") or (name in STUDY_FIELDS and not value):
            continue
        shown = sweeps.get(name, value)
        rows.append([name, ",".join(map(str, shown)) if isinstance(shown, tuple) else str(shown)])
    return rows


def write_study(out: Path, name: str, claim: str, question: str, context: StudyContext, findings: Findings,
                command: str, started: float, sweeps: dict) -> list[Path]:
    """Write a study's tables, figures, manifest, REPORT.md and report.html into `out`."""
    wall = time.perf_counter() - started
    tuning = findings.tables.get("tuning_runs")  # the runs a study's choices were made on, if it keeps them apart
    runs = pd.concat([findings.tables["runs"], tuning]) if tuning is not None else findings.tables["runs"]
    on_tuning = f" ({len(tuning)} of them on tuning seeds)" if tuning is not None else ""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    training: dict[str, Any] = {"wall_seconds": wall, "runs_trained": context.trained, "date": now, "command": command}
    if context.trained == 0:  # a re-render: keep the wall time of the invocation that trained the runs
        training = _earlier_training(out, name, context) or training
    images = {key: wording.png(figure) for key, figure in findings.figures.items()}
    setup = wording.markdown_table(["setting", "value"], config_rows(context.base, sweeps))
    grid = wording.markdown_table(["study setting", "value"], [[k, str(v)] for k, v in context.grid.items()])
    size = "quick (a first look; too small for conclusions)" if context.quick else "full"
    body = f"""# Study `{name}`: {claim}

**Question.** {question}

**Verdict.** {findings.verdict}

Size: {size}. Seeds: {", ".join(map(str, context.seeds))}. Training time of the {len(runs)} runs behind
this report{on_tuning}: {format_duration(runs["train_seconds"].sum())} (sum of their epochs' seconds;
evaluation and start-up come on top). Wall time of the study: {format_duration(training["wall_seconds"])}
({training["wall_seconds"]:.1f} s) for `{training["command"]}` on {training["date"]}, which trained
{training["runs_trained"]} of these runs and found the rest in the run store. This report was written by
`{command}` in {wall:.1f} s.

{findings.body}

## Setup

{setup}

{grid}

Data: {context.images.description}, from `{context.images.source}` (fingerprint {context.base.data}). \
Runs are kept in the run store
`{context.opened_store.path}` and reused by every later study or comparison with the same settings.
"""
    manifest = {
        **context.identity(name), "claim": claim, "question": question, "verdict": findings.verdict,
        "command": command, "wall_seconds": wall, "runs_trained": context.trained, "training": training, "date": now,
        "data": context.images.record(),
        "device": device_description(context.base), "versions": package_versions(context.base.backend),
    }
    texts = {"REPORT.md": body.replace("](figure:", "]("),
             "report.html": wording.report_html(body, images, f"study {name}")}
    tables = findings.tables if findings.choices is None else {**findings.tables, "choices": findings.choices}
    return write_outputs(out, tables, images, manifest, texts)


def _earlier_training(out: Path, name: str, context: StudyContext) -> dict | None:
    """Return the training record of an earlier report of this same study in `out`, if there is one."""
    try:
        earlier = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    earlier["config"] = with_added_defaults(earlier.get("config", {}))  # a field added since means its default
    same = all(earlier.get(key) == value for key, value in json.loads(json.dumps(context.identity(name))).items())
    return earlier.get("training") if same else None
