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
from regbench.studies.common import QUICK_CONFIG, Findings, Preset, StudyContext, finish, interval, pp
from regbench.techniques import BASELINE
from regbench.train import batch_order, compile_model

FULL = Preset(config={"epochs": 10}, seeds=3,
              grid={"l2": 5e-4, "optimizers": ("sgd", "adam"), "checkpoints": (1, 10, 100, 1000)})
QUICK = Preset(config=QUICK_CONFIG, seeds=2,
               grid={"l2": 5e-3, "optimizers": ("sgd", "adam"), "checkpoints": (1, 5)})
SWEEPS = {"optimizer": "sgd and adam, each at its default learning rate", "lr": "each optimizer's default"}
NEEDS = {"architecture": ("mlp", "it follows blank pixels' weights into the first dense layer")}
ARMS = ("none", "l2", "weight-decay")
FLOAT32_EPS = float(np.finfo(np.float32).eps)
ONE_STEP_ROUNDING = 4 * FLOAT32_EPS  # one step of two equal methods differs by a few roundings at most
SEPARATION = 1_000  # the SGD pair must stay this many times closer than the Adam pair at every checkpoint


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
    context.echo("training the L2, decay and 1-ulp control models step by step from one start")
    steps = pd.DataFrame([row for opt in optimizers for row in divergence(context, opt)])
    accuracy = accuracy_table(runs, optimizers, epochs)
    final = {opt: (models[arm_config(context, opt, "l2", seed, epochs)],
                   models[arm_config(context, opt, "weight-decay", seed, epochs)]) for opt in optimizers}
    return Findings(
        verdict=verdict(weights, steps, accuracy, context.grid["l2"], epochs),
        body=body(weights, steps, accuracy, context.grid["l2"], int(dead.sum()), epochs),
        tables={"runs": runs, "weight_comparison": weights, "divergence_by_step": steps, "accuracy": accuracy},
        figures={"l2_vs_decoupled_weights": figure(final)},
    )


def _kernels(model: keras.Model) -> list[np.ndarray]:
    """Return every trainable weight of `model` as a numpy array."""
    return [keras.ops.convert_to_numpy(weight) for weight in model.trainable_weights]


def relative_difference(a: keras.Model, b: keras.Model) -> tuple[float, float]:
    """Return max |a − b| / max |b| and ‖a − b‖ / ‖b‖ over every trainable weight."""
    diff = np.concatenate([(x - y).ravel() for x, y in zip(_kernels(a), _kernels(b))])
    scale = np.concatenate([y.ravel() for y in _kernels(b)])
    return float(np.abs(diff).max() / np.abs(scale).max()), float(np.linalg.norm(diff) / np.linalg.norm(scale))


def divergence(context: StudyContext, optimizer: str) -> list[dict]:
    """Train L2, decay and L2 from initial weights moved by one float32 ulp on the same batches; compare.

    The ulp-moved copy is the control: how far float32 rounding alone carries two runs of one method apart.
    """
    split, batch, seed = context.split(), context.base.batch_size, context.seeds[0]
    l2_config, wd_config = (arm_config(context, optimizer, arm, seed, 1) for arm in ("l2", "weight-decay"))
    l2, wd, control = compile_model(l2_config)[0], compile_model(wd_config)[0], compile_model(l2_config)[0]
    control.set_weights([np.nextafter(w, np.float32(np.inf)) for w in control.get_weights()])
    order = batch_order(seed, 0, len(split.y_train))
    x, y = split.x_train[order], split.y_train[order]
    checkpoints = [n for n in context.grid["checkpoints"] if n * batch <= len(y)]
    rows, done = [], 0
    for steps in checkpoints:
        for model in (l2, wd, control):
            model.fit(x[done * batch:steps * batch], y[done * batch:steps * batch], batch_size=batch, epochs=1,
                      shuffle=False, verbose=0)
        done = steps
        (decay_max, decay_norm), (control_max, control_norm) = relative_difference(l2, wd), relative_difference(l2, control)
        rows.append({"optimizer": optimizer, "steps": steps, "l2_vs_decay_max": decay_max, "l2_vs_decay_norm": decay_norm,
                     "l2_vs_ulp_control_max": control_max, "l2_vs_ulp_control_norm": control_norm})
    return rows


def _first_kernel(model: keras.Model) -> np.ndarray:
    """Return the kernel of the model's first Dense layer (pixels x units for the mlp)."""
    layer = next(layer for layer in model.layers if isinstance(layer, keras.layers.Dense))
    return keras.ops.convert_to_numpy(layer.kernel)


def compare_weights(optimizer: str, epochs: int, steps: int, l2_model, wd_model, initial, dead: np.ndarray,
                    k: float, lr: float) -> dict:
    """Measure how far the L2 and decoupled weights are apart, and the per-step shrink of dead-pixel weights."""
    max_difference, norm_difference = relative_difference(l2_model, wd_model)
    start = _first_kernel(initial)[dead]
    ends = {"l2": _first_kernel(l2_model)[dead], "wd": _first_kernel(wd_model)[dead]}
    usable = np.abs(start) > 1e-3  # weights far enough from zero for a ratio
    row = {"optimizer": optimizer, "epochs": epochs, "steps": steps, "learning_rate": lr,
           "max_relative_difference": max_difference, "norm_relative_difference": norm_difference,
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
    return pp(row[mean], row[low], row[high], digits=3)


def _rounding_level(steps: pd.DataFrame, optimizer: str, reference: str) -> bool:
    """Say whether `optimizer`'s pair differs by rounding after one step and stays SEPARATION times closer than
    `reference`'s pair at every checkpoint."""
    mine, other = (steps[steps["optimizer"] == name].set_index("steps") for name in (optimizer, reference))
    one_step = mine["l2_vs_decay_max"].iloc[0] <= ONE_STEP_ROUNDING
    return bool(one_step and (SEPARATION * mine["l2_vs_decay_max"] <= other["l2_vs_decay_max"]).all())


def verdict(weights: pd.DataFrame, steps: pd.DataFrame, accuracy: pd.DataFrame, k: float, epochs: int) -> str:
    """State from the measured differences whether L2 equals decay under SGD and not under Adam."""
    sgd = weights[(weights["optimizer"] == "sgd") & (weights["epochs"] == epochs)].iloc[0]
    adam = weights[(weights["optimizer"] == "adam") & (weights["epochs"] == epochs)].iloc[0]
    sgd_steps, adam_steps = (steps[steps["optimizer"] == opt] for opt in ("sgd", "adam"))
    first, last = sgd_steps.iloc[0], sgd_steps.iloc[-1]
    adam_last = adam_steps.iloc[-1]
    acc = accuracy.set_index("optimizer")
    same = _rounding_level(steps, "sgd", "adam")
    return (
        f"Under SGD (lr {sgd['learning_rate']:g}), L2 with Keras factor k = {k:g} (λ/2m; λ/m = {2 * k:g}) and "
        f"decoupled decay wd = {2 * k:g} from the same start on the same batches differ by "
        f"{first['l2_vs_decay_max']:.1e} of the largest weight after {first['steps']} step (float32 epsilon "
        f"{FLOAT32_EPS:.1e}); accumulated rounding grows it to {last['l2_vs_decay_max']:.1e} after "
        f"{last['steps']:,} steps (one float32 ulp added to the start grows to {last['l2_vs_ulp_control_max']:.1e} "
        f"over the same steps) and {sgd['max_relative_difference']:.1e} after all {sgd['steps']:,}, against "
        f"{adam_steps.set_index('steps').loc[last['steps'], 'l2_vs_decay_max']:.1e} for the Adam pair after "
        f"{last['steps']:,}: {'the same method up to float32 rounding' if same else 'more than rounding'}. Weights on always-blank pixels "
        f"shrink by {sgd['l2_shrink_per_step']:.9f} (L2) and {sgd['wd_shrink_per_step']:.9f} (decay) per step; "
        f"1 − ηλ/m = {sgd['expected_shrink_per_step']:.9f}. Test accuracy L2 − decoupled: "
        f"{_ci(acc.loc['sgd'], 'l2_minus_decoupled', 'ci_low', 'ci_high')}. Under Adam the pair is "
        f"{adam_last['l2_vs_decay_max']:.1e} apart after {adam_last['steps']:,} steps (control "
        f"{adam_last['l2_vs_ulp_control_max']:.1e}) and ‖Δw‖/‖w‖ = {adam['norm_relative_difference']:.2f} after "
        f"{adam['steps']:,}: blank-pixel weights keep {adam['wd_remaining']:.1%} of their size under decoupled decay "
        f"(predicted {adam['expected_remaining']:.1%}) but {adam['l2_remaining']:.1%} under L2, whose gradient Adam "
        f"rescales; test accuracy L2 − decoupled {_ci(acc.loc['adam'], 'l2_minus_decoupled', 'ci_low', 'ci_high')}. "
        + ("L2 is weight decay for SGD only, which is why AdamW decouples it." if same else
           "These runs do not show L2 and decay to be the same under SGD.")
    )


def body(weights: pd.DataFrame, steps: pd.DataFrame, accuracy: pd.DataFrame, k: float, dead: int, epochs: int) -> str:
    """Render the derivation, the tables and the figure."""
    step_rows = [[row.optimizer, f"{row.steps:,}", f"{row.l2_vs_decay_max:.3e}", f"{row.l2_vs_ulp_control_max:.3e}",
                  f"{row.l2_vs_decay_norm:.3e}", f"{row.l2_vs_ulp_control_norm:.3e}"] for row in steps.itertuples()]
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

### Step by step, against a rounding control (first seed)

Three models trained in this process from one start on the first batches of epoch 1: L2, decoupled decay, and
L2 again from initial weights each moved by one float32 ulp (a scale for how training amplifies a difference
of one rounding). L2 and decay round differently at every step, so their difference starts at rounding level
and accumulates; the Adam pair, a different method, is orders of magnitude further apart from the first step.

{report.markdown_table(["optimizer", "steps", "max |Δw| / max |w|: L2 vs decay", "same: L2 vs 1-ulp control",
                        "‖Δw‖ / ‖w‖: L2 vs decay", "same: L2 vs 1-ulp control"], step_rows)}

### The stored runs after N steps (first seed)

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
