"""Study weight-decay: an L2 penalty against decoupled weight decay, step by step, under SGD and Adam.

Keras' L2 regularizer adds k * sum(w^2) to the loss, so k = lambda / 2m and its gradient adds 2k w = (lambda/m) w.
Keras' optimizer weight_decay wd shrinks w <- w - lr * wd * w before the gradient step, so wd = 2k makes
plain SGD take the same step, w <- (1 - lr * lambda / m) w - lr * dL0/dw, either way.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from regbench import report, stats
from regbench.config import DEFAULT_LR, RunConfig
from regbench.studies.common import Findings, Preset, StudyContext, finish, interval
from regbench.techniques import BASELINE
from regbench.train import compile_model

FULL = Preset(config={"epochs": 10}, seeds=3, grid={"l2": 5e-4, "optimizers": ("sgd", "adam")})
QUICK = Preset(config={"train_size": 300, "epochs": 1, "hidden": (32,)}, seeds=2,
               grid={"l2": 5e-3, "optimizers": ("sgd", "adam")})
SWEEPS = {"optimizer": "sgd and adam, each at its default learning rate", "lr": "each optimizer's default"}
ARMS = ("none", "l2", "weight-decay")
ROUNDING_OK = 1e-4  # a max relative weight difference below this is float32 rounding, not a different method


def arm_config(context: StudyContext, optimizer: str, technique: str, seed: int, epochs: int) -> RunConfig:
    """Return the run of `technique` (none, l2 = k, or weight-decay = 2k) under `optimizer`."""
    k = context.grid["l2"]
    params = {"none": (), "l2": (("l2", k),), "weight-decay": (("wd", 2 * k),)}[technique]
    return context.configs((seed,), optimizer=optimizer, lr=DEFAULT_LR[optimizer], technique=technique,
                           technique_params=params, epochs=epochs)[0]


def run(context: StudyContext) -> Findings:
    """Compare the weights and accuracies of the L2 and decoupled runs under each optimizer."""
    optimizers, epochs = context.grid["optimizers"], context.base.epochs
    configs = [arm_config(context, opt, arm, seed, epochs) for opt in optimizers for arm in ARMS for seed in context.seeds]
    seed = context.seeds[0]
    pairs = [(opt, e) for opt in optimizers for e in sorted({1, epochs})]
    model_configs = [arm_config(context, opt, arm, seed, e) for opt, e in pairs for arm in ("l2", "weight-decay")]
    models = dict(zip(model_configs, context.models(model_configs)))
    runs = context.runs(configs + model_configs).runs
    split = context.split()
    steps_per_epoch = math.ceil(len(split.y_train) / context.base.batch_size)
    dead = np.all(split.x_train.reshape(len(split.x_train), -1) == 0, axis=0)  # pixels that are 0 in every image
    rows = []
    for opt, e in pairs:
        l2_config, wd_config = (arm_config(context, opt, arm, seed, e) for arm in ("l2", "weight-decay"))
        rows.append(compare_weights(opt, e, e * steps_per_epoch, models[l2_config], models[wd_config],
                                    compile_model(l2_config)[0], dead, context.grid["l2"], l2_config.lr))
    weights = pd.DataFrame(rows)
    accuracy = accuracy_table(runs, optimizers, epochs)
    final = {opt: (models[arm_config(context, opt, "l2", seed, epochs)],
                   models[arm_config(context, opt, "weight-decay", seed, epochs)]) for opt in optimizers}
    return Findings(
        verdict=verdict(weights, accuracy, context.grid["l2"], epochs),
        body=body(weights, accuracy, context.grid["l2"], int(dead.sum()), epochs),
        tables={"runs": runs, "weight_comparison": weights, "accuracy": accuracy},
        figures={"l2_vs_decoupled_weights": figure(final)},
    )


def _kernels(model: keras.Model) -> list[np.ndarray]:
    """Return every trainable weight of `model` as a numpy array."""
    return [keras.ops.convert_to_numpy(weight) for weight in model.trainable_weights]


def _first_kernel(model: keras.Model) -> np.ndarray:
    """Return the kernel of the model's first Dense layer (pixels x units for the mlp)."""
    layer = next(layer for layer in model.layers if isinstance(layer, keras.layers.Dense))
    return keras.ops.convert_to_numpy(layer.kernel)


def compare_weights(optimizer: str, epochs: int, steps: int, l2_model, wd_model, initial, dead: np.ndarray,
                    k: float, lr: float) -> dict:
    """Measure how far the L2 and decoupled weights are apart, and the per-step shrink of dead-pixel weights."""
    a, b = _kernels(l2_model), _kernels(wd_model)
    diff = np.concatenate([(x - y).ravel() for x, y in zip(a, b)])
    scale = np.concatenate([y.ravel() for y in b])
    start = _first_kernel(initial)[dead]
    ends = {"l2": _first_kernel(l2_model)[dead], "wd": _first_kernel(wd_model)[dead]}
    usable = np.abs(start) > 1e-3  # weights far enough from zero for a ratio
    row = {"optimizer": optimizer, "epochs": epochs, "steps": steps, "learning_rate": lr,
           "max_relative_difference": float(np.abs(diff).max() / np.abs(scale).max()),
           "norm_relative_difference": float(np.linalg.norm(diff) / np.linalg.norm(scale)),
           "dead_pixel_weights": int(usable.sum()), "expected_shrink_per_step": 1 - lr * 2 * k,
           "expected_remaining": (1 - lr * 2 * k) ** steps}
    for name, end in ends.items():
        ratio = end[usable] / start[usable]
        row[f"{name}_remaining"] = float(np.median(np.abs(ratio)))
        row[f"{name}_shrink_per_step"] = float(np.median(np.sign(ratio) * np.abs(ratio) ** (1 / steps)))
    return row


def accuracy_table(runs: pd.DataFrame, optimizers, epochs: int) -> pd.DataFrame:
    """Return per optimizer and arm the test accuracy, and L2 minus decoupled paired by seed with its CI."""
    rows = []
    for optimizer in optimizers:
        mine = stats.successful(runs[(runs["optimizer"] == optimizer) & (runs["epochs"] == epochs)])
        means = mine.groupby("technique")["test_accuracy"].mean()
        by_seed = mine.pivot_table(index="seed", columns="technique", values="test_accuracy")
        rows.append({"optimizer": optimizer, "pairs": len(by_seed),
                     **{f"{arm}_test_accuracy": means.get(arm, math.nan) for arm in ARMS},
                     **dict(zip(("l2_minus_decoupled", "ci_low", "ci_high"),
                                interval(by_seed["l2"] - by_seed["weight-decay"]))),
                     **dict(zip(("l2_minus_none", "l2_ci_low", "l2_ci_high"), interval(by_seed["l2"] - by_seed[BASELINE]))),
                     **dict(zip(("decoupled_minus_none", "wd_ci_low", "wd_ci_high"),
                                interval(by_seed["weight-decay"] - by_seed[BASELINE])))})
    return pd.DataFrame(rows)


def _ci(row, mean: str, low: str, high: str) -> str:
    """Format a paired difference with its CI in percentage points."""
    return f"{row[mean] * 100:+.3f} pp [{row[low] * 100:+.3f}, {row[high] * 100:+.3f}]"


def verdict(weights: pd.DataFrame, accuracy: pd.DataFrame, k: float, epochs: int) -> str:
    """State from the measured differences whether L2 equals decay under SGD and not under Adam."""
    sgd = weights[(weights["optimizer"] == "sgd") & (weights["epochs"] == epochs)].iloc[0]
    adam = weights[(weights["optimizer"] == "adam") & (weights["epochs"] == epochs)].iloc[0]
    acc = accuracy.set_index("optimizer")
    same = sgd["max_relative_difference"] < ROUNDING_OK
    return (
        f"Under SGD (lr {sgd['learning_rate']:g}), L2 with Keras factor k = {k:g} (λ/2m; λ/m = {2 * k:g}) and "
        f"decoupled decay wd = {2 * k:g} end {sgd['steps']:,} steps apart by at most "
        f"{sgd['max_relative_difference']:.2e} of the largest weight (‖Δw‖/‖w‖ = {sgd['norm_relative_difference']:.2e}): "
        f"{'the same weights up to float32 rounding' if same else 'not the same weights'}. Weights on always-blank "
        f"pixels shrink by {sgd['l2_shrink_per_step']:.9f} (L2) and {sgd['wd_shrink_per_step']:.9f} (decay) per step; "
        f"1 − ηλ/m = {sgd['expected_shrink_per_step']:.9f}. Test accuracy L2 − decoupled: "
        f"{_ci(acc.loc['sgd'], 'l2_minus_decoupled', 'ci_low', 'ci_high')}. Under Adam the same pair ends "
        f"‖Δw‖/‖w‖ = {adam['norm_relative_difference']:.2f} apart: blank-pixel weights keep "
        f"{adam['wd_remaining']:.1%} of their size under decoupled decay (predicted {adam['expected_remaining']:.1%}) "
        f"but {adam['l2_remaining']:.1%} under L2, whose gradient Adam rescales; test accuracy L2 − decoupled "
        f"{_ci(acc.loc['adam'], 'l2_minus_decoupled', 'ci_low', 'ci_high')}. L2 is weight decay for SGD only, "
        f"which is why AdamW decouples it."
    )


def body(weights: pd.DataFrame, accuracy: pd.DataFrame, k: float, dead: int, epochs: int) -> str:
    """Render the derivation, the tables and the figure."""
    weight_rows = [[row.optimizer, row.epochs, f"{row.steps:,}", f"{row.max_relative_difference:.3e}",
                    f"{row.norm_relative_difference:.3e}", f"{row.l2_shrink_per_step:.9f}",
                    f"{row.wd_shrink_per_step:.9f}", f"{row.expected_shrink_per_step:.9f}",
                    f"{row.l2_remaining:.4f}", f"{row.wd_remaining:.4f}", f"{row.expected_remaining:.4f}"]
                   for row in weights.itertuples()]
    accuracy_rows = [[row["optimizer"], row["pairs"], *(f"{row[f'{arm}_test_accuracy'] * 100:.2f}" for arm in ARMS),
                      _ci(row, "l2_minus_none", "l2_ci_low", "l2_ci_high"),
                      _ci(row, "decoupled_minus_none", "wd_ci_low", "wd_ci_high"),
                      _ci(row, "l2_minus_decoupled", "ci_low", "ci_high")] for _, row in accuracy.iterrows()]
    return f"""## Derivation and how it maps to Keras

For L = L0 + (λ/2m) Σ w², ∂L/∂w = ∂L0/∂w + (λ/m) w, so one SGD step is w ← (1 − ηλ/m) w − η ∂L0/∂w.
Keras' `L2(k)` adds k Σ w² to the loss: k = λ/2m, and its gradient adds 2k w. Keras' optimizer
`weight_decay=wd` applies w ← w − η·wd·w before the gradient step (kernels only here, like the penalty), so
wd = 2k = λ/m gives the same step. This study uses k = {k:g}, wd = {2 * k:g}; both runs of a pair start from the
same weights and see the same batches in the same order.

Every pixel that is 0 in all training images ({dead} of 784) gives its first-layer weights no data gradient, so
those weights move by the decay alone: their per-step factor is measured as (w_N / w_0)^(1/N), the median over
those weights with |w_0| > 1e-3.

## Results

![L2 against decoupled weights](figure:l2_vs_decoupled_weights.png)

Every trainable weight of the first seed's pair after {epochs} epochs: the L2 run's value against the
decoupled run's (30,000 sampled). On the diagonal the two methods are the same.

### Weights after N steps (seed 0)

{report.markdown_table(["optimizer", "epochs", "steps N", "max |Δw| / max |w|", "‖Δw‖ / ‖w‖",
                        "shrink per step, L2", "shrink per step, decay", "1 − ηλ/m",
                        "blank-pixel |w_N/w_0|, L2", "same, decay", "(1 − ηλ/m)^N"], weight_rows)}

### Test accuracy (paired by seed)

{report.markdown_table(["optimizer", "pairs", "none %", "L2 %", "decoupled %", "L2 − none", "decoupled − none",
                        "L2 − decoupled"], accuracy_rows)}
"""


def figure(final: dict) -> Figure:
    """Scatter every trainable weight of the L2 run against the decoupled run, one panel per optimizer."""
    fig = Figure(figsize=(6 * len(final), 5.5))
    panels = np.atleast_1d(fig.subplots(1, len(final)))
    for axes, (optimizer, (l2_model, wd_model)) in zip(panels, final.items()):
        a = np.concatenate([w.ravel() for w in _kernels(l2_model)])
        b = np.concatenate([w.ravel() for w in _kernels(wd_model)])
        pick = np.random.default_rng(0).permutation(len(a))[:30_000]
        axes.scatter(b[pick], a[pick], s=1, alpha=0.3, color="#1f77b4")
        low, high = min(a.min(), b.min()), max(a.max(), b.max())
        axes.plot([low, high], [low, high], color="black", linewidth=0.8, label="equal")
        axes.set(xlabel="weight, decoupled decay run", ylabel="weight, L2 penalty run",
                 title=f"{optimizer}: ‖Δw‖/‖w‖ = {np.linalg.norm(a - b) / np.linalg.norm(b):.2e}")
    return finish(fig, panels)
