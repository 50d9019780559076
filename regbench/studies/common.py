"""What every study shares: its presets, the context it runs in, and how its findings are written."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats as scipy_stats

from regbench import report, stats
from regbench.config import RunConfig
from regbench.data import Mnist, Split, Splits
from regbench.executor import DaskCluster, InProcess
from regbench.runner import device_description, package_versions, train_missing, trained_models
from regbench.sweep import format_duration
from regbench.store import RunStore, RunTables, write_outputs
from regbench.techniques import BASELINE, resolve_params


QUICK_CONFIG = {"train_size": 200, "epochs": 1, "hidden": (32,)}  # every --quick starts here: runs are shared


@dataclass(frozen=True)
class Preset:
    """A study's size: run settings (RunConfig fields), seeds, and the study's own grid values."""

    config: dict  # RunConfig fields this study sets, e.g. {"train_size": 10_000}
    seeds: int  # seeds 0..seeds-1
    grid: dict  # the study's own values, e.g. {"rates": (0.2, 0.5, 0.8)}


@dataclass
class StudyContext:
    """Where a study runs: its base configuration, seeds and grid, the data and the run store."""

    base: RunConfig  # preset and user options, device and data fingerprint set
    seeds: tuple[int, ...]
    grid: dict
    quick: bool
    mnist: Mnist
    store: RunStore | None  # set once every check has passed
    echo: Callable[[str], None]
    executor: InProcess | DaskCluster  # where runs train
    trained: int = 0  # runs this invocation trained (the rest were found in the store)
    splits: Splits = field(init=False)

    def __post_init__(self):
        self.splits = Splits(self.mnist)

    def split(self, train_size: int | None = None) -> Split:
        """Return the split for `train_size` training images (the base's size by default)."""
        return self.splits.get(train_size or self.base.train_size)

    def identity(self, name: str) -> dict:
        """Return what makes this study's results the ones they are (as its manifest records it)."""
        return {"study": name, "config": asdict(self.base), "seeds": list(self.seeds), "grid": self.grid,
                "quick": self.quick}

    def configs(self, seeds: tuple[int, ...] | None = None, **changes) -> list[RunConfig]:
        """Return the base configuration with `changes`, once per seed."""
        return [replace(self.base, seed=seed, **changes) for seed in (seeds or self.seeds)]

    def sweep_configs(self, sweeps: dict) -> list[RunConfig]:
        """Return the baseline and each value of each technique's parameter, {technique: (param, values)}, per seed."""
        configs = self.configs(technique=BASELINE, technique_params=())
        for technique, (param, values) in sweeps.items():
            for value in values:
                configs += self.configs(technique=technique,
                                        technique_params=resolve_params((technique,), {param: value}))
        return configs

    def runs(self, configs: list[RunConfig]) -> RunTables:
        """Train what the store lacks of `configs` and return their tables."""
        configs = list(dict.fromkeys(configs))
        self.trained += train_missing(configs, self.splits, self.store, self.echo, self.executor)
        return self.store.load([c.run_id for c in configs])

    def models(self, configs: list[RunConfig]) -> list:
        """Return the trained Keras models of `configs`, training what is missing."""
        models, trained = trained_models(configs, self.splits, self.store, self.echo, self.executor)
        self.trained += trained
        return models


@dataclass
class Findings:
    """What a study found: its verdict line, report sections, tables and figures."""

    verdict: str  # one paragraph, stated from the numbers
    body: str  # Markdown: results, tables and figure references as ![caption](figure:NAME.png)
    tables: dict[str, pd.DataFrame]
    figures: dict[str, Figure]


def interval(values) -> tuple[float, float, float]:
    """Return (mean, low, high) of paired values with the 95% t-interval (the stats module's)."""
    return stats.mean_confidence_interval(pd.Series(values, dtype=float).dropna())


def pp(mean: float, low: float, high: float, digits: int = 2) -> str:
    """Format a difference of fractions and its interval in percentage points: '+0.12 pp [-0.05, +0.29]'."""
    if np.isnan(mean):
        return "no paired difference (no successful pair)"
    if np.isnan(low) or np.isnan(high):
        return f"{mean * 100:+.{digits}f} pp [no interval from one pair]"
    return f"{mean * 100:+.{digits}f} pp [{low * 100:+.{digits}f}, {high * 100:+.{digits}f}]"


def pp_effect(row) -> str:
    """Format a row's paired test-accuracy difference (test_accuracy_diff, diff_ci_low, diff_ci_high)."""
    return pp(row.test_accuracy_diff, row.diff_ci_low, row.diff_ci_high)


def slope_interval(x: list[float], y: list[float]) -> dict:
    """Fit y = a + b x by least squares; return the slope b with its 95% t-interval, p and the point count."""
    fit = scipy_stats.linregress(x, y)
    half = scipy_stats.t.ppf(0.975, len(x) - 2) * fit.stderr if len(x) > 2 else np.nan
    return {"slope": fit.slope, "low": fit.slope - half, "high": fit.slope + half, "p": fit.pvalue, "pairs": len(x)}


def config_rows(base: RunConfig, sweeps: dict) -> list[list[str]]:
    """Return the setup table's rows: every configuration value, or what the study sweeps instead."""
    rows = []
    for name, value in asdict(base).items():
        if name in ("technique", "technique_params", "seed", "data"):
            continue
        shown = sweeps.get(name, value)
        rows.append([name, ",".join(map(str, shown)) if isinstance(shown, tuple) else str(shown)])
    return rows


def write_study(out: Path, name: str, claim: str, question: str, context: StudyContext, findings: Findings,
                command: str, started: float, sweeps: dict) -> list[Path]:
    """Write a study's tables, figures, manifest, REPORT.md and report.html into `out`."""
    wall = time.perf_counter() - started
    runs = findings.tables["runs"]
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    training = {"wall_seconds": wall, "runs_trained": context.trained, "date": now, "command": command}
    if context.trained == 0:  # a re-render: keep the wall time of the invocation that trained the runs
        training = _earlier_training(out, name, context) or training
    images = {key: report.png(figure) for key, figure in findings.figures.items()}
    setup = report.markdown_table(["setting", "value"], config_rows(context.base, sweeps))
    grid = report.markdown_table(["study setting", "value"], [[k, str(v)] for k, v in context.grid.items()])
    size = "quick (a first look; too small for conclusions)" if context.quick else "full"
    body = f"""# Study `{name}`: {claim}

**Question.** {question}

**Verdict.** {findings.verdict}

Size: {size}. Seeds: {", ".join(map(str, context.seeds))}. Training time of the {len(runs)} runs behind
this report: {format_duration(runs["train_seconds"].sum())} (sum of their epochs' seconds; evaluation and start-up
come on top). Wall time of the study: {format_duration(training["wall_seconds"])} ({training["wall_seconds"]:.1f} s)
for `{training["command"]}` on {training["date"]}, which trained {training["runs_trained"]} of these runs and
found the rest in the run store. This report was written by `{command}` in {wall:.1f} s.

{findings.body}

## Setup

{setup}

{grid}

Data: {context.mnist.source} (fingerprint {context.base.data}). Runs are kept in the run store
`{context.store.path}` and reused by every later study or comparison with the same settings.
"""
    manifest = {
        **context.identity(name), "claim": claim, "question": question, "verdict": findings.verdict,
        "command": command, "wall_seconds": wall, "runs_trained": context.trained, "training": training, "date": now,
        "data": {"source": context.mnist.source, "fingerprint": context.base.data},
        "device": device_description(context.base), "versions": package_versions(context.base.backend),
    }
    texts = {"REPORT.md": body.replace("](figure:", "]("),
             "report.html": report.report_html(body, images, f"study {name}")}
    return write_outputs(out, findings.tables, images, manifest, texts)


def _earlier_training(out: Path, name: str, context: StudyContext) -> dict | None:
    """Return the training record of an earlier report of this same study in `out`, if there is one."""
    try:
        earlier = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    same = all(earlier.get(key) == value for key, value in json.loads(json.dumps(context.identity(name))).items())
    return earlier.get("training") if same else None


def finish(fig: Figure, panels) -> Figure:
    """Give every panel a light grid and a small legend, lay the figure out, and return it."""
    for axes in panels:
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    fig.tight_layout()
    return fig


def label_arms(runs: pd.DataFrame) -> pd.DataFrame:
    """Return `runs` with 'technique' relabelled by its parameters (e.g. 'l2 l2=0.001'), so stats pair per arm.

    The baseline keeps the label 'none' so that every arm is paired with it by seed.
    """
    runs = runs.copy()
    labels = runs["technique"].where(runs["technique_params"].fillna("") == "",
                                     runs["technique"] + " " + runs["technique_params"].fillna(""))
    runs["arm"] = labels
    runs["technique"] = labels.where(runs["technique"] != BASELINE, BASELINE)
    return runs


def arm_table(runs: pd.DataFrame, arms: list[str]) -> pd.DataFrame:
    """Return one row per arm: runs, test and training accuracy, gap, and the paired test-accuracy CI."""
    rows = []
    ok = stats.successful(runs)
    for arm in arms:
        mine = ok[ok["technique"] == arm]
        paired = arm != BASELINE
        diff, low, high = interval(stats.paired_differences(runs, "test_accuracy", arm) if paired else [])
        train_diff = interval(stats.paired_differences(runs, "train_accuracy", arm) if paired else [])[0]
        rows.append({"arm": arm, "runs": len(mine), "test_accuracy_mean": mine["test_accuracy"].mean(),
                     "test_accuracy_sd": mine["test_accuracy"].std(), "train_accuracy_mean": mine["train_accuracy"].mean(),
                     "gap_mean": mine["gap"].mean(), "test_accuracy_diff": diff, "diff_ci_low": low,
                     "diff_ci_high": high, "train_accuracy_diff": train_diff})
    return pd.DataFrame(rows)
