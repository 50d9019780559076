"""Where a study runs: its presets, its base configuration, seeds and grid, the data, the run store and its
executor; and what a study finds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import pandas as pd
from matplotlib.figure import Figure

from regbench.config import RunConfig
from regbench.data import Images, Split, Splits
from regbench.executor import Executor
from regbench.runner import train_missing, trained_models
from regbench.store import RunStore, RunTables, params_text
from regbench.techniques import BASELINE, resolve_params

QUICK_CONFIG = {"train_size": 192, "epochs": 1, "hidden": (32,)}  # every --quick starts here: runs are shared;
# 192 = 6 whole batches of 32: no smaller last batch, whose other shape Keras would trace again on TensorFlow


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
    images: Images
    store: RunStore | None  # set once every check has passed
    echo: Callable[[str], None]
    executor: Executor  # where runs train
    trained: int = 0  # runs this invocation trained (the rest were found in the store)
    splits: Splits = field(init=False)

    def __post_init__(self):
        self.splits = Splits.of(self.images)

    def split(self, train_size: int | None = None) -> Split:
        """Return the base's split (its planted features included), of `train_size` training images if given."""
        size, draw, planted = self.base.split_key
        return self.splits.get(train_size or size, draw, planted)

    def identity(self, name: str) -> dict:
        """Return what makes this study's results the ones they are (as its manifest records it)."""
        return {"study": name, "config": asdict(self.base), "seeds": list(self.seeds), "grid": self.grid,
                "quick": self.quick}

    def configs(self, seeds: tuple[int, ...] | None = None, **changes) -> list[RunConfig]:
        """Return the base configuration with `changes`, once per seed."""
        return [replace(self.base, seed=seed, **changes) for seed in (seeds or self.seeds)]

    def sweep_configs(self, sweeps: dict, seeds: tuple[int, ...] | None = None) -> list[RunConfig]:
        """Return the baseline and each value of each technique's parameter, {technique: (param, values)}, per seed
        (the study's seeds unless `seeds` are given, e.g. tuning seeds)."""
        configs = self.configs(seeds, technique=BASELINE, technique_params=())
        for technique, (param, values) in sweeps.items():
            for value in values:
                configs += self.configs(seeds, technique=technique,
                                        technique_params=resolve_params((technique,), {param: value}))
        return configs

    @property
    def opened_store(self) -> RunStore:
        """Return the run store, which run_study opens once every check has passed."""
        assert self.store is not None, "the study's store is opened when it runs"
        return self.store

    def runs(self, configs: list[RunConfig]) -> RunTables:
        """Train what the store lacks of `configs` and return their tables."""
        configs = list(dict.fromkeys(configs))
        self.trained += train_missing(configs, self.splits, self.opened_store, self.echo, self.executor)
        return self.opened_store.load([c.run_id for c in configs])

    def models(self, configs: list[RunConfig]) -> list:
        """Return the trained Keras models of `configs`, training what is missing."""
        models, trained = trained_models(configs, self.splits, self.opened_store, self.echo, self.executor)
        self.trained += trained
        return models


@dataclass
class Findings:
    """What a study found: its verdict line, report sections, tables and figures."""

    verdict: str  # one paragraph, stated from the numbers
    body: str  # Markdown: results, tables and figure references as ![caption](figure:NAME.png)
    tables: dict[str, pd.DataFrame]
    figures: dict[str, Figure]
    choices: pd.DataFrame | None = None  # every choice the study made (a setting, a budget), each on the tuning
    # seeds' validation numbers alone, or for a per-run rule (a stopping epoch) on its own run's validation curve:
    # written as choices.csv, which the oracle tests compare


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


def arm_of(config: RunConfig) -> str:
    """Return the label label_arms gives a run of `config` ('l2 l2=0.001'; the baseline 'none')."""
    params = params_text(config.technique_params)
    return config.technique if config.technique == BASELINE or not params else f"{config.technique} {params}"
