"""Named studies: each turns one textbook claim about regularization into a measured experiment.

This module names them without loading Keras; a study's module is imported only to run it.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from regbench.config import RunConfig, run_settings
from regbench.errors import UsageError, did_you_mean

if TYPE_CHECKING:  # annotations only: the executor module loads Dask, a study's context its figures
    from regbench.executor import Executor
    from regbench.studies.context import Findings, StudyContext

CATALOGUE = {  # name -> (the claim, the question it answers)
    "weight-decay": ("L2 regularization is weight decay",
                     "Do an L2 penalty and decoupled weight decay train the same weights, under SGD and under Adam?"),
    "dropout-scaling": ("dropout behaves differently in training and testing; test-time activations must be scaled",
                        "What do dropout's scaling rules do to activations and accuracy, and what if one is "
                        "forgotten?"),
    "batchnorm-noise": ("BatchNorm regularizes through the noise of mini-batch statistics",
                        "How noisy are batch statistics, and does BatchNorm's benefit shrink as the batch grows?"),
    "large-weights": ("a few neurons with very large weights: L1, L2 or dropout?",
                      "At matched accuracy cost, which technique shrinks the largest weights, and which sparsifies?"),
    "data-size": ("small datasets overfit more; regularization helps most there",
                  "How do the gap and each technique's paired effect change with the training-set size?"),
    "strength": ("too much regularization underfits",
                 "How do test and training accuracy move as each technique's strength grows, and where is the best?"),
    "early-stopping": ("stop when validation stops improving",
                       "When would each stopping rule stop a long run, and what does stopping there cost or gain?"),
    "capacity": ("complex models need more regularization",
                 "Does the benefit of dropout and L2 grow with the number of parameters?"),
}


def study_names(text: str) -> list[str]:
    """Return the studies `text` names ('all' is every one), or raise UsageError listing them."""
    if text == "all":
        return list(CATALOGUE)
    if text not in CATALOGUE:
        raise UsageError(f"unknown study {text!r}{did_you_mean(text, CATALOGUE)}; choose from "
                         f"{', '.join(CATALOGUE)} or 'all'")
    return [text]


def base_config(preset_config: dict, options: dict, module, name: str) -> RunConfig:
    """Combine a study's preset with the user's options, refusing options for what the study sets or needs."""
    sweeps, needs = module.SWEEPS, getattr(module, "NEEDS", {})
    clash = [option for option in options if option in sweeps]
    if clash:
        option = clash[0].replace("_", "-")
        raise UsageError(f"study {name} sets --{option} itself ({sweeps[clash[0]]}); leave --{option} out")
    for option, (value, reason) in needs.items():
        if options.get(option, value) != value:
            flag = option.replace("_", "-")
            raise UsageError(f"study {name} needs --{flag} {value} ({reason}); leave --{flag} out")
    preset = {**vars(RunConfig()), **preset_config}
    return RunConfig(**run_settings(options, preset, kept=tuple(sweeps)))


@dataclass
class PlannedStudy:
    """A study whose options, data and output directory have been checked, ready to run."""

    name: str
    module: ModuleType  # the study's module: its presets, run() and SWEEPS
    context: StudyContext  # where it runs
    out: Path
    store_path: Path  # the run store, created when the study runs


def plan_study(name: str, options: dict, seeds: int | None, quick: bool, out: Path, store_path: Path,
               data: str | None, device: str, echo: Callable[[str], None], executor: Executor,
               force: bool = False) -> PlannedStudy:
    """Check everything a user can get wrong about study `name` (nothing is trained or written)."""
    from regbench.data import load_images
    from regbench.outputs import check_replaceable, check_same_comparison
    from regbench.runner import check_fits_in_memory
    from regbench.store import RunStore
    from regbench.studies.context import StudyContext

    module = importlib.import_module(f"regbench.studies.{name.replace('-', '_')}")
    preset = module.QUICK if quick else module.FULL
    base = base_config(preset.config, options, module, name)
    check_fits_in_memory(base)
    images = load_images(base.dataset, data)
    check_replaceable(out, [])
    context = StudyContext(
        base=replace(base, device=device, data=images.fingerprint), seeds=tuple(range(seeds or preset.seeds)),
        grid=preset.grid, quick=quick, images=images, store=None, echo=echo, executor=executor,
    )
    context.split()  # a training size the data cannot give fails here, before any training
    check_same_comparison(out, context.identity(name), force)
    RunStore(store_path, create=False)  # a file that is not a run store is refused now, and left as it is
    return PlannedStudy(name, module, context, out, store_path)


def run_study(planned: PlannedStudy, command: str) -> tuple[Findings, list[Path]]:
    """Run a planned study (training only what the store lacks) and write its report; return findings and files."""
    from regbench.runner import say_if_slower_here
    from regbench.store import RunStore
    from regbench.studies.pages import write_study

    planned.context.store = RunStore(planned.store_path)
    started = time.perf_counter()
    claim, question = CATALOGUE[planned.name]
    planned.context.echo(f"study {planned.name}: {question}")
    say_if_slower_here(planned.context.base, planned.context.echo)
    findings = planned.module.run(planned.context)
    files = write_study(planned.out, planned.name, claim, question, planned.context, findings, command, started,
                        planned.module.SWEEPS)
    return findings, files
