"""Study weight-decay: an L2 penalty against decoupled weight decay, step by step, under plain SGD, SGD with
momentum and Adam.

Keras' L2 regularizer adds k * sum(w^2) to the loss, so k = lambda / 2m and its gradient adds 2k w = (lambda/m) w.
Keras' optimizer weight_decay wd shrinks w <- w - lr * wd * w before the gradient step, so wd = 2k makes
plain SGD take the same step, w <- (1 - lr * lambda / m) w - lr * dL0/dw, either way. With momentum the
penalty's gradient also enters the velocity while Keras' decay does not, so the two differ.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from regbench import plots, stats, wording
from regbench.config import DEFAULT_LR, DEFAULT_MARGIN, RunConfig
from regbench.studies.context import QUICK_CONFIG, Findings, Preset, StudyContext
from regbench.techniques import BASELINE
from regbench.train import batch_order, compile_model

OPTIMIZERS = {"plain SGD": ("sgd", 0.0), "SGD, momentum 0.9": ("sgd", 0.9), "Adam": ("adam", 0.0)}
FULL = Preset(config={"epochs": 10}, seeds=5,
              grid={"l2": 5e-4, "adam_wd": 0.05, "optimizers": tuple(OPTIMIZERS), "checkpoints": (1, 10, 100, 1000),
                    "reordered_controls": 2})  # rounding controls with the images inside each batch reordered
QUICK = Preset(config=QUICK_CONFIG, seeds=2,
               grid={"l2": 5e-3, "adam_wd": 0.05, "optimizers": tuple(OPTIMIZERS), "checkpoints": (1, 5),
                     "reordered_controls": 1})
SWEEPS = {"optimizer": "plain SGD, SGD with momentum 0.9 and Adam, each at its default learning rate",
          "lr": "each optimizer's default", "momentum": "0 and 0.9 for SGD"}
NEEDS = {"architecture": ("mlp", "it follows blank pixels' weights into the first dense layer"),
         "dataset": ("mnist", "it follows the weights of pixels blank in every MNIST training image")}
ARMS = ("none", "l2", "weight-decay")
FLOAT32_EPS = float(np.finfo(np.float32).eps)
ONE_STEP_ROUNDING = 4 * FLOAT32_EPS  # one step of two equal methods differs by a few roundings at most
ROUNDING_FACTOR = 10  # "same up to rounding": the L2-vs-decay gap stays within this many times the controls' envelope
# ... or within N steps' worth of one-step rounding: equal methods computed in another order round differently at
# every step on every weight, and without amplification those roundings add up at most linearly


def decoupled_wd(grid: dict, setting: str) -> float:
    """Return the decoupled arm's wd: 2k (the same step as L2 under plain SGD), or Adam's own visible strength."""
    return grid["adam_wd"] if OPTIMIZERS[setting][0] == "adam" else 2 * grid["l2"]


def arm_config(context: StudyContext, setting: str, arm: str, seed: int, epochs: int) -> RunConfig:
    """Return the run of `arm` (none, l2 = k, or weight-decay) under the optimizer `setting`."""
    optimizer, momentum = OPTIMIZERS[setting]
    params = {"none": (), "l2": (("l2", context.grid["l2"]),),
              "weight-decay": (("wd", decoupled_wd(context.grid, setting)),)}[arm]
    return context.configs((seed,), optimizer=optimizer, lr=DEFAULT_LR[optimizer], momentum=momentum,
                           technique=arm, technique_params=params, epochs=epochs)[0]


def run(context: StudyContext) -> Findings:
    """Compare the weights and accuracies of the L2 and decoupled runs under each optimizer setting."""
    settings, epochs, seed = context.grid["optimizers"], context.base.epochs, context.seeds[0]
    configs = [arm_config(context, s, arm, sd, epochs) for s in settings for arm in ARMS for sd in context.seeds]
    pairs = [(s, e) for s in settings for e in sorted({1, epochs})]
    model_configs = [arm_config(context, s, arm, seed, e) for s, e in pairs for arm in ("l2", "weight-decay")]
    models = dict(zip(model_configs, context.models(model_configs)))
    runs = context.runs(configs + model_configs).runs
    split = context.split()
    steps_per_epoch = math.ceil(len(split.y_train) / context.base.batch_size)
    dead = np.all(split.x_train.reshape(len(split.x_train), -1) == 0, axis=0)  # pixels that are 0 in every image
    rows = []
    for setting, e in pairs:
        l2_config, wd_config = (arm_config(context, setting, arm, seed, e) for arm in ("l2", "weight-decay"))
        optimizer, momentum = OPTIMIZERS[setting]
        rows.append(compare_weights(setting, e, e * steps_per_epoch, models[l2_config], models[wd_config],
                                    compile_model(l2_config)[0], dead, context.grid["l2"],
                                    decoupled_wd(context.grid, setting), momentum, DEFAULT_LR[optimizer]))
    weights = pd.DataFrame(rows)
    context.echo("training L2, decay and the rounding controls step by step from one start, to the full horizon")
    steps = pd.DataFrame([row for s in settings for row in divergence(context, s)])
    accuracy = accuracy_table(runs, settings, epochs)
    final = {s: (models[arm_config(context, s, "l2", seed, epochs)],
                 models[arm_config(context, s, "weight-decay", seed, epochs)]) for s in settings}
    return Findings(
        verdict=verdict(weights, steps, accuracy, context.grid, epochs),
        body=body(weights, steps, accuracy, context.grid, int(dead.sum()), epochs),
        tables={"runs": runs, "weight_comparison": weights, "divergence_by_step": steps, "accuracy": accuracy},
        figures={"divergence_and_weights": figure(steps, final)},
    )


def _kernels(model: keras.Model) -> list[np.ndarray]:
    """Return every trainable weight of `model` as a numpy array."""
    return [keras.ops.convert_to_numpy(weight) for weight in model.trainable_weights]


def relative_difference(a: keras.Model, b: keras.Model) -> tuple[float, float]:
    """Return max |a − b| / max |b| and ‖a − b‖ / ‖b‖ over every trainable weight."""
    diff = np.concatenate([(x - y).ravel() for x, y in zip(_kernels(a), _kernels(b))])
    scale = np.concatenate([y.ravel() for y in _kernels(b)])
    return float(np.abs(diff).max() / np.abs(scale).max()), float(np.linalg.norm(diff) / np.linalg.norm(scale))


def checkpoints_of(grid: dict, steps_per_epoch: int, epochs: int) -> list[int]:
    """Return the steps at which the step-by-step models are compared: the grid's, and the end of the first and
    last epoch (the full horizon)."""
    return sorted({*grid["checkpoints"], steps_per_epoch, steps_per_epoch * epochs} - {0})


def within_batch_reorder(order: np.ndarray, batch: int, rng: np.random.Generator) -> np.ndarray:
    """Return `order` with the images inside each batch shuffled: the same batches, summed in another order."""
    reordered = order.copy()
    for start in range(0, len(reordered), batch):
        rng.shuffle(reordered[start:start + batch])
    return reordered


def divergence(context: StudyContext, setting: str) -> list[dict]:
    """Train L2 and decay on the run's batches for the whole run beside rounding controls (L2 again: from initial
    weights moved by one float32 ulp, and with the images inside each batch in another order, `reordered_controls`
    times); compare them at every checkpoint.

    The controls are one method computed with other roundings, amplified as training amplifies any rounding (a ReLU
    unit that an image leaves on the other side of its kink sends the two apart at once); the reordered ones round
    the data gradient differently at every step. Their largest distance is the envelope a pair of equal methods
    stays within once amplification dominates; before it does, the rounding allowance (N steps of one-step rounding)
    covers equal methods that round differently on every weight at every step.
    """
    split, batch, seed, epochs = context.split(), context.base.batch_size, context.seeds[0], context.base.epochs
    l2_config, wd_config = (arm_config(context, setting, arm, seed, epochs) for arm in ("l2", "weight-decay"))
    l2, wd = compile_model(l2_config)[0], compile_model(wd_config)[0]
    reordered = context.grid["reordered_controls"]
    controls = [compile_model(l2_config)[0] for _ in range(reordered + 1)]
    controls[0].set_weights([np.nextafter(w, np.float32(np.inf)) for w in controls[0].get_weights()])
    n = len(split.y_train)
    steps_per_epoch = math.ceil(n / batch)
    rows, done = [], 0
    for checkpoint in checkpoints_of(context.grid, steps_per_epoch, epochs):
        while done < checkpoint:  # train up to the checkpoint, epoch by epoch, on the run's own batch order
            epoch, first = divmod(done, steps_per_epoch)
            last = min(checkpoint - epoch * steps_per_epoch, steps_per_epoch)
            order = batch_order(seed, epoch, n)
            orders = [order] * 3 + [within_batch_reorder(order, batch, np.random.default_rng([seed, epoch, k]))
                                    for k in range(reordered)]
            for model, model_order in zip((l2, wd, *controls), orders):
                part = model_order[first * batch:last * batch]
                model.fit(split.x_train[part], split.y_train[part], batch_size=batch, epochs=1, shuffle=False,
                          verbose=0)
            done = epoch * steps_per_epoch + last
        decay_max, decay_norm = relative_difference(l2, wd)
        control = [relative_difference(l2, model) for model in controls]
        envelope = max(value for value, _ in control)
        rows.append({"optimizer": setting, "steps": checkpoint, "l2_vs_decay_max": decay_max,
                     "l2_vs_decay_norm": decay_norm, "l2_vs_ulp_control_max": control[0][0],
                     "l2_vs_reordered_max": max(value for value, _ in control[1:]), "control_envelope_max": envelope,
                     "control_envelope_norm": max(norm for _, norm in control),
                     "decay_over_control": decay_max / envelope,
                     "rounding_allowance": max(checkpoint * ONE_STEP_ROUNDING, ROUNDING_FACTOR * envelope)})
    return rows


def _first_kernel(model: keras.Model) -> np.ndarray:
    """Return the kernel of the model's first Dense layer (pixels x units for the mlp)."""
    layer = next(layer for layer in model.layers if isinstance(layer, keras.layers.Dense))
    return keras.ops.convert_to_numpy(layer.kernel)


def l2_shrink_with_momentum(lr: float, decay: float, momentum: float) -> float:
    """Return the per-step factor by which heavy-ball SGD shrinks a weight whose only gradient is decay * w, in the
    long run: the slow root of r² − (1 + μ − η·decay) r + μ = 0 (1 − η·decay without momentum)."""
    b = 1 + momentum - lr * decay
    return (b + math.sqrt(max(b * b - 4 * momentum, 0.0))) / 2


def compare_weights(setting: str, epochs: int, steps: int, l2_model, wd_model, initial, dead: np.ndarray, k: float,
                    wd: float, momentum: float, lr: float) -> dict:
    """Measure how far the stored L2 and decoupled runs are apart, and the per-step shrink of blank-pixel weights
    against what each method predicts (Adam's L2 shrink has no closed form: NaN)."""
    max_difference, norm_difference = relative_difference(l2_model, wd_model)
    start = _first_kernel(initial)[dead]
    ends = {"l2": _first_kernel(l2_model)[dead], "wd": _first_kernel(wd_model)[dead]}
    usable = np.abs(start) > 1e-3  # weights far enough from zero for a ratio
    adam = OPTIMIZERS[setting][0] == "adam"
    predicted = {"l2": math.nan if adam else l2_shrink_with_momentum(lr, 2 * k, momentum), "wd": 1 - lr * wd}
    row = {"optimizer": setting, "epochs": epochs, "steps": steps, "learning_rate": lr, "momentum": momentum,
           "max_relative_difference": max_difference, "norm_relative_difference": norm_difference,
           "dead_pixel_weights": int(usable.sum())}
    for name, end in ends.items():
        ratio = end[usable] / start[usable]
        row[f"{name}_remaining"] = float(np.median(np.abs(ratio)))
        row[f"{name}_shrink_per_step"] = float(np.median(np.sign(ratio) * np.abs(ratio) ** (1 / steps)))
        row[f"{name}_predicted_shrink_per_step"] = predicted[name]
        row[f"{name}_predicted_remaining"] = predicted[name] ** steps
    return row


def accuracy_table(runs: pd.DataFrame, settings, epochs: int) -> pd.DataFrame:
    """Return per optimizer setting and comparison (L2 − none, decoupled − none, L2 − decoupled) the paired test-
    accuracy difference, Holm-corrected across all of them, and for L2 − decoupled the equivalence test (TOST,
    ±DEFAULT_MARGIN, Holm-corrected across the settings)."""
    comparisons = {"L2 − none": ("l2", BASELINE), "decoupled − none": ("weight-decay", BASELINE),
                   "L2 − decoupled": ("l2", "weight-decay")}
    differences, means = {}, []
    for setting in settings:
        optimizer, momentum = OPTIMIZERS[setting]
        mine = runs[(runs["optimizer"] == optimizer) & (runs["momentum"] == momentum) & (runs["epochs"] == epochs)]
        means.append({"optimizer": setting, **{f"{arm}_test_accuracy": stats.successful(mine).loc[
            mine["technique"] == arm, "test_accuracy"].mean() for arm in ARMS}})
        for name, (arm, against) in comparisons.items():
            differences[setting, name] = stats.paired_differences(mine, "test_accuracy", arm, against)
    family = stats.effect_family(differences)
    same = {key: values for key, values in differences.items() if key[1] == "L2 − decoupled"}
    equivalence = stats.effect_family(same, DEFAULT_MARGIN)[["effect", "tost_holm_p", "eq_ci_low", "eq_ci_high",
                                                             "margin"]]
    table = family.drop(columns=equivalence.columns[1:]).merge(equivalence, on="effect", how="left")
    table[["optimizer", "comparison"]] = pd.DataFrame(table.pop("effect").tolist(), index=table.index)
    return table.merge(pd.DataFrame(means), on="optimizer")


def beyond_rounding(steps: pd.DataFrame, setting: str) -> pd.DataFrame:
    """Return the checkpoints at which L2 and decay under `setting` are further apart than rounding allows: N steps'
    worth of one-step rounding, or ROUNDING_FACTOR times the rounding controls' envelope, whichever is larger (a
    ratio to controls amplified in the same process, so it holds wherever rounding is amplified differently)."""
    mine = steps[steps["optimizer"] == setting]
    return mine[mine["l2_vs_decay_max"] > mine["rounding_allowance"]]


def _steps(count: int) -> str:
    """Write a number of steps, '1 step' or '1,563 steps'."""
    return f"{count:,} step" + ("" if count == 1 else "s")


def _equivalence(row) -> str:
    """Say whether a setting's L2 − decoupled test accuracies are shown equivalent within the margin."""
    margin = f"±{row['margin'] * 100:g} pp"
    if row["tost_holm_p"] < stats.ALPHA:
        return f"equivalent within {margin} (TOST, Holm {wording.p_text(row['tost_holm_p'])})"
    return (f"equivalence within {margin} not shown (TOST, Holm {wording.p_text(row['tost_holm_p'])}; more seeds "
            "would narrow it)")


def verdict(weights: pd.DataFrame, steps: pd.DataFrame, accuracy: pd.DataFrame, grid: dict, epochs: int) -> str:
    """State from the measured differences, against the rounding control at every horizon, which optimizer makes
    L2 and decoupled decay the same method."""
    k = grid["l2"]
    parts, same = [], {}
    for setting in grid["optimizers"]:
        mine = steps[steps["optimizer"] == setting]
        first, last = mine.iloc[0], mine.iloc[-1]
        full = weights[(weights["optimizer"] == setting) & (weights["epochs"] == epochs)].iloc[0]
        acc = accuracy[(accuracy["optimizer"] == setting) & (accuracy["comparison"] == "L2 − decoupled")].iloc[0]
        beyond = beyond_rounding(steps, setting)
        same[setting] = beyond.empty
        shrink = (f"blank-pixel weights shrink by {full['l2_shrink_per_step']:.9f} per step under L2 (predicted "
                  + (f"{full['l2_predicted_shrink_per_step']:.9f})" if pd.notna(full["l2_predicted_shrink_per_step"])
                     else "by no closed form: Adam rescales the penalty's gradient)")
                  + f" and {full['wd_shrink_per_step']:.9f} under decay (predicted "
                  f"{full['wd_predicted_shrink_per_step']:.9f})")
        parts.append(
            f"{setting} (L2 k = {k:g}, decay wd = {decoupled_wd(grid, setting):g}): {first['l2_vs_decay_max']:.1e} of "
            f"the largest weight apart after {_steps(first['steps'])} and {last['l2_vs_decay_max']:.1e} after "
            f"{last['steps']:,} (the rounding controls' envelope: {first['control_envelope_max']:.1e} and "
            f"{last['control_envelope_max']:.1e}): "
            + (f"within rounding at all {len(mine)} horizons, the same method up to float32 rounding" if same[setting]
               else f"beyond rounding at {len(beyond)} of {len(mine)} horizons, first after "
                    f"{_steps(beyond['steps'].iloc[0])} "
                    f"({beyond['l2_vs_decay_max'].iloc[0] / beyond['rounding_allowance'].iloc[0]:.3g}x what "
                    "rounding allows): more than rounding")
            + f"; {shrink}; test accuracy L2 − decoupled "
            f"{wording.effect_text(acc['diff_mean'], acc['eq_ci_low'], acc['eq_ci_high'], digits=3)}, "
            f"{_equivalence(acc)}")
    names = [name for name, value in same.items() if value]
    conclusion = (f"L2 is decoupled weight decay for {' and '.join(names)} only" if names and len(names) < len(same)
                  else "L2 and decoupled decay are the same under every optimizer here" if names
                  else "No optimizer here makes L2 and decoupled decay the same up to rounding")
    return ("; ".join(parts) + f". {conclusion}: with momentum the penalty's gradient also enters the velocity (its "
            "shrink per step tends to 1 − ηλ/(1 − μ)), and Adam divides it by the gradient's running scale, while "
            "Keras' decay shrinks every weight by η·wd per step either way; that is why SGDW and AdamW decouple it. "
            f"Sameness is judged against rounding at every horizon (N steps' worth of one-step rounding, or "
            f"{ROUNDING_FACTOR}x the rounding controls' envelope, whichever is larger), never by a p-value of a small "
            "difference; accuracy is compared with an equivalence test.")


def body(weights: pd.DataFrame, steps: pd.DataFrame, accuracy: pd.DataFrame, grid: dict, dead: int,
         epochs: int) -> str:
    """Render the derivation, the tables and the figure."""
    step_rows = [[row.optimizer, f"{row.steps:,}", f"{row.l2_vs_decay_max:.3e}", f"{row.l2_vs_ulp_control_max:.3e}",
                  f"{row.l2_vs_reordered_max:.3e}", f"{row.decay_over_control:.3g}",
                  f"{row.rounding_allowance:.1e}", f"{row.l2_vs_decay_norm:.3e}",
                  f"{row.control_envelope_norm:.3e}"]
                 for row in steps.itertuples()]
    weight_rows = [[row.optimizer, row.epochs, f"{row.steps:,}", f"{row.max_relative_difference:.3e}",
                    f"{row.norm_relative_difference:.3e}", f"{row.l2_shrink_per_step:.9f}",
                    "–" if pd.isna(row.l2_predicted_shrink_per_step) else f"{row.l2_predicted_shrink_per_step:.9f}",
                    f"{row.wd_shrink_per_step:.9f}", f"{row.wd_predicted_shrink_per_step:.9f}",
                    f"{row.l2_remaining:.4f}", f"{row.wd_remaining:.4f}", f"{row.wd_predicted_remaining:.4f}"]
                   for row in weights.itertuples()]
    accuracy_rows = [[row.optimizer, row.comparison, row.pairs,
                      wording.effect_text(row.diff_mean, row.adj_ci_low, row.adj_ci_high, digits=3),
                      wording.p_text(row.holm_p),
                      _equivalence(row._asdict()) if row.comparison == "L2 − decoupled" else ""]
                     for row in accuracy.itertuples()]
    means = accuracy.drop_duplicates("optimizer")
    mean_rows = [[row["optimizer"], *(f"{row[f'{arm}_test_accuracy'] * 100:.2f}" for arm in ARMS)]
                 for _, row in means.iterrows()]
    k = grid["l2"]
    return f"""## Derivation and how it maps to Keras

For L = L0 + (λ/2m) Σ w², ∂L/∂w = ∂L0/∂w + (λ/m) w, so one plain SGD step is w ← (1 − ηλ/m) w − η ∂L0/∂w.
Keras' `L2(k)` adds k Σ w² to the loss: k = λ/2m, and its gradient adds 2k w. Keras' optimizer
`weight_decay=wd` applies w ← w − η·wd·w before the gradient step (kernels only here, like the penalty), so
wd = 2k = λ/m gives the same step under plain SGD. With momentum μ (Keras: v ← μv − ηg, w ← w + v) the
penalty's gradient 2k·w enters v and keeps acting through it: a weight with no data gradient shrinks in the long
run by the slow root of r² − (1 + μ − 2ηk) r + μ = 0, about 1 − 2ηk/(1 − μ) per step, while decay shrinks it by
1 − η·wd whatever μ is. Adam divides the penalty's gradient by its running scale, so no wd makes the two the same;
its decoupled arm uses wd = {grid['adam_wd']:g}, a strength at which decay visibly acts. This study uses k = {k:g}
and wd = {2 * k:g} for both SGD settings; both runs of a pair start from the same weights and see the same batches
in the same order.

Every pixel that is 0 in all training images ({dead} of 784) gives its first-layer weights no data gradient, so
those weights move by the decay alone: their per-step factor is measured as (w_N / w_0)^(1/N), the median over
those weights with |w_0| > 1e-3.

## Results

![Divergence against the rounding control, and L2 against decoupled weights](figure:divergence_and_weights.png)

### Step by step to the full horizon, against a rounding control (first seed)

Models trained in this process from one start on the run's batches, epoch after epoch: L2, decoupled decay,
and {1 + grid['reordered_controls']} rounding controls: L2 again from initial weights each moved by one float32 ulp, \
and L2 again
{grid['reordered_controls']} times with the images inside each batch in another order (the same batches and the same
mathematics, summed in another order: a different rounding at every step, as two equal methods have). Training
amplifies any rounding, at times abruptly: when one image's input to a ReLU unit crosses zero in one run and not
in the other, the two part at once, whichever pair it happens to. And two equal methods whose operations come in
another order (L2 adds the penalty's gradient to the data gradient; decay shrinks the weights in a step of its
own) round differently on every weight at every step, which the controls do not: without amplification those
roundings add up at most linearly, N·{ONE_STEP_ROUNDING:.1e} after N steps. So the pair is the same method up to
rounding when, at every horizon, it stays within the larger of that budget and {ROUNDING_FACTOR}x the controls'
envelope (the largest of their distances); a different method is far beyond both.

{wording.markdown_table(["optimizer", "steps", "max |Δw| / max |w|: L2 vs decay", "same: L2 vs 1-ulp control",
                        "same: L2 vs reordered (largest)", "ratio to the envelope", "rounding allows",
                        "‖Δw‖ / ‖w‖: L2 vs decay",
                        "same: controls' envelope"], step_rows)}

### The stored runs after N steps (first seed)

{wording.markdown_table(["optimizer", "epochs", "steps N", "max |Δw| / max |w|", "‖Δw‖ / ‖w‖",
                        "shrink per step, L2", "predicted", "shrink per step, decay", "predicted",
                        "blank-pixel |w_N/w_0|, L2", "same, decay", "predicted, decay"], weight_rows)}

### Test accuracy (paired by seed)

Mean test accuracy (%) per arm:

{wording.markdown_table(["optimizer", *ARMS], mean_rows)}

Paired differences; the intervals and p-values are Holm-corrected across all {len(accuracy)} comparisons, and the
equivalence tests across the {len(means)} L2 − decoupled ones:

{wording.markdown_table(["optimizer", "comparison", "pairs", "Δ test acc, pp [Holm CI]", "p (Holm)",
                        "equivalence"], accuracy_rows)}
"""


def figure(steps: pd.DataFrame, final: dict) -> Figure:
    """Draw the L2-vs-decay divergence and its rounding control against steps, and every weight of the L2 run
    against the decoupled run's, one panel per optimizer."""
    fig = Figure(figsize=(5.5 * (len(final) + 1), 5))
    panels = np.atleast_1d(fig.subplots(1, len(final) + 1))
    colours = plots.arm_colours(list(final))
    for setting, rows in steps.groupby("optimizer", sort=False):
        panels[0].plot(rows["steps"], rows["l2_vs_decay_max"], "o-", color=colours[setting],
                       label=f"{setting}: L2 vs decay")
        panels[0].plot(rows["steps"], rows["control_envelope_max"], "s:", color=colours[setting],
                       label=f"{setting}: rounding controls' envelope")
    budget = np.unique(steps["steps"])
    panels[0].plot(budget, budget * ONE_STEP_ROUNDING, "--", color="black", linewidth=0.8,
                   label="N steps of one-step rounding")
    panels[0].set(xscale="log", yscale="log", xlabel="steps", ylabel="max |Δw| / max |w|",
                  title="Apart by the method, or by rounding?")
    panels[0].set_ylim(top=panels[0].get_ylim()[1] * 1e4)  # room above the data for the legend
    for axes, (setting, (l2_model, wd_model)) in zip(panels[1:], final.items()):
        a = np.concatenate([w.ravel() for w in _kernels(l2_model)])
        b = np.concatenate([w.ravel() for w in _kernels(wd_model)])
        pick = np.random.default_rng(0).permutation(len(a))[:30_000]
        axes.scatter(b[pick], a[pick], s=1, alpha=0.3, color=colours[setting])
        low, high = min(a.min(), b.min()), max(a.max(), b.max())
        axes.plot([low, high], [low, high], color="black", linewidth=0.8, label="equal")
        axes.set(xlabel="weight, decoupled decay run", ylabel="weight, L2 penalty run",
                 title=f"{setting}: ‖Δw‖/‖w‖ = {np.linalg.norm(a - b) / np.linalg.norm(b):.2e}")
    return plots.finish_panels(fig, panels)
