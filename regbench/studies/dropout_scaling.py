"""Study dropout-scaling: activations and accuracy under dropout's training and inference rules.

Keras' Dropout is inverted dropout: kept units are scaled by 1/p in training (p = keep probability = 1 - rate)
and inference is the identity. Classic dropout (the 'classic-dropout' model variant) keeps units unscaled in
training and multiplies by p at inference; forgetting that factor is the mistake measured here.
"""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from regbench import report
from regbench.models import ClassicDropout
from regbench.studies.common import QUICK_CONFIG, Findings, Preset, StudyContext, finish, interval
from regbench.techniques import resolve_params

FULL = Preset(config={"epochs": 10}, seeds=3, grid={"rates": (0.2, 0.5, 0.8), "mc_samples": 50})
QUICK = Preset(config=QUICK_CONFIG, seeds=2,
               grid={"rates": (0.5,), "mc_samples": 5})
SWEEPS = {}
BATCH = 2048  # images per forward call


def run(context: StudyContext) -> Findings:
    """Train inverted and classic dropout models per rate and seed, then measure both on the test set."""
    split = context.split()
    rows, configs = [], []
    for rate in context.grid["rates"]:
        params = resolve_params(("dropout",), {"rate": rate})
        inverted = context.configs(technique="dropout", technique_params=params)
        classic = context.configs(technique="dropout", technique_params=params, variant="classic-dropout")
        configs += inverted + classic
        models = context.models(inverted + classic)
        for seed, inverted_model, classic_model in zip(context.seeds, models[:len(inverted)], models[len(inverted):]):
            context.echo(f"measuring rate {rate:g} seed {seed}: activations and {context.grid['mc_samples']} "
                         "Monte-Carlo passes per model")
            rows += measure(rate, seed, inverted_model, classic_model, split.x_test, split.y_test,
                            context.grid["mc_samples"])
    measurements = pd.DataFrame(rows)
    runs = context.runs(configs).runs
    summary = summarize(measurements)
    return Findings(
        verdict=verdict(summary, measurements, context.grid["mc_samples"]),
        body=body(summary, context.grid["mc_samples"]),
        tables={"runs": runs, "measurements": measurements, "by_rate": summary},
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


def _accuracy(probabilities: np.ndarray, y: np.ndarray) -> float:
    """Return the share of images whose most probable class is the label."""
    return float(np.mean(probabilities.argmax(axis=1) == y))


def _crossentropy(probabilities: np.ndarray, y: np.ndarray) -> float:
    """Return the mean cross-entropy of the predicted probabilities (clipped as Keras clips them)."""
    return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(y)), y], 1e-7, 1.0))))


def measure(rate: float, seed: int, inverted: keras.Model, classic: keras.Model, x: np.ndarray, y: np.ndarray,
            samples: int) -> list[dict]:
    """Measure activation ratios per dropout layer and the test accuracies of every inference rule."""
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
        "rate": rate, "keep": 1 - rate, "seed": seed,
        "inverted_test_accuracy": _accuracy(inverted_probs, y), "inverted_mc_test_accuracy": _accuracy(inverted_mc, y),
        "classic_test_accuracy": _accuracy(classic_probs, y), "classic_forgot_test_accuracy": _accuracy(forgot_probs, y),
        "classic_test_crossentropy": _crossentropy(classic_probs, y),
        "classic_forgot_test_crossentropy": _crossentropy(forgot_probs, y),
        "classic_mc_test_accuracy": _accuracy(classic_mc, y),
        "inverted_mc_agreement": float(np.mean(inverted_mc.argmax(1) == inverted_probs.argmax(1))),
        "classic_mc_agreement": float(np.mean(classic_mc.argmax(1) == classic_probs.argmax(1))),
    }
    return [{**common, "layer": index + 1,
             "inverted_train_over_inference": inverted_train[index] / inverted_infer[index],
             "classic_train_over_inference": classic_train[index] / classic_infer[index],
             "classic_forgot_inference_over_train": classic_forgot[index] / classic_train[index]}
            for index in range(len(inverted_train))]


def summarize(measurements: pd.DataFrame) -> pd.DataFrame:
    """Return per rate and layer the mean ratios, and per rate the accuracies with the loss from forgetting p."""
    rows = []
    for (rate, layer), mine in measurements.groupby(["rate", "layer"]):
        lost, low, high = interval(mine["classic_test_accuracy"] - mine["classic_forgot_test_accuracy"])
        rows.append({"rate": rate, "keep": 1 - rate, "layer": layer, "seeds": len(mine),
                     **mine.filter(regex="_over_|_accuracy$|_crossentropy$|_agreement$").mean().to_dict(),
                     "accuracy_lost_forgetting_p": lost, "lost_ci_low": low, "lost_ci_high": high})
    return pd.DataFrame(rows)


def verdict(summary: pd.DataFrame, measurements: pd.DataFrame, samples: int) -> str:
    """State the measured ratios and accuracy losses per rate."""
    first = summary[summary["layer"] == 1]
    ratios = ", ".join(f"{row.inverted_train_over_inference:.3f} at rate {row.rate:g}" for row in first.itertuples())
    forgot = "; ".join(
        f"rate {row.rate:g}: activations ×{row.classic_forgot_inference_over_train:.2f} (1/p = {1 / row.keep:.2f}), "
        f"test accuracy {row.classic_test_accuracy * 100:.2f}% → {row.classic_forgot_test_accuracy * 100:.2f}% "
        f"({-row.accuracy_lost_forgetting_p * 100:+.2f} pp [{-row.lost_ci_high * 100:+.2f}, "
        f"{-row.lost_ci_low * 100:+.2f}]), test cross-entropy {row.classic_test_crossentropy:.3f} → "
        f"{row.classic_forgot_test_crossentropy:.3f}" for row in first.itertuples())
    agreement = measurements[["inverted_mc_agreement", "classic_mc_agreement"]].to_numpy()
    holds = bool(np.allclose(first["inverted_train_over_inference"], 1, rtol=0.05)
                 and np.allclose(first["classic_forgot_inference_over_train"], 1 / first["keep"], rtol=0.05))
    mc_gain = (measurements["inverted_mc_test_accuracy"] - measurements["inverted_test_accuracy"]).groupby(
        measurements["rate"]).mean()
    return (
        f"Inverted dropout (Keras) keeps the mean activation after the first dropout layer equal between training "
        f"and inference (training / inference = {ratios}). Classic dropout evaluated without its test-time factor "
        f"p: {forgot}. With the factor, the weight-scaled prediction matches the average of {samples} "
        f"Monte-Carlo dropout passes on {agreement.min():.1%} to {agreement.max():.1%} of test images (both "
        f"formulations); Monte-Carlo averaging changes test accuracy by "
        + ", ".join(f"{gain * 100:+.2f} pp at rate {rate:g}" for rate, gain in mc_gain.items())
        + f". The claim {'holds' if holds else 'does not hold as stated'}: "
        + ("training and inference activations differ by the factor the scaling corrects (within 5%)."
           if holds else "the measured ratios depart from 1 and 1/p by more than 5% (see the tables).")
    )


def body(summary: pd.DataFrame, samples: int) -> str:
    """Render the figure and the tables."""
    ratio_rows = [[f"{row.rate:g}", f"{row.keep:g}", row.layer, f"{row.inverted_train_over_inference:.4f}",
                   f"{row.classic_train_over_inference:.4f}", f"{row.classic_forgot_inference_over_train:.4f}",
                   f"{1 / row.keep:.4f}"] for row in summary.itertuples()]
    first = summary[summary["layer"] == 1]
    accuracy_rows = [[f"{row.rate:g}", row.seeds, f"{row.inverted_test_accuracy * 100:.2f}",
                      f"{row.inverted_mc_test_accuracy * 100:.2f}", f"{row.classic_test_accuracy * 100:.2f}",
                      f"{row.classic_forgot_test_accuracy * 100:.2f}",
                      f"{row.classic_test_crossentropy:.4f} → {row.classic_forgot_test_crossentropy:.4f}",
                      f"{row.accuracy_lost_forgetting_p * 100:+.2f} [{row.lost_ci_low * 100:+.2f}, "
                      f"{row.lost_ci_high * 100:+.2f}]", f"{row.classic_mc_test_accuracy * 100:.2f}",
                      f"{row.inverted_mc_agreement:.2%}", f"{row.classic_mc_agreement:.2%}"]
                     for row in first.itertuples()]
    return f"""## Results

![Activation ratios and test accuracy against the drop rate](figure:activations_and_accuracy.png)

For each rate and seed two models are trained from the same initial weights on the same batches: Keras'
inverted Dropout, and classic dropout (mask without rescale in training, ×p at inference). Activations are the
mean output of each dropout layer over the 10,000 test images (training mode: one fresh mask per image), i.e.
what the next layer receives; means over seeds.

### Mean activation after each dropout layer

{report.markdown_table(["rate", "keep p", "dropout layer", "inverted: training / inference",
                        "classic: training / inference (×p)", "classic, p forgotten: inference / training",
                        "1/p"], ratio_rows)}

### Test accuracy (%) by inference rule

Monte-Carlo (MC): the softmax averaged over {samples} training-mode passes. Agreement: share of test images
where the MC average and the single weight-scaled pass predict the same class.

{report.markdown_table(["rate", "seeds", "inverted", "inverted, MC", "classic ×p", "classic, p forgotten",
                        "classic test cross-entropy: ×p → p forgotten", "cost of forgetting p, pp [95% CI]", "classic, MC", "agreement inverted",
                        "agreement classic"], accuracy_rows)}
"""


def figure(summary: pd.DataFrame) -> Figure:
    """Draw activation ratios and test accuracies against the drop rate."""
    fig = Figure(figsize=(13, 5))
    left, right = fig.subplots(1, 2)
    for layer, rows in summary.groupby("layer"):
        style = "-" if layer == 1 else ":"
        left.plot(rows["rate"], rows["inverted_train_over_inference"], "o" + style, color="#1f77b4",
                  label=f"inverted: training / inference (layer {layer})")
        left.plot(rows["rate"], rows["classic_forgot_inference_over_train"], "s" + style, color="#d62728",
                  label=f"classic, p forgotten: inference / training (layer {layer})")
    rates = np.linspace(summary["rate"].min(), summary["rate"].max(), 50)
    left.plot(rates, 1 / (1 - rates), color="black", linewidth=0.8, linestyle="--", label="1/p")
    left.set(xlabel="drop rate", ylabel="ratio of mean activations", yscale="log", title="Activations")
    first = summary[summary["layer"] == 1]
    for column, label, colour in [("inverted_test_accuracy", "inverted", "#1f77b4"),
                                  ("inverted_mc_test_accuracy", "inverted, Monte-Carlo", "#17becf"),
                                  ("classic_test_accuracy", "classic ×p", "#2ca02c"),
                                  ("classic_forgot_test_accuracy", "classic, p forgotten", "#d62728")]:
        right.plot(first["rate"], first[column] * 100, "o-", color=colour, label=label)
    right.set(xlabel="drop rate", ylabel="test accuracy (%)", title="Test accuracy by inference rule")
    return finish(fig, [left, right])
