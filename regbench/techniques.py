"""Registry of regularization techniques: name -> typed parameters with defaults -> what it changes."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, fields, replace
from typing import Callable

from regbench.errors import UsageError

BASELINE = "none"


@dataclass(frozen=True)
class Regularization:
    """What a technique setting changes in the model, the optimizer and the training loop."""

    l1: float | None = None  # keras.regularizers.L1L2 l1 factor on every kernel; None: no penalty
    l2: float | None = None  # keras.regularizers.L1L2 l2 factor on every kernel; None: no penalty
    weight_decay: float | None = None  # optimizer's decoupled decay; None keeps the optimizer's own
    dropout_rate: float | None = None  # Dropout after each hidden layer; None adds no layer
    input_dropout_rate: float | None = None  # Dropout on the input; None adds no layer
    batchnorm: bool = False  # BatchNormalization after each hidden Dense/Conv, before activation
    batchnorm_group: int | None = None  # ghost batch normalization: images per statistics group; None: the batch
    max_norm: float | None = None  # keras.constraints.MaxNorm on every kernel
    early_stopping_patience: int | None = None  # EarlyStopping on validation cross-entropy
    early_stopping_min_delta: float = 0.0


@dataclass(frozen=True)
class Param:
    """One typed technique parameter with its default and allowed range."""

    name: str
    kind: type  # float or int
    default: float
    low: float  # smallest allowed value
    high: float = math.inf  # allowed values stay below (or at, if high_inclusive) this
    high_inclusive: bool = True
    low_inclusive: bool = True
    help: str = ""
    scale: str = "linear"  # how `compare --tune` searches it: "log" (factors) or "linear" (rates, counts)
    search: tuple[float, float] | None = None  # the range --tune searches by default; None: not searched

    def describe_search(self, bounds: tuple[float, float] | None = None) -> str:
        """Say how --tune searches this parameter, e.g. 'l2 in [1e-06, 0.1], log scale'."""
        low, high = bounds or self.search
        return f"{self.name} in [{low:g}, {high:g}], {self.scale} scale" + (", integers" if self.kind is int else "")

    def allowed(self) -> str:
        """Describe the allowed range, e.g. '0 <= rate < 1'."""
        low = f"{self.low:g} {'<=' if self.low_inclusive else '<'} {self.name}"
        if math.isinf(self.high):
            return low
        return f"{low} {'<=' if self.high_inclusive else '<'} {self.high:g}"

    def parse(self, text: str) -> float:
        """Convert `text` to this parameter's type within range, or raise UsageError."""
        try:
            value = self.kind(text) if self.kind is float else int(text)
        except ValueError:
            raise UsageError(
                f"parameter {self.name}={text!r} is not a valid {self.kind.__name__}; "
                f"allowed {self.allowed()}"
            ) from None
        ok_low = value >= self.low if self.low_inclusive else value > self.low
        ok_high = value <= self.high if self.high_inclusive else value < self.high
        if not (ok_low and ok_high and (self.kind is int or math.isfinite(value))):
            raise UsageError(f"parameter {self.name}={text} is out of range; allowed {self.allowed()}")
        return value


@dataclass(frozen=True)
class Technique:
    """A registered technique: its parameters and the change it makes."""

    name: str
    summary: str
    params: tuple[Param, ...]
    effect: Callable[[dict], dict]  # parameter values -> Regularization fields it sets


TECHNIQUES: dict[str, Technique] = {}


def register(name: str, summary: str, *params: Param):
    """Register the decorated effect function as technique `name`."""

    def decorate(effect: Callable[[dict], dict]) -> Callable[[dict], dict]:
        TECHNIQUES[name] = Technique(name, summary, params, effect)
        return effect

    return decorate


@register(BASELINE, "the baseline: no regularization")
def _none(values: dict) -> dict:
    return {}


@register("l1", "Keras L1 penalty on every kernel", Param("l1", float, 1e-5, 0.0, help="L1 factor", scale="log", search=(1e-7, 1e-2)))
def _l1(values: dict) -> dict:
    return {"l1": values["l1"]}


@register("l2", "Keras L2 penalty on every kernel", Param("l2", float, 1e-4, 0.0, help="L2 factor", scale="log", search=(1e-6, 1e-1)))
def _l2(values: dict) -> dict:
    return {"l2": values["l2"]}


@register(
    "weight-decay",
    "decoupled weight decay through the optimizer's weight_decay (AdamW-style for Adam)",
    Param("wd", float, 1e-4, 0.0, help="decay per step, multiplied by the learning rate", scale="log",
          search=(1e-4, 10.0)),
)
def _weight_decay(values: dict) -> dict:
    return {"weight_decay": values["wd"]}


@register(
    "dropout",
    "Dropout after each hidden layer (and optionally on the input)",
    Param("rate", float, 0.5, 0.0, 1.0, high_inclusive=False, help="hidden-layer drop rate", search=(0.0, 0.8)),
    Param("input_rate", float, 0.0, 0.0, 1.0, high_inclusive=False, help="input drop rate"),
)
def _dropout(values: dict) -> dict:
    return {"dropout_rate": values["rate"], "input_dropout_rate": values["input_rate"] or None}


@register("batchnorm", "BatchNormalization after each hidden Dense/Conv, before its activation")
def _batchnorm(values: dict) -> dict:
    return {"batchnorm": True}


@register(
    "ghost-batchnorm",
    "BatchNormalization whose training statistics come from groups of `group` images of each batch (ghost batch "
    "normalization, Hoffer et al. 2017)",
    Param("group", int, 8, 2, help="images per statistics group; must divide the batch size and the last batch"),
)
def _ghost_batchnorm(values: dict) -> dict:
    return {"batchnorm": True, "batchnorm_group": values["group"]}


@register(
    "early-stopping",
    "EarlyStopping on validation cross-entropy, restoring the best weights",
    Param("patience", int, 3, 1, help="epochs without improvement before stopping", search=(1, 20)),
    Param("min_delta", float, 0.0, 0.0, help="smallest decrease that counts as improvement"),
)
def _early_stopping(values: dict) -> dict:
    return {
        "early_stopping_patience": values["patience"],
        "early_stopping_min_delta": values["min_delta"],
    }


@register(
    "max-norm",
    "Keras MaxNorm constraint on every kernel",
    Param("c", float, 3.0, 0.0, low_inclusive=False, help="largest allowed norm of a unit's weights", scale="log",
          search=(0.5, 32.0)),
)
def _max_norm(values: dict) -> dict:
    return {"max_norm": values["c"]}


def get_technique(name: str) -> Technique:
    """Look a technique up by name; a miss raises UsageError listing the valid names."""
    if name not in TECHNIQUES:
        raise UsageError(
            f"unknown technique {name!r}{_did_you_mean(name, TECHNIQUES)}; "
            f"choose from {', '.join(TECHNIQUES)} (combine with '+', compare several with ',')"
        )
    return TECHNIQUES[name]


def _did_you_mean(word: str, choices) -> str:
    """Return ' (did you mean X?)' for the closest choice, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_setting(text: str) -> tuple[str, ...]:
    """Split 'l2+dropout' into its technique names, checked and sorted (the canonical order)."""
    names = tuple(sorted(part.strip() for part in text.split("+")))
    for name in names:
        get_technique(name)
    if len(set(names)) != len(names):
        raise UsageError(f"technique setting {text!r} names a technique twice")
    if BASELINE in names and len(names) > 1:
        raise UsageError(f"technique setting {text!r} combines 'none' with a technique")
    return names


def compared_params(settings: list[tuple[str, ...]]) -> dict[str, Param]:
    """Return the parameters of the compared technique settings, by name."""
    return {param.name: param for names in settings for name in names for param in get_technique(name).params}


def parse_param_overrides(assignments: tuple[str, ...], settings: list[tuple[str, ...]]) -> dict:
    """Parse `--param name=value` strings against the parameters of the compared techniques."""
    known = compared_params(settings)
    owners = {p.name: t.name for t in TECHNIQUES.values() for p in t.params}
    overrides = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(f"--param {assignment!r} is not of the form name=value")
        if name not in known:
            listed = ", ".join(sorted(known)) or "none (the techniques compared take no parameters)"
            if name in owners:
                raise UsageError(f"parameter {name!r} belongs to {owners[name]}, which is not compared; "
                                 f"the techniques compared take: {listed}")
            hint = _did_you_mean(name, known or owners)
            raise UsageError(f"unknown parameter {name!r}{hint}; the techniques compared take: {listed}")
        if name in overrides:
            raise UsageError(f"--param {name} is given twice; give each parameter once (one value per comparison)")
        overrides[name] = known[name].parse(text.strip())
    return overrides


def resolve_params(names: tuple[str, ...], overrides: dict) -> tuple[tuple[str, float], ...]:
    """Return the full, sorted parameter values of a setting: defaults, then overrides."""
    values = {}
    for name in names:
        for param in get_technique(name).params:
            values[param.name] = overrides.get(param.name, param.default)
    return tuple(sorted(values.items()))


def describe_params(params: dict) -> str:
    """Write parameter values as 'l2=1e-05, rate=0.3' ('' for none)."""
    return ", ".join(f"{name}={value:g}" for name, value in params.items())


def regularization_for(setting: str, params: tuple[tuple[str, float], ...]) -> Regularization:
    """Combine the effects of every technique in `setting` ('a+b') into one Regularization."""
    values = dict(params)
    regularization = Regularization()
    valid = {f.name for f in fields(Regularization)}
    for name in setting.split("+"):
        changes = get_technique(name).effect(values)
        assert set(changes) <= valid, f"technique {name} sets unknown fields {set(changes) - valid}"
        regularization = replace(regularization, **changes)
    return regularization


def check_groups(settings, batch_size: int, train_size: int) -> None:
    """Refuse a ghost-batchnorm group that does not divide every batch of an epoch (UsageError)."""
    last = train_size % batch_size or batch_size
    for name, params in settings:
        group = dict(params).get("group")
        if group is not None and "ghost-batchnorm" in name.split("+") and (batch_size % group or last % group):
            raise UsageError(f"ghost-batchnorm group={group:g} must divide the batch size {batch_size} and the last "
                             f"batch of an epoch ({last} of {train_size} images); choose a divisor of both")

