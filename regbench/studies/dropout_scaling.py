"""Study dropout-scaling: activations, accuracy and calibration under dropout's training and inference rules, and
what makes classic and inverted dropout the same training.

Keras' Dropout is inverted dropout: kept units are scaled by 1/p in training (p = keep probability = 1 - rate)
and inference is the identity. Classic dropout (the 'classic-dropout' model variant) keeps units unscaled in
training and multiplies by p at inference; forgetting that factor is the mistake measured here.

Classic dropout followed by a kernel W_c computes what inverted dropout followed by W = p W_c computes, in training
and at inference. The gradient with respect to W_c is p times that with respect to W, so one plain SGD step of
size η moves W = p W_c by η p², not η: the two train alike only if W_c starts at W / p and takes steps of η / p²
(and the layers before see identical gradients). Adam ignores the gradient's scale, so under Adam classic dropout
is inverted dropout whose following kernels start p times as large and learn p times as fast. The variant
'classic-dropout-matched' uses each kernel after a dropout layer as stored / p, which is exactly that correction.
"""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from regbench import plots, stats, wording
from regbench.config import DEFAULT_LR
from regbench.studies.context import QUICK_CONFIG, Findings, Preset, StudyContext
from regbench.techniques import resolve_params
from regbench.train import batch_order, compile_model
from regbench.variants import ClassicDropout

FULL = Preset(config={"epochs": 10}, seeds=8,  # 8: a 2 pp cost of forgetting p stands out from seed noise (at 3
              # seeds sigmoid's -2.35 pp mean at rate 0.8 had a 95% interval of [-9.37, +4.67])
              grid={"rates": (0.2, 0.5, 0.8), "activations": ("relu", "sigmoid"), "mc_samples": 50,
                    "equivalence_rate": 0.8, "equivalence_optimizers": ("sgd", "adam"), "checkpoints": (1, 10, 100)})
QUICK = Preset(config=QUICK_CONFIG, seeds=2,
               grid={"rates": (0.5,), "activations": ("relu", "sigmoid"), "mc_samples": 5,
                     "equivalence_rate": 0.8, "equivalence_optimizers": ("sgd", "adam"), "checkpoints": (1, 5)})
SWEEPS = {"activation": "relu and sigmoid", "optimizer": "adam, and plain sgd for the equivalence",
          "lr": "each optimizer's default"}
NEEDS = {"architecture": ("mlp", "its classic-dropout-matched variant rescales dense kernels")}
BATCH = 2048  # images per forward call
ROUNDING_FACTOR = 10  # "the same up to rounding": within this many times the rounding control's distance
FORMULATIONS = {"inverted": "", "classic": "classic-dropout", "classic, matched": "classic-dropout-matched"}
ECE_BINS = 15


def _configs(context: StudyContext, rate: float, activation: str, optimizer: str, formulation: str) -> list:
    """Return one dropout run per seed of a formulation at `rate`, `activation` and `optimizer`."""
    return context.configs(technique="dropout", technique_params=resolve_params(("dropout",), {"rate": rate}),
                           variant=FORMULATIONS[formulation], activation=activation, optimizer=optimizer,
                           lr=DEFAULT_LR[optimizer])


def run(context: StudyContext) -> Findings:
    """Measure the inference rules of inverted and classic dropout per activation, rate and seed; then train the
    three formulations under plain SGD and Adam and compare them."""
    split, grid = context.split(), context.grid
    rows, configs = [], []
    for activation in grid["activations"]:
        for rate in grid["rates"]:
            inverted, classic = (_configs(context, rate, activation, "adam", name) for name in ("inverted", "classic"))
            configs += inverted + classic
            models = context.models(inverted + classic)
            for seed, inverted_model, classic_model in zip(context.seeds, models[:len(inverted)],
                                                           models[len(inverted):]):
                context.echo(f"measuring {activation} rate {rate:g} seed {seed}: activations and "
                             f"{grid['mc_samples']} Monte-Carlo passes per model")
                rows += measure(rate, seed, inverted_model, classic_model, split.x_test, split.y_test,
                                grid["mc_samples"], activation=activation)
    measurements = pd.DataFrame(rows)
    equivalence_configs = [config for optimizer in grid["equivalence_optimizers"] for name in FORMULATIONS
                           for config in _configs(context, grid["equivalence_rate"], "relu", optimizer, name)]
    equivalence = equivalence_table(context, equivalence_configs)
    context.echo("training inverted, classic, classic-matched dropout and a rounding control step by step")
    steps = step_table(context, equivalence_configs)
    runs = context.runs(configs + equivalence_configs).runs
    summary = summarize(measurements)
    return Findings(
        verdict=verdict(summary, equivalence, steps, grid),
        body=body(summary, equivalence, steps, grid),
        tables={"runs": runs, "measurements": measurements, "by_rate": summary, "formulations": equivalence,
                "formulations_by_step": steps},
        figures={"activations_and_accuracy": figure(summary)},
    )


def _forward(model: keras.Model, x: np.ndarray, training: bool) -> list[np.ndarray]:
    """Call `model` eagerly in batches; return each output as one numpy array."""
    parts = [model(x[i:i + BATCH], training=training) for i in range(0, len(x), BATCH)]
    parts = [part if isinstance(part, (list, tuple)) else [part] for part in parts]
    return [np.concatenate([keras.ops.convert_to_numpy(p[k]) for p in parts]) for k in range(len(parts[0]))]


def _dropout_means(model: keras.Model, x: np.ndarray, training: bool) -> list[float]:
    """Return the mean output of every dropout layer of `model` over `x`."""
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    probe = keras.Model(model.input, [layer.output for layer in layers])
    return [float(values.mean()) for values in _forward(probe, x, training)]


def _set_inference_scaling(model: keras.Model, on: bool) -> None:
    """Switch the classic model's test-time multiplication by p on or off (off: the forgotten factor)."""
    for layer in model.layers:
        if isinstance(layer, ClassicDropout):
            layer.scale_at_inference = on


def _scores(prefix: str, probabilities: np.ndarray, y: np.ndarray) -> dict:
    """Return accuracy, cross-entropy and expected calibration error of predicted probabilities, named by `prefix`."""
    picked = np.clip(probabilities[np.arange(len(y)), y], 1e-7, 1.0)  # clipped as Keras clips them
    return {f"{prefix}_test_accuracy": float(np.mean(probabilities.argmax(axis=1) == y)),
            f"{prefix}_test_crossentropy": float(-np.mean(np.log(picked))),
            f"{prefix}_test_ece": stats.expected_calibration_error(probabilities, y, ECE_BINS)}


def measure(rate: float, seed: int, inverted: keras.Model, classic: keras.Model, x: np.ndarray, y: np.ndarray,
            samples: int, activation: str = "relu") -> list[dict]:
    """Measure activation ratios per dropout layer, and accuracy and calibration under every inference rule."""
    inverted_train, inverted_infer = _dropout_means(inverted, x, True), _dropout_means(inverted, x, False)
    classic_train, classic_infer = _dropout_means(classic, x, True), _dropout_means(classic, x, False)
    _set_inference_scaling(classic, False)
    classic_forgot = _dropout_means(classic, x, False)
    forgot_probs = _forward(classic, x, False)[0]
    _set_inference_scaling(classic, True)
    inverted_probs, classic_probs = _forward(inverted, x, False)[0], _forward(classic, x, False)[0]
    inverted_mc = np.mean([_forward(inverted, x, True)[0] for _ in range(samples)], axis=0)
    classic_mc = np.mean([_forward(classic, x, True)[0] for _ in range(samples)], axis=0)
    common = {
        "activation": activation, "rate": rate, "keep": 1 - rate, "seed": seed,
        **_scores("inverted", inverted_probs, y), **_scores("inverted_mc", inverted_mc, y),
        **_scores("classic", classic_probs, y), **_scores("classic_forgot", forgot_probs, y),
        **_scores("classic_mc", classic_mc, y),
        "forgot_argmax_agreement": float(np.mean(forgot_probs.argmax(1) == classic_probs.argmax(1))),
        "inverted_mc_agreement": float(np.mean(inverted_mc.argmax(1) == inverted_probs.argmax(1))),
        "classic_mc_agreement": float(np.mean(classic_mc.argmax(1) == classic_probs.argmax(1))),
    }
    return [{**common, "layer": index + 1,
             "inverted_train_over_inference": inverted_train[index] / inverted_infer[index],
             "classic_train_over_inference": classic_train[index] / classic_infer[index],
             "classic_forgot_inference_over_train": classic_forgot[index] / classic_train[index]}
            for index in range(len(inverted_train))]


def summarize(measurements: pd.DataFrame) -> pd.DataFrame:
    """Return per activation, rate and layer the mean measurements, and per activation and rate what forgetting p
    costs in accuracy (paired by seed, Holm-corrected across the activations and rates)."""
    first = measurements[measurements["layer"] == 1].set_index("seed")
    costs = {(activation, rate): mine["classic_forgot_test_accuracy"] - mine["classic_test_accuracy"]
             for (activation, rate), mine in first.groupby(["activation", "rate"])}
    family = stats.effect_family(costs)
    family[["activation", "rate"]] = pd.DataFrame(family.pop("effect").tolist(), index=family.index)
    means = measurements.drop(columns="seed").groupby(["activation", "rate", "layer"]).mean().reset_index()
    means["seeds"] = measurements.groupby(["activation", "rate", "layer"]).size().to_numpy()
    cost = family[["activation", "rate", "diff_mean", "adj_ci_low", "adj_ci_high", "holm_p"]].rename(
        columns={"diff_mean": "forgetting_cost", "adj_ci_low": "cost_ci_low", "adj_ci_high": "cost_ci_high",
                 "holm_p": "cost_holm_p"})
    return means.merge(cost, on=["activation", "rate"])


def _weights(model: keras.Model) -> list[np.ndarray]:
    """Return every kernel as the layer uses it (a rescaled kernel times its scale) and every bias."""
    values = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            values += [keras.ops.convert_to_numpy(layer.kernel) * getattr(layer, "scale", 1.0),
                       keras.ops.convert_to_numpy(layer.bias)]
    return values


def equivalence_table(context: StudyContext, configs: list) -> pd.DataFrame:
    """Compare each classic formulation with inverted dropout trained from the same start on the same batches:
    the weights in the inverted convention (classic kernels times p), the test predictions, and the paired
    test-accuracy difference (Holm-corrected across the comparisons)."""
    models = dict(zip(configs, context.models(configs)))
    x, y = context.split().x_test, context.split().y_test
    rows, differences = [], {}
    for optimizer in context.grid["equivalence_optimizers"]:
        mine = [config for config in configs if config.optimizer == optimizer]
        by = {(c.variant, c.seed): models[c] for c in mine}
        keep = 1 - context.grid["equivalence_rate"]
        for name in ("classic", "classic, matched"):
            variant = FORMULATIONS[name]
            gaps, agreements, accuracy = [], [], {}
            for seed in context.seeds:
                inverted, other = by["", seed], by[variant, seed]
                own = _weights(inverted)
                converted = [w * keep if index % 2 == 0 and index > 0 else w  # kernels after a dropout layer, times p
                             for index, w in enumerate(_weights(other))]
                gaps.append(max(float(np.abs(a - b).max()) for a, b in zip(own, converted))
                            / max(float(np.abs(a).max()) for a in own))
                left, right = _forward(inverted, x, False)[0], _forward(other, x, False)[0]
                agreements.append(float(np.mean(left.argmax(1) == right.argmax(1))))
                accuracy[seed] = float(np.mean(right.argmax(1) == y)) - float(np.mean(left.argmax(1) == y))
            differences[optimizer, name] = pd.Series(accuracy)
            rows.append({"optimizer": optimizer, "formulation": name, "max_weight_difference": float(np.max(gaps)),
                         "prediction_agreement": float(np.min(agreements))})
    family = stats.effect_family(differences)
    family[["optimizer", "formulation"]] = pd.DataFrame(family.pop("effect").tolist(), index=family.index)
    return pd.DataFrame(rows).merge(family, on=["optimizer", "formulation"])


def _inverted_convention(model: keras.Model, keep: float, classic: bool) -> list[np.ndarray]:
    """Return a model's weights as inverted dropout would hold them: a classic model's kernels after a dropout layer
    (every kernel but the first) times p."""
    return [w * keep if classic and index % 2 == 0 and index > 0 else w for index, w in enumerate(_weights(model))]


def _apart(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Return max |a − b| / max |a| over every weight."""
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b)) / max(float(np.abs(x).max()) for x in a)


def step_table(context: StudyContext, configs: list) -> pd.DataFrame:
    """Train inverted, classic and classic-matched dropout, and inverted dropout from initial weights moved by one
    float32 ulp (the rounding control), from one start on the same batches in this process; compare them with
    inverted dropout in its convention at every checkpoint."""
    split, batch, seed = context.split(), context.base.batch_size, context.seeds[0]
    keep = 1 - context.grid["equivalence_rate"]
    order = batch_order(seed, 0, len(split.y_train))
    rows = []
    for optimizer in context.grid["equivalence_optimizers"]:
        mine = {c.variant: c for c in configs if c.optimizer == optimizer and c.seed == seed}
        models = {name: compile_model(mine[variant])[0] for name, variant in FORMULATIONS.items()}
        models["control"] = compile_model(mine[""])[0]
        models["control"].set_weights([np.nextafter(w, np.float32(np.inf)) for w in models["control"].get_weights()])
        done = 0
        for steps in [n for n in context.grid["checkpoints"] if n * batch <= len(order)]:
            part = order[done * batch:steps * batch]
            for model in models.values():
                model.fit(split.x_train[part], split.y_train[part], batch_size=batch, epochs=1, shuffle=False,
                          verbose=0)
            done = steps
            inverted = _weights(models["inverted"])
            rows.append({"optimizer": optimizer, "steps": steps,
                         **{f"{name.replace(', ', '_')}_apart": _apart(
                             inverted, _inverted_convention(models[name], keep, name != "control"))
                            for name in ("classic", "classic, matched", "control")}})
    table = pd.DataFrame(rows)
    table["matched_over_control"] = table["classic_matched_apart"] / table["control_apart"]
    return table


def verdict(summary: pd.DataFrame, equivalence: pd.DataFrame, steps: pd.DataFrame, grid: dict) -> str:
    """State the measured ratios, what forgetting p costs per activation (accuracy and calibration), and which
    formulation trains like inverted dropout."""
    first = summary[summary["layer"] == 1]
    relu = first[first["activation"] == "relu"]
    ratios = ", ".join(f"{row.inverted_train_over_inference:.3f} at rate {row.rate:g}" for row in relu.itertuples())
    forgot = "; ".join(
        f"{row.activation} at rate {row.rate:g}: activations ×{row.classic_forgot_inference_over_train:.2f} "
        f"(1/p = {1 / row.keep:.2f}), top class kept on {row.forgot_argmax_agreement:.1%} of test images, accuracy "
        f"{row.classic_test_accuracy * 100:.2f}% → {row.classic_forgot_test_accuracy * 100:.2f}% "
        f"({wording.effect_text(row.forgetting_cost, row.cost_ci_low, row.cost_ci_high)}"
        f"{', significant' if row.cost_holm_p < stats.ALPHA else ''}), cross-entropy "
        f"{row.classic_test_crossentropy:.3f} → {row.classic_forgot_test_crossentropy:.3f}, ECE "
        f"{row.classic_test_ece:.3f} → {row.classic_forgot_test_ece:.3f}" for row in first.itertuples())
    costly = first[(first["cost_holm_p"] < stats.ALPHA) & (first["forgetting_cost"] < 0)]

    def cost(activation: str) -> str:
        rates = costly.loc[costly["activation"] == activation, "rate"]
        if len(rates):
            return "a significant accuracy cost at rate " + ", ".join(f"{rate:g}" for rate in rates)
        worst = first[first["activation"] == activation].sort_values("forgetting_cost").iloc[0]
        if not worst["forgetting_cost"] < 0:
            return f"no accuracy cost (the mean change is at or above 0 at every rate, {worst['seeds']} seeds)"
        return (f"no accuracy cost detected with {worst['seeds']} seeds, the largest mean "
                f"{wording.effect_text(worst['forgetting_cost'], worst['cost_ci_low'], worst['cost_ci_high'])} at "
                f"rate {worst['rate']:g}, an interval that cannot tell a cost of that size from none")

    costs = ", ".join(f"{activation}: {cost(activation)}" for activation in grid["activations"])
    changed = first.pivot_table(index="rate", columns="activation", values="forgot_argmax_agreement")
    if {"relu", "sigmoid"} <= set(changed):
        fewer = bool((changed["relu"] >= changed["sigmoid"]).all())
        homogeneity = ("relu keeps the top class at least as often as sigmoid at every rate, as positive homogeneity "
                       "predicts (scaling a relu network's hidden activations scales its logits, up to the biases), "
                       "while sigmoid units are not homogeneous" if fewer else
                       "relu does not keep the top class at least as often as sigmoid at every rate, against what "
                       "positive homogeneity (up to the biases) suggests: see the table")
    else:
        homogeneity = "relu against sigmoid is not measured on this grid"
    overconfident = first[first["classic_forgot_test_crossentropy"] > first["classic_test_crossentropy"]]
    calibration = (f"the cross-entropy rises in {len(overconfident)} of {len(first)} cells: the softmax of the "
                   "inflated logits is overconfident, which accuracy alone does not show")
    formulations = "; ".join(
        f"{row.formulation} under {row.optimizer}: weights {row.max_weight_difference:.1e} of the largest apart, "
        f"predictions agree on {row.prediction_agreement:.2%}, test accuracy − inverted "
        f"{wording.effect_text(row.diff_mean, row.adj_ci_low, row.adj_ci_high, digits=3)}"
        for row in equivalence.itertuples())
    same = bool((steps["matched_over_control"] <= ROUNDING_FACTOR).all())
    apart = "; ".join(f"{optimizer}: matched {rows['classic_matched_apart'].iloc[-1]:.1e}, plain classic "
                      f"{rows['classic_apart'].iloc[-1]:.1e}, rounding control {rows['control_apart'].iloc[-1]:.1e} "
                      f"after {rows['steps'].iloc[-1]} steps"
                      for optimizer, rows in steps.groupby("optimizer", sort=False))
    return (
        f"Inverted dropout keeps the mean activation after the first dropout layer equal between training and "
        f"inference (relu: {ratios}). Classic dropout evaluated without its factor p: {forgot}. Forgetting p: "
        f"{costs}; {homogeneity}; {calibration}. At rate "
        f"{grid['equivalence_rate']:g}: {formulations}. "
        + f"Step by step from one start ({apart}): "
        + ("classic dropout with each following kernel used as stored / p stays within "
           f"{ROUNDING_FACTOR}x of the rounding control at every checkpoint under every optimizer, so it is inverted "
           "dropout up to rounding, while plain classic dropout is not: the two differ only by that kernel's starting "
           "scale (×p) and step size (×p² under SGD, ×p under Adam), as derived above. Over a whole run any rounding "
           "is amplified, so the stored runs' weights part further (table), the matched pair's no more than rounding "
           "does."
           if same else f"the matched formulation leaves the rounding control's {ROUNDING_FACTOR}x at some checkpoint: "
           "the derivation is not borne out by these runs (see the table).")
    )


def body(summary: pd.DataFrame, equivalence: pd.DataFrame, steps: pd.DataFrame, grid: dict) -> str:
    """Render the derivation, the figure and the tables."""
    ratio_rows = [[row.activation, f"{row.rate:g}", f"{row.keep:g}", row.layer,
                   f"{row.inverted_train_over_inference:.4f}", f"{row.classic_train_over_inference:.4f}",
                   f"{row.classic_forgot_inference_over_train:.4f}", f"{1 / row.keep:.4f}"]
                  for row in summary.itertuples()]
    first = summary[summary["layer"] == 1]
    score_rows = [[row.activation, f"{row.rate:g}", row.seeds,
                   *(f"{getattr(row, f'{rule}_test_accuracy') * 100:.2f} / "
                     f"{getattr(row, f'{rule}_test_crossentropy'):.3f} / {getattr(row, f'{rule}_test_ece'):.3f}"
                     for rule in ("inverted", "inverted_mc", "classic", "classic_forgot", "classic_mc")),
                   f"{row.forgot_argmax_agreement:.2%}",
                   wording.effect_text(row.forgetting_cost, row.cost_ci_low, row.cost_ci_high),
                   f"{row.inverted_mc_agreement:.2%}"] for row in first.itertuples()]
    step_rows = [[row.optimizer, row.steps, f"{row.classic_apart:.3e}", f"{row.classic_matched_apart:.3e}",
                  f"{row.control_apart:.3e}", f"{row.matched_over_control:.3g}"] for row in steps.itertuples()]
    formulation_rows = [[row.optimizer, row.formulation, f"{row.max_weight_difference:.3e}",
                         f"{row.prediction_agreement:.2%}", row.pairs,
                         wording.effect_text(row.diff_mean, row.adj_ci_low, row.adj_ci_high, digits=3)]
                        for row in equivalence.itertuples()]
    return f"""## Results

![Activation ratios and test accuracy against the drop rate](figure:activations_and_accuracy.png)

For each activation, rate and seed two models are trained under Adam from the same initial weights on the same
batches: Keras' inverted Dropout, and classic dropout (mask without rescale in training, ×p at inference).
Activations are the mean output of each dropout layer over the 10,000 test images (training mode: one fresh
mask per image), i.e. what the next layer receives; means over seeds.

### Mean activation after each dropout layer

{wording.markdown_table(["activation", "rate", "keep p", "dropout layer", "inverted: training / inference",
                        "classic: training / inference (×p)", "classic, p forgotten: inference / training",
                        "1/p"], ratio_rows)}

### Accuracy and calibration by inference rule

Each cell: test accuracy % / cross-entropy / expected calibration error ({ECE_BINS} equal-width bins of the top
probability). Monte-Carlo (MC): the softmax averaged over {grid['mc_samples']} training-mode passes. "Top class
kept": share of test images whose predicted class is the same with and without the factor p. The cost of
forgetting p is paired by seed and Holm-corrected across the {len(first)} activation and rate cells.

{wording.markdown_table(["activation", "rate", "seeds", "inverted", "inverted, MC", "classic ×p",
                        "classic, p forgotten", "classic, MC", "top class kept", "cost of forgetting p, pp [Holm CI]",
                        "MC agrees with inverted"], score_rows)}

### Classic against inverted dropout: what makes them the same training

At rate {grid['equivalence_rate']:g} (relu), inverted, classic and classic-matched dropout (each kernel after a
dropout layer used as stored / p) are trained from the same start on the same batches under plain SGD and Adam.
Weights are compared in the inverted convention (a classic kernel times p): equal weights mean the same function.
The accuracy differences are paired by seed and Holm-corrected across the {len(equivalence)} comparisons.

Step by step from one start (the first seed's initial weights, masks and batches), against a rounding control \
(inverted dropout from initial weights moved by one float32 ulp): max |ΔW| / max |W| from inverted
dropout, in its convention.

{wording.markdown_table(["optimizer", "steps", "classic", "classic, matched", "rounding control", "matched / control"],
                       step_rows)}

Whole runs, where training amplifies any rounding:

{wording.markdown_table(["optimizer", "formulation", "max |ΔW| / max |W| vs inverted",
                        "predictions agree (min over seeds)", "pairs", "test acc − inverted, pp [Holm CI]"],
                       formulation_rows)}
"""


def figure(summary: pd.DataFrame) -> Figure:
    """Draw activation ratios, and test accuracy and cross-entropy per inference rule, against the drop rate."""
    fig = Figure(figsize=(18, 5))
    left, middle, right = fig.subplots(1, 3)
    first = summary[summary["layer"] == 1]
    styles = {"relu": "-", "sigmoid": "--", "tanh": ":"}
    for (activation, layer), rows in summary.groupby(["activation", "layer"]):
        if layer != 1:
            continue
        left.plot(rows["rate"], rows["inverted_train_over_inference"], "o" + styles[activation], color="#1f77b4",
                  label=f"inverted: training / inference ({activation})")
        left.plot(rows["rate"], rows["classic_forgot_inference_over_train"], "s" + styles[activation],
                  color="#d62728", label=f"classic, p forgotten: inference / training ({activation})")
    rates = np.linspace(summary["rate"].min(), summary["rate"].max(), 50)
    left.plot(rates, 1 / (1 - rates), color="black", linewidth=0.8, linestyle="--", label="1/p")
    left.set(xlabel="drop rate", ylabel="ratio of mean activations (first dropout layer)", yscale="log",
             title="Activations")
    rules = [("inverted", "inverted", "#1f77b4"), ("classic", "classic ×p", "#2ca02c"),
             ("classic_forgot", "classic, p forgotten", "#d62728")]
    for activation, rows in first.groupby("activation"):
        for rule, label, colour in rules:
            middle.plot(rows["rate"], rows[f"{rule}_test_accuracy"] * 100, "o" + styles[activation], color=colour,
                        label=f"{label} ({activation})")
            right.plot(rows["rate"], rows[f"{rule}_test_crossentropy"], "o" + styles[activation], color=colour,
                       label=f"{label} ({activation})")
    middle.set(xlabel="drop rate", ylabel="test accuracy (%)", title="Accuracy by inference rule")
    right.set(xlabel="drop rate", ylabel="test cross-entropy", yscale="log", title="Calibration by inference rule")
    return plots.finish_panels(fig, [left, middle, right])
