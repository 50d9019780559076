"""Registry of regularization techniques: name -> typed parameters with defaults -> what it changes."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from regbench.config import ARCHITECTURES
from regbench.errors import UsageError, did_you_mean

BASELINE = "none"


@dataclass
class Hooks:
    """What a technique setting changes: the model builder and the training step call each hook in turn.

    Layer hooks take the model builder (`build`: its seeded layers, e.g. build.dropout) and a tensor, and return
    the tensor with their layers applied; they import Keras when called, so that this registry stays light.
    """

    kernel_penalty: dict = field(default_factory=dict)  # l1/l2 factors of one keras.regularizers.L1L2 on every kernel
    kernel_options: list[Callable] = field(default_factory=list)  # (conv: bool) -> options of every kernel's layer
    image_layers: list[Callable] = field(default_factory=list)  # (build, images (N, H, W, 1)) -> images
    input_layers: list[Callable] = field(default_factory=list)  # (build, x) -> x where the first layer reads it
    normalization: Callable | None = None  # (build, x) -> x between every hidden Dense/Conv and its activation
    after_hidden: list[Callable] = field(default_factory=list)  # (build, x) -> x after every hidden layer and block
    after_block: list[Callable] = field(default_factory=list)  # (build, x) -> x after every conv block (cnn)
    loss_options: dict = field(default_factory=dict)  # options of the training cross-entropy (label_smoothing)
    optimizer_options: dict = field(default_factory=dict)  # extra keyword arguments of the Keras optimizer
    callbacks: list[Callable] = field(default_factory=list)  # () -> a Keras callback the epoch loop calls
    epoch_data: Callable | None = None  # (x, y one-hot, seed) -> (x, y): an epoch's training data, in order

    def set_once(self, name: str, value, technique: str) -> None:
        """Set the single-valued hook `name`, refusing a second technique that sets it too."""
        if getattr(self, name) is not None:
            raise UsageError(f"{technique} cannot be combined with another technique that sets the {name} hook")
        setattr(self, name, value)


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
    off: float | None = None  # the value that leaves the model untreated (with its technique's other offs)

    def describe_search(self, bounds: tuple[float, float] | None = None) -> str:
        """Say how --tune searches this parameter, e.g. 'l2 in [1e-06, 0.1], log scale'."""
        bounds = bounds or self.search
        assert bounds is not None, self.name  # described only where it is searched
        low, high = bounds
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
    """A registered technique: its parameters, the architectures it applies to, and the hooks it fills."""

    name: str
    summary: str
    params: tuple[Param, ...]
    fill: Callable[[dict, Hooks], None]  # (parameter values, hooks) -> None: fills the hooks it uses
    architectures: tuple[str, ...] = ("mlp", "cnn")

    def off_values(self) -> dict | None:
        """Return the values that switch this technique off (the model trains bit for bit as the baseline's), or
        None if it has no untreated form (batchnorm)."""
        offs = {param.name: param.off for param in self.params if param.off is not None}
        return offs or None


TECHNIQUES: dict[str, Technique] = {}


def register(name: str, summary: str, *params: Param, architectures: tuple[str, ...] = ("mlp", "cnn")):
    """Register the decorated hook-filling function as technique `name`."""

    def decorate(fill: Callable[[dict, Hooks], None]) -> Callable[[dict, Hooks], None]:
        TECHNIQUES[name] = Technique(name, summary, params, fill, architectures)
        return fill

    return decorate


@register(BASELINE, "the baseline: no regularization")
def _none(values: dict, hooks: Hooks) -> None:
    pass


@register("l1", "Keras L1 penalty on every kernel",
          Param("l1", float, 1e-5, 0.0, help="L1 factor", scale="log", search=(1e-7, 1e-2), off=0.0))
def _l1(values: dict, hooks: Hooks) -> None:
    hooks.kernel_penalty["l1"] = values["l1"]


@register("l2", "Keras L2 penalty on every kernel",
          Param("l2", float, 1e-4, 0.0, help="L2 factor", scale="log", search=(1e-6, 1e-1), off=0.0))
def _l2(values: dict, hooks: Hooks) -> None:
    hooks.kernel_penalty["l2"] = values["l2"]


@register(
    "weight-decay",
    "decoupled weight decay through the optimizer's weight_decay (AdamW-style for Adam); the only arm that decays, "
    "also under --optimizer adamw",
    Param("wd", float, 1e-4, 0.0, help="decay per step, multiplied by the learning rate", scale="log",
          search=(1e-4, 10.0), off=0.0),
)
def _weight_decay(values: dict, hooks: Hooks) -> None:
    hooks.optimizer_options["weight_decay"] = values["wd"]


@register(
    "dropout",
    "Dropout after each hidden layer (and optionally on the input)",
    Param("rate", float, 0.5, 0.0, 1.0, high_inclusive=False, help="hidden-layer drop rate", search=(0.0, 0.8),
          off=0.0),
    Param("input_rate", float, 0.0, 0.0, 1.0, high_inclusive=False, help="input drop rate", off=0.0),
)
def _dropout(values: dict, hooks: Hooks) -> None:
    if values["input_rate"]:
        hooks.input_layers.append(lambda build, x: build.dropout(x, values["input_rate"]))
    hooks.after_hidden.append(lambda build, x: build.dropout(x, values["rate"]))


@register("batchnorm", "BatchNormalization after each hidden Dense/Conv, before its activation")
def _batchnorm(values: dict, hooks: Hooks) -> None:
    hooks.set_once("normalization", lambda build, x: build.batchnorm(x), "batchnorm")


@register(
    "ghost-batchnorm",
    "BatchNormalization whose training statistics come from groups of `group` images of each batch (ghost batch "
    "normalization, Hoffer et al. 2017)",
    Param("group", int, 8, 2, help="images per statistics group; must divide the batch size and the last batch"),
)
def _ghost_batchnorm(values: dict, hooks: Hooks) -> None:
    hooks.set_once("normalization", lambda build, x: build.batchnorm(x, group=values["group"]), "ghost-batchnorm")


@register(
    "early-stopping",
    "EarlyStopping on validation cross-entropy, restoring the best weights",
    Param("patience", int, 3, 0, help="epochs without improvement before stopping (0: never stop, no callback)",
          search=(1, 20), off=0),
    Param("min_delta", float, 0.0, 0.0, help="smallest decrease that counts as improvement"),
)
def _early_stopping(values: dict, hooks: Hooks) -> None:
    if not values["patience"]:  # off: no callback (Keras' EarlyStopping restores its best weights even unstopped)
        return

    def stopper():
        import keras

        return keras.callbacks.EarlyStopping(
            monitor="val_crossentropy", mode="min",  # the data loss, not val_loss (which holds any penalty)
            patience=values["patience"], min_delta=values["min_delta"], restore_best_weights=True)

    hooks.callbacks.append(stopper)


@register(
    "max-norm",
    "a max-norm constraint on every kernel: after each step, a unit whose incoming weights have norm |w| > c is "
    "scaled to norm c (w * min(1, c / |w|)); the others are left bit for bit as they are",
    Param("c", float, 3.0, 0.0, low_inclusive=False, help="largest allowed norm of a unit's weights", scale="log",
          search=(0.5, 32.0), off=1e30),  # off: no norm ever reaches it
)
def _max_norm(values: dict, hooks: Hooks) -> None:
    def constraint(conv: bool) -> dict:
        from regbench.constraints import ExactMaxNorm

        return {"kernel_constraint": ExactMaxNorm(values["c"], axis=[0, 1, 2] if conv else 0)}

    hooks.kernel_options.append(constraint)


@register(
    "augment",
    "random translations, rotations and zooms of each training image (Keras' RandomTranslation, RandomRotation, "
    "RandomZoom; empty space filled black), none at inference",
    Param("shift", float, 0.1, 0.0, 1.0, help="largest translation, as a fraction of the image's height and width",
          search=(0.0, 0.25), off=0.0),
    Param("rotation", float, 10.0, 0.0, 180.0, help="largest rotation, degrees either way", search=(0.0, 30.0),
          off=0.0),
    Param("zoom", float, 0.1, 0.0, 1.0, high_inclusive=False, help="largest zoom in or out, as a fraction of the size",
          search=(0.0, 0.25), off=0.0),
)
def _augment(values: dict, hooks: Hooks) -> None:
    def augmented(build, images):
        import keras

        steps = [(keras.layers.RandomTranslation, values["shift"], lambda f: {"height_factor": f, "width_factor": f}),
                 (keras.layers.RandomRotation, values["rotation"] / 360.0, lambda f: {"factor": f}),
                 (keras.layers.RandomZoom, values["zoom"], lambda f: {"height_factor": (-f, f)})]
        for layer, factor, options in steps:
            if factor:  # a zero factor adds no layer: the baseline's model
                images = layer(**options(factor), fill_mode="constant", seed=build.seed("augment"))(images)
        return images

    hooks.image_layers.append(augmented)


@register(
    "label-smoothing",
    "Keras' label_smoothing in the training cross-entropy (targets 1 − s + s/K and s/K); the cross-entropy that is "
    "compared and the validation metrics stay the plain one",
    Param("smoothing", float, 0.1, 0.0, 1.0, high_inclusive=False, help="label_smoothing: the mass s spread over "
          "all classes", search=(0.0, 0.3), off=0.0),
)
def _label_smoothing(values: dict, hooks: Hooks) -> None:
    if values["smoothing"]:  # 0: the baseline's plain loss, bit for bit
        hooks.loss_options["label_smoothing"] = values["smoothing"]


@register(
    "gaussian-noise",
    "Keras GaussianNoise after each hidden layer and/or on the input, training only",
    Param("noise_stddev", float, 0.1, 0.0, help="standard deviation of the noise after each hidden activation",
          scale="linear", search=(0.0, 1.0), off=0.0),
    Param("input_noise_stddev", float, 0.0, 0.0, help="standard deviation of the noise on the input pixels (0..1)",
          off=0.0),
)
def _gaussian_noise(values: dict, hooks: Hooks) -> None:
    if values["input_noise_stddev"]:
        hooks.input_layers.append(lambda build, x: build.noise(x, values["input_noise_stddev"]))
    if values["noise_stddev"]:
        hooks.after_hidden.append(lambda build, x: build.noise(x, values["noise_stddev"]))


@register(
    "ema",
    "an exponential moving average of the weights, kept by the optimizer (use_ema, ema_momentum = 1 − "
    "1/ema_horizon); training steps move the raw weights, while validation, the best-epoch choice, test and the "
    "kept weights all use the averaged ones",
    Param("ema_horizon", float, 1000.0, 1.0, help="steps the average spans: ema_momentum = 1 − 1/ema_horizon "
          "(1: no averaging)", scale="log", search=(10.0, 10_000.0), off=1.0),
)
def _ema(values: dict, hooks: Hooks) -> None:
    hooks.optimizer_options.update(use_ema=True, ema_momentum=1.0 - 1.0 / values["ema_horizon"])


@register(
    "mixup",
    "mixup (Zhang et al. 2018) through Keras' MixUp: each training image of an epoch is blended with another "
    "one of the epoch drawn at random, weight λ ~ Beta(α, α) per image, and trained on the same blend of the two "
    "one-hot labels; inference sees plain images",
    Param("mixup_alpha", float, 0.2, 0.0, help="α of the Beta(α, α) blend weights (0: no mixing)", scale="log",
          search=(0.05, 1.0), off=0.0),
)
def _mixup(values: dict, hooks: Hooks) -> None:
    alpha = values["mixup_alpha"]
    if not alpha:
        return

    def mixed(images, labels, seed: int):
        import keras

        layer = keras.layers.MixUp(alpha=alpha, seed=seed)
        out = layer({"images": images[..., None], "labels": labels}, training=True)
        return (keras.ops.convert_to_numpy(out["images"])[..., 0],
                keras.ops.convert_to_numpy(out["labels"]).astype("float32"))

    hooks.set_once("epoch_data", mixed, "mixup")


@register(
    "spatial-dropout",
    "Keras SpatialDropout2D after each conv block: whole feature maps dropped",
    Param("spatial_rate", float, 0.1, 0.0, 1.0, high_inclusive=False, help="fraction of feature maps dropped",
          search=(0.0, 0.5), off=0.0),
    architectures=("cnn",),
)
def _spatial_dropout(values: dict, hooks: Hooks) -> None:
    hooks.after_block.append(lambda build, x: build.spatial_dropout(x, values["spatial_rate"]))


def get_technique(name: str) -> Technique:
    """Look a technique up by name; a miss raises UsageError listing the valid names."""
    if name not in TECHNIQUES:
        raise UsageError(
            f"unknown technique {name!r}{did_you_mean(name, TECHNIQUES)}; "
            f"choose from {', '.join(TECHNIQUES)} (combine with '+', compare several with ',')"
        )
    return TECHNIQUES[name]


ARM_SYNTAX = "TECHNIQUE[:NAME=VALUE...][+TECHNIQUE...]"  # one arm: techniques combined with '+', each with values
_COMBINE = re.compile(r"\+(?=\s*[A-Za-z])")  # '+' before a technique's name, not inside a number such as 1e+3


@dataclass(frozen=True)
class Arm:
    """One arm of a comparison as given: its techniques, and the parameter values given for it alone."""

    names: tuple[str, ...]  # its techniques, in the canonical (sorted) order
    given: tuple[tuple[str, float], ...] = ()  # NAME=VALUE given as TECHNIQUE:NAME=VALUE, sorted by name

    @property
    def technique(self) -> str:
        """Return the canonical technique setting, e.g. 'dropout+l2'."""
        return "+".join(self.names)

    @property
    def label(self) -> str:
        """Return the arm's label in every table, figure and file name: its setting, each technique followed by
        the values given for it, e.g. 'dropout:rate=0.2+l2' (the setting alone when none were given)."""
        given = dict(self.given)
        return "+".join(name + "".join(f":{param.name}={exact_text(given[param.name])}"
                                       for param in sorted(get_technique(name).params, key=lambda p: p.name)
                                       if param.name in given)
                        for name in self.names)

    def values(self, overrides: dict) -> tuple[tuple[str, float], ...]:
        """Return the arm's full parameter values: defaults, then `overrides` (--param), then its own."""
        return resolve_params(self.names, {**overrides, **dict(self.given)})


def exact_text(value: float) -> str:
    """Write a value so that it reads back exactly, without a '+' or a needless '.0' (1e+16 -> 1e16, 3.0 -> 3)."""
    text = str(value).replace("e+", "e")
    return text[:-2] if text.endswith(".0") else text


def parse_arm(text: str) -> Arm:
    """Parse one arm, e.g. 'l2:l2=1e-4' or 'dropout:rate=0.2:input_rate=0.1+l2', checking every name and value."""
    names, given = [], {}
    for part in _COMBINE.split(text):
        name, *assignments = (piece.strip() for piece in part.split(":"))
        params = {param.name: param for param in get_technique(name).params}
        for assignment in assignments:
            param_name, sep, value = (piece.strip() for piece in assignment.partition("="))
            if not sep or not param_name or not value:
                raise UsageError(f"{text!r}: {assignment!r} is not NAME=VALUE; write {ARM_SYNTAX}, e.g. l2:l2=1e-4")
            if param_name not in params:
                listed = ", ".join(params) or "no parameters"
                raise UsageError(f"{text!r}: {name} has no parameter {param_name!r}"
                                 f"{did_you_mean(param_name, params)}; it takes {listed}")
            if param_name in given:
                raise UsageError(f"{text!r}: {param_name} is given twice; give each value once")
            given[param_name] = params[param_name].parse(value)
        names.append(name)
    return Arm(parse_setting("+".join(names)), tuple(sorted(given.items())))


def technique_of(label: str) -> str:
    """Return the technique setting of an arm's label ('dropout:rate=0.2+l2' -> 'dropout+l2')."""
    return "+".join(part.split(":")[0].strip() for part in _COMBINE.split(label))


def given_values(label: str) -> dict:
    """Return the values an arm's label gives for it alone ('l2:l2=0.001' -> {'l2': 0.001})."""
    return dict(parse_arm(label).given)


def parse_setting(text: str) -> tuple[str, ...]:
    """Split 'l2+dropout' into its technique names, checked and sorted (the canonical order)."""
    names = tuple(sorted(part.strip() for part in text.split("+")))
    for name in names:
        get_technique(name)
    if len(set(names)) != len(names):
        raise UsageError(f"technique setting {text!r} names a technique twice")
    if BASELINE in names and len(names) > 1:
        raise UsageError(f"technique setting {text!r} combines 'none' with a technique")
    hooks_for("+".join(names), resolve_params(names, {}))  # two techniques that fill one single hook: refused
    return names


def applicable(architecture: str) -> list[str]:
    """Return every technique but the baseline that applies to `architecture` (what `--technique all` means)."""
    return [name for name, technique in TECHNIQUES.items()
            if name != BASELINE and architecture in technique.architectures]


def check_architecture(settings, architecture: str) -> None:
    """Refuse a technique that does not apply to `architecture` (UsageError)."""
    for names in settings:
        for name in names:
            if architecture not in get_technique(name).architectures:
                needed = " or ".join(get_technique(name).architectures)
                raise UsageError(f"technique {name} needs --architecture {needed}; it does not apply to the "
                                 f"{architecture}")


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
            hint = did_you_mean(name, known or owners)
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


def markdown_table() -> str:
    """Return the user guide's table of techniques, from this registry: name, parameters with defaults, summary."""
    rows = ["| technique | parameters (default) | what it changes |", "| --- | --- | --- |"]
    for technique in TECHNIQUES.values():
        params = ", ".join(f"`{param.name}` ({param.default:g})" for param in technique.params)
        only = ("" if technique.architectures == ARCHITECTURES
                else f" (`--architecture {' or '.join(technique.architectures)}` only)")
        rows.append(f"| `{technique.name}` | {params} | {technique.summary}{only} |")
    return "\n".join(rows) + "\n"


def hooks_for(setting: str, params: tuple[tuple[str, float], ...]) -> Hooks:
    """Return the hooks that every technique in `setting` ('a+b') fills, in the setting's order."""
    values, hooks = dict(params), Hooks()
    for name in setting.split("+"):
        get_technique(name).fill(values, hooks)
    return hooks


def check_groups(settings, batch_size: int, train_size: int) -> None:
    """Refuse a ghost-batchnorm group that does not divide every batch of an epoch (UsageError)."""
    last = train_size % batch_size or batch_size
    for name, params in settings:
        group = dict(params).get("group")
        ghost = "ghost-batchnorm" in technique_of(name).split("+")
        if group is not None and ghost and (batch_size % group or last % group):
            raise UsageError(f"ghost-batchnorm group={group:g} must divide the batch size {batch_size} and the last "
                             f"batch of an epoch ({last} of {train_size} images); choose a divisor of both")

