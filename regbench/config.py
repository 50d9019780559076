"""The flat, typed configuration of one run, and the run identity derived from it."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal, TypedDict

import numpy as np

from regbench.data import MAX_TRAIN_SIZE

ARCHITECTURES = ("mlp", "cnn")
DEFAULT_HIDDEN = {"mlp": (128, 64), "cnn": (128,)}  # dense widths (the cnn's dense head)
CNN_FILTERS = (32, 64)  # filters of the cnn's two conv(3x3, same padding) + 2x2 max-pool blocks
MEMORY_COPIES = 8  # a run holds about this many copies of its weights: the weights, their gradients, two Adam
# moments, the best epoch's copy, a new run's model beside TensorFlow's shared one, and room to spare
ACTIVATIONS = ("relu", "sigmoid", "tanh")
OPTIMIZERS = ("adam", "sgd", "rmsprop", "adamw")
DEFAULT_LR = {"adam": 1e-3, "sgd": 1e-2, "rmsprop": 1e-3, "adamw": 1e-3}  # Keras' own defaults
# Every optimizer decays weights only in the weight-decay arm: AdamW runs elsewhere train with weight_decay 0, not
# Keras' default 0.004. Runs stored before that carried the 0.004 under ids without this key.
ADAMW_IDENTITY = {"adamw_weight_decay": "from the weight-decay technique only"}
REVISED_TECHNIQUES = {  # techniques whose computation changed, with the key their runs' ids carry since
    "max-norm": {"max_norm_rule": "w * min(1, c / |w|): an exact identity where no norm exceeds c"},
}  # (runs of Keras' MaxNorm, which scales every column by |w| / (1e-7 + |w|) even below c, keep ids without it)
STEPS_APART_IDENTITY = {"jax_steps": "one program per step; evaluated 256 images at a time"}  # runs whose JAX steps
# are programs of their own (RunConfig.steps_apart): convolutions through XLA's fast kernels, other bits than before
PLANTED_IDENTITY = {"planted_validation": "blank"}  # planted runs since validation stopped sharing the test set's
# planted noise (data.plant_features); runs made before, with noise there too, keep ids without it
BACKENDS = ("tensorflow", "jax", "torch")
SLOWER_HERE = {  # (backend, architecture, device) -> what benchmarks/RESULTS.md measured there (2026-12-07: the cnn
    # at 22.69 and 21.89 s per epoch on JAX, 19.63 and 18.57 s on TensorFlow), said once per command
    ("jax", "cnn", "cpu"): "on a CPU the cnn takes about 1.2x the time per epoch on JAX that it takes on TensorFlow "
                           "(XLA's CPU convolutions; docs: Speed): --backend tensorflow is the faster here",
}
SCHEDULES = ("constant", "cosine")  # the learning rate over a run: fixed, or Keras' CosineDecay to 0
SELECTIONS = ("final", "best-val")  # which weights of each run are measured: the last, or the best-validation epoch's
MEASURED = ("val_crossentropy", "val_accuracy", "test_crossentropy", "test_accuracy", "train_crossentropy",
            "train_accuracy", "gap")  # a run's numbers at its measured weights; best-val ones are prefixed best_
class Budget(TypedDict):
    """A named training budget: what `--protocol` sets."""

    epochs: int
    optimizer: str
    lr: float
    schedule: str  # a name from SCHEDULES
    warmup_epochs: int
    select: str  # which epoch's weights a run is measured with: "final" or "best-val"


PROTOCOLS: dict[str, Budget] = {  # named training budgets of `compare`; explicit options override their values
    "course": {"epochs": 10, "optimizer": "adam", "lr": 1e-3, "schedule": "constant", "warmup_epochs": 0,
               "select": "final"},  # the course's seed script: 10 epochs of Adam 1e-3, measured at the end
    "converged": {"epochs": 40, "optimizer": "adam", "lr": 1e-3, "schedule": "cosine", "warmup_epochs": 0,
                  "select": "best-val"},  # twice the budget where the baseline plateaus (benchmarks/BUDGET.md:
    # 20 cosine epochs), so that regularized arms, which learn more slowly, have room too
}
COURSE = PROTOCOLS["course"]  # a run's settings unless told otherwise (RunConfig's defaults)
DEFAULT_SEED_BATCH = 5  # --seeds auto: seeds added to every undecided arm per look
DEFAULT_MAX_SEEDS = 50  # --seeds auto: the most seeds an arm trains. With differences whose SD equals the margin, a
# null effect is decided equivalent after 24 seeds on average and an effect at the margin helps after 20
# (tests/test_sequential.py's simulations, 3 arms); 50 leaves room for SDs up to about 1.5 times the margin
DEFAULT_MARGIN = 0.001  # --margin: the smallest test-accuracy effect that matters (0.1 percentage points)
TUNE_METRICS: dict[str, Literal["maximize", "minimize"]] = {  # validation metric -> direction
    "accuracy": "maximize", "crossentropy": "minimize"}
DEFAULT_TRIALS = 32  # compare --tune: settings proposed per technique setting (successive halving prunes most early)
DEFAULT_TUNE_SEEDS = (1000, 1001)  # tuning seeds: a range of their own, apart from evaluation seeds 0, 1, ...
DEFAULT_RACE_SEEDS = 6  # compare --tune: tuning seeds a racing candidate trains on at most (the next ones upward)
STATISTICS_REFRESH_STEPS = 10  # exact-statistics-bn: training steps between recomputations of the statistics
EVAL_BATCH_SIZE = 2048  # images per step when evaluating (the accuracy's numbers are the same at any size; the
# cross-entropy's last bits may move: runs keep the size their identity implies, RunConfig.eval_batch_size)
STEPS_APART_EVAL_BATCH_SIZE = 256  # the same for runs whose steps are apart (the cnn on JAX on a CPU): 10,000
# validation images took 1.08 s in batches of 256 against 1.78 s in batches of 2,048 there, on one thread
STUDY_FIELDS = ("variant", "planted")  # RunConfig fields only studies set; a comparison's report leaves them out
TUNING_FIELDS = ("stop_epoch",)  # RunConfig fields only tuning runs set; a comparison's evaluation runs leave at 0
LEGACY_PROTOCOL = {"name": "course", "select": "final"}  # what a manifest written before protocols means
WEIGHT_BIN_EDGES = np.concatenate([[0.0], np.logspace(-6, 1, 57)])  # |w| histogram; the last bin takes all above


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides what one training run computes; its hash is the run's identity."""

    architecture: str = "mlp"  # a name from ARCHITECTURES
    hidden: tuple[int, ...] = (128, 64)  # units per hidden dense layer
    activation: str = "relu"  # hidden-layer activation
    technique: str = "none"  # canonical technique setting, e.g. "dropout+l2"
    technique_params: tuple[tuple[str, float], ...] = ()  # parameter values, sorted by name
    optimizer: str = COURSE["optimizer"]  # a name from OPTIMIZERS
    lr: float = COURSE["lr"]  # learning rate
    momentum: float = 0.0  # sgd and rmsprop only
    nesterov: bool = False  # sgd only
    train_size: int = MAX_TRAIN_SIZE  # training images (stratified subset of the 50k)
    epochs: int = COURSE["epochs"]  # maximum epochs (early stopping may end sooner)
    batch_size: int = 32  # images per step
    seed: int = 0  # initial weights, dropout masks and batch order
    backend: str = "tensorflow"  # Keras backend
    device: str = "cpu"  # 'cpu' or 'gpu', as resolved
    data: str = field(default="")  # content fingerprint of the dataset's arrays (data.Images.fingerprint)
    # Fields added after the first layout (metadata "added"): hashed only when not at their default.
    variant: str = field(default="", metadata={"added": True})  # a study's model variant (regbench.variants)
    schedule: str = field(default=COURSE["schedule"], metadata={"added": True})  # a name from SCHEDULES
    warmup_epochs: int = field(default=COURSE["warmup_epochs"], metadata={"added": True})  # cosine: linear warm-up
    resample_data: bool = field(default=False, metadata={"added": True})  # the seed also draws the data split
    planted: int = field(default=0, metadata={"added": True})  # pixels planted with the training label
    # (studies; data.plant_features: what a planted run means, so changing it changes stored runs' meaning)
    dataset: str = field(default="mnist", metadata={"added": True})  # a name from data.DATASETS
    stop_epoch: int = field(default=0, metadata={"added": True})  # a partial run (multi-fidelity tuning): the
    # first stop_epoch epochs of the `epochs`-epoch run, then stop; 0: the whole run

    @property
    def data_draw(self) -> int | None:
        """Return the draw of the validation split and training subset: the seed with resample_data, else None."""
        return self.seed if self.resample_data else None

    @property
    def split_key(self) -> tuple:
        """Return what decides the run's data split: (train_size, data_draw, planted), as Splits.get takes it."""
        return self.train_size, self.data_draw, self.planted

    def identity(self) -> dict:
        """Return the fields that make this run what it is: every field, but a field added after the first
        layout only when not at its default (so runs stored before it existed keep their ids)."""
        identity = {spec.name: getattr(self, spec.name) for spec in fields(self)
                    if not spec.metadata.get("added") or getattr(self, spec.name) != spec.default}
        if self.optimizer == "adamw":
            identity.update(ADAMW_IDENTITY)
        if self.planted:
            identity.update(PLANTED_IDENTITY)
        identity.update(self.revised())
        return identity

    def revised(self) -> dict:
        """Return the identity keys of the revised computations this run uses (REVISED_TECHNIQUES; steps apart): a
        run made by the earlier rule has an id without them (legacy_run_id)."""
        revised = dict(STEPS_APART_IDENTITY) if self.steps_apart else {}
        for technique in self.technique.split("+"):
            revised.update(REVISED_TECHNIQUES.get(technique, {}))
        return revised

    @property
    def steps_apart(self) -> bool:
        """Whether JAX trains this run one compiled program per step rather than one per epoch: convolutions on the
        CPU, where XLA gives its fast (Eigen) kernels only to convolutions outside loops (ConvCanonicalization
        visits the entry computation alone; jax-ml/jax#12868): a scanned cnn epoch took 283 s, stepped 31 s."""
        return self.backend == "jax" and self.architecture == "cnn" and self.device == "cpu"

    @property
    def eval_batch_size(self) -> int:
        """Return how many images this run evaluates at a time (its cross-entropy's last bits depend on it)."""
        return STEPS_APART_EVAL_BATCH_SIZE if self.steps_apart else EVAL_BATCH_SIZE

    @property
    def run_id(self) -> str:
        """Return a 16-hex-digit hash of the run's identity."""
        return identity_hash(self.identity())

    def legacy_run_id(self) -> str:
        """Return the id this run had before the revisions of its computation (revised): a run trained by the
        earlier rule."""
        revised = self.revised()
        return identity_hash({key: value for key, value in self.identity().items() if key not in revised})


def run_settings(options: dict, preset: dict, kept: tuple[str, ...] = ()) -> dict:
    """Return the run settings of `preset` overridden by `options`, with the learning rate and hidden widths that
    follow from a changed optimizer or architecture: Keras' default rate for another optimizer, the architecture's
    widths for another architecture, unless `options` give them or they are `kept` at the preset's."""
    values = {**preset, **options}
    if "lr" not in options and "lr" not in kept and values["optimizer"] != preset["optimizer"]:
        values["lr"] = DEFAULT_LR[values["optimizer"]]
    if "hidden" not in options and "hidden" not in kept and values["architecture"] != preset["architecture"]:
        values["hidden"] = DEFAULT_HIDDEN[values["architecture"]]
    return values


def identity_hash(identity: dict) -> str:
    """Return a 16-hex-digit hash of a run's identity."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=list).encode()).hexdigest()[:16]


def parameter_count(architecture: str, hidden: tuple[int, ...], image_shape: tuple[int, int], classes: int) -> int:
    """Return the weights and biases of the plain model (models.build_model, without a technique's layers)."""
    widths, inputs = [], image_shape[0] * image_shape[1]
    if architecture == "cnn":
        channels, (height, width) = 1, image_shape
        for filters in CNN_FILTERS:
            widths.append(3 * 3 * channels * filters + filters)
            channels, height, width = filters, height // 2, width // 2
        inputs = height * width * channels
    for units in (*hidden, classes):
        widths.append(inputs * units + units)
        inputs = units
    return sum(widths)


def available_memory() -> int:
    """Return the bytes of memory this machine has available now (MemAvailable; else all of it)."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as info:
            return next(int(line.split()[1]) * 1024 for line in info if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@functools.cache
def code_digest() -> str:
    """Return a digest of regbench's own Python sources (what this process runs)."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def with_added_defaults(values: dict) -> dict:
    """Return recorded configuration `values` with every field added after the first layout filled in at its
    default where missing (records written before a field existed mean its default)."""
    added = {spec.name: spec.default for spec in fields(RunConfig) if spec.metadata.get("added")}
    return {**values, **{name: value for name, value in added.items() if name not in values}}
