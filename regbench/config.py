"""The flat, typed configuration of one run, and the run identity derived from it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import numpy as np

ARCHITECTURES = ("mlp", "cnn")
DEFAULT_HIDDEN = {"mlp": (128, 64), "cnn": (128,)}  # dense widths (the cnn's dense head)
ACTIVATIONS = ("relu", "sigmoid", "tanh")
OPTIMIZERS = ("adam", "sgd", "rmsprop", "adamw")
DEFAULT_LR = {"adam": 1e-3, "sgd": 1e-2, "rmsprop": 1e-3, "adamw": 1e-3}  # Keras' own defaults
BACKENDS = ("tensorflow", "jax", "torch")
VARIANTS = {  # changes to the standard model that studies need; never used by `compare`
    "classic-dropout": "Dropout as first published: no 1/keep rescale in training, activations times keep at inference",
    "population-bn": "BatchNormalization that normalizes with whole-training-set statistics, refreshed every epoch",
    "test-curve": "the standard model, also measured on the test set after every epoch (for stopping-rule studies)",
}
WEIGHT_BIN_EDGES = np.concatenate([[0.0], np.logspace(-6, 1, 57)])  # |w| histogram; the last bin takes all above


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides what one training run computes; its hash is the run's identity."""

    architecture: str = "mlp"  # a name from ARCHITECTURES
    hidden: tuple[int, ...] = (128, 64)  # units per hidden dense layer
    activation: str = "relu"  # hidden-layer activation
    technique: str = "none"  # canonical technique setting, e.g. "dropout+l2"
    technique_params: tuple[tuple[str, float], ...] = ()  # parameter values, sorted by name
    optimizer: str = "adam"  # a name from OPTIMIZERS
    lr: float = 1e-3  # learning rate
    momentum: float = 0.0  # sgd and rmsprop only
    nesterov: bool = False  # sgd only
    train_size: int = 50_000  # training images (stratified subset of the 50k)
    epochs: int = 10  # maximum epochs (early stopping may end sooner)
    batch_size: int = 32  # images per step
    seed: int = 0  # initial weights, dropout masks and batch order
    backend: str = "tensorflow"  # Keras backend
    device: str = "cpu"  # 'cpu' or 'gpu', as resolved
    data: str = field(default="")  # fingerprint of the MNIST arrays
    variant: str = ""  # a study's model variant from VARIANTS; "" is the standard model

    @property
    def run_id(self) -> str:
        """Return a 16-hex-digit hash of every field (variant only when set, so older ids stay valid)."""
        fields = {k: v for k, v in asdict(self).items() if k != "variant" or v}
        canonical = json.dumps(fields, sort_keys=True, default=list)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]
