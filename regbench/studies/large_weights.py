"""Study large-weights: a few input features carry extreme weights; which of L1, L2 and dropout tames them?

The situation is made, not hoped for: a few planted pixels give away the label in every training image and are
noise in test images (data.plant_features); validation images keep them blank, so a choice made there cannot see
how the test set punishes the shortcut. A model that leans on the shortcut grows large outgoing weights on those
inputs and loses on test. The strengths are swept on tuning seeds and each technique's setting is matched on their
validation accuracy (MATCHING); its effects are measured on the evaluation seeds.
"""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from regbench import plots, stats, wording
from regbench.config import DEFAULT_TUNE_SEEDS
from regbench.data import planted_pixels
from regbench.studies.context import QUICK_CONFIG, Findings, Preset, StudyContext, arm_of, label_arms
from regbench.techniques import BASELINE
from regbench.train import NEAR_ZERO

FULL = Preset(
    # one planted pixel per class; of the pilots' designs (benchmarks/LARGE_WEIGHTS.md) the one whose planted pixels'
    # outgoing norms come closest to 10x the median live pixel's (8.9-10.1x; 3.1-3.2x at 2,000 images, 30 epochs)
    config={"train_size": 50_000, "epochs": 40, "lr": 3e-3, "planted": 10},
    seeds=5,
    grid={"settings": {"l1": ("l1", (1e-9, 3e-9, 1e-8, 3e-8, 1e-7, 3e-7, 1e-6)),  # 1e-6 already cost 46 pp
                       "l2": ("l2", (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)),
                       "dropout": ("rate", (0.2, 0.35, 0.5, 0.65, 0.8, 0.9))},
          "outlier_factor": 10},
)
QUICK = Preset(config={**QUICK_CONFIG, "planted": 10}, seeds=2,
               grid={"settings": {"l1": ("l1", (1e-4, 1e-2)), "dropout": ("rate", (0.5,))}, "outlier_factor": 10})
SWEEPS: dict[str, str] = {}  # the options this study sets itself: none
NEEDS = {"architecture": ("mlp", "it reads each input pixel's outgoing weights in the first dense layer"),
         "dataset": ("mnist", "it plants pixels in a row that is blank in every MNIST image")}
MATCHING_COST = 0.01  # the validation accuracy (1 pp) a matched setting may cost against the baseline
MATCHING = ("each technique's setting is its strongest whose mean validation accuracy on the tuning seeds is at most "
            f"{MATCHING_COST * 100:g} pp below the baseline's there, so that every technique is taken as far as the "
            "same accuracy cost allows; a technique with no such setting is not matched")
RATIOS = {  # measured per run -> what the report calls it; compared as paired log ratios
    "planted_over_median": "planted pixels' outgoing ‖w‖₂ / median live pixel's",
    "planted_weight_over_median": f"largest planted |w| / median live |w| of those ≥ {NEAR_ZERO:g}",
    "largest_unit_over_median": f"largest hidden unit's incoming ‖w‖₂ / its layer's median of those ≥ {NEAR_ZERO:g}",
}
DIFFERENCES = {  # compared as paired differences
    "reliance": "reliance on the planted pixels (test acc without them − with them as noise)",
    "sparsity": f"share of live weights with |w| < {NEAR_ZERO:g}",
    "test_accuracy": "test accuracy",
}


def run(context: StudyContext) -> Findings:
    """Sweep every setting on the tuning seeds and match each technique's on their validation accuracy; train the
    baseline and the matched settings on the evaluation seeds and compare their weights, reliance and accuracy."""
    settings = context.grid["settings"]
    split = context.split()
    live = np.any(split.x_train.reshape(len(split.x_train), -1) > 0, axis=0)  # pixels some training image lights
    sweep = context.sweep_configs(settings, DEFAULT_TUNE_SEEDS)
    swept = pd.DataFrame([{"run_id": config.run_id, **weight_measures(model, live, context.base.planted)}
                          for config, model in zip(sweep, context.models(sweep))])  # trains and keeps the weights
    tuning = label_arms(context.runs(sweep).runs).merge(swept, on="run_id")
    validation = stats.successful(tuning).groupby("technique")["val_accuracy"].mean()
    chosen = matched(validation, settings)
    configs = [config for config in context.sweep_configs(settings) if arm_of(config) in (BASELINE, *chosen.values())]
    measured = pd.DataFrame([{"run_id": config.run_id, **weight_measures(model, live, context.base.planted),
                              "reliance": reliance(model, split, context.base.planted)}
                             for config, model in zip(configs, context.models(configs))])
    runs = label_arms(context.runs(configs).runs).merge(measured, on="run_id")
    effects = effect_table(runs, chosen)
    return Findings(
        verdict=verdict(runs, effects, chosen, validation, context),
        body=body(runs, tuning, effects, chosen, context),
        tables={"runs": runs, "tuning_runs": tuning, "effects": effects},
        figures={"planted_weights": figure(tuning, settings, chosen)},
        choices=pd.DataFrame([{"technique": technique, "arm": arm, "tuning_val_accuracy": validation[arm]}
                              for technique, arm in chosen.items()]),
    )


def matched(validation: pd.Series, settings: dict) -> dict[str, str]:
    """Return the arm MATCHING takes for each technique that has one, from the tuning seeds' mean validation accuracy
    by arm (labels as label_arms writes them; the baseline 'none'). Evaluation seeds and test numbers play no part."""
    floor = validation[BASELINE] - MATCHING_COST
    chosen = {}
    for technique in settings:
        affordable = [arm for arm in validation.index if arm.split(" ")[0] == technique and validation[arm] >= floor]
        if affordable:
            chosen[technique] = max(affordable, key=lambda arm: _strength(arm, settings))
    return chosen


def _strength(arm: str, settings: dict) -> float:
    """Return the swept parameter's value in an arm label such as 'l1 l1=0.0001'."""
    technique = arm.split(" ")[0]
    name = settings[technique][0]
    return next(float(part.split("=")[1]) for part in arm.split(" ")[1:] if part.startswith(f"{name}="))


def weight_measures(model: keras.Model, live: np.ndarray, planted: int) -> dict:
    """Measure the planted pixels' outgoing weight norms against the other live pixels', the largest hidden unit
    against its layer's median, and the sparsity of the live weights (weights only: no data is read)."""
    kernels = [keras.ops.convert_to_numpy(layer.kernel) for layer in model.layers
               if isinstance(layer, keras.layers.Dense)]
    row, columns = planted_pixels(planted)
    index = np.arange(28 * 28).reshape(28, 28)[row, columns]
    others = live.copy()
    others[index] = False
    pixel_norms = np.linalg.norm(kernels[0], axis=1)
    unit_norms = [np.linalg.norm(kernel, axis=0) for kernel in kernels[:-1]]  # hidden layers: each unit's incoming
    # weights, against the median of its layer's units not near zero (a penalty leaves dead units at 1e-30); NaN
    # where no unit of a layer is left
    unit_ratios = [norms.max() / np.median(norms[norms >= NEAR_ZERO]) if (norms >= NEAR_ZERO).any() else np.nan
                   for norms in unit_norms]
    others_weights = np.abs(kernels[0][others]).ravel()
    active = others_weights[others_weights >= NEAR_ZERO]  # a penalty drives unused weights to ~0 (1e-30 and less):
    # against their median, any weight is astronomically large
    live_weights = np.concatenate([kernels[0][live].ravel(), *(kernel.ravel() for kernel in kernels[1:])])
    return {"planted_over_median": float(np.median(pixel_norms[index]) / np.median(pixel_norms[others])),
            "planted_largest_over_median": float(pixel_norms[index].max() / np.median(pixel_norms[others])),
            "planted_weight_over_median": float(np.abs(kernels[0][index]).max() / np.median(active)),
            "largest_unit_over_median": float(np.max(unit_ratios)),  # NaN if a layer is undefined
            "sparsity": float(np.mean(np.abs(live_weights) < NEAR_ZERO))}


def reliance(model: keras.Model, split, planted: int) -> float:
    """Return the test accuracy with the planted pixels blank minus with them lit as noise (test images: an
    evaluation measure, never read by a choice)."""
    row, columns = planted_pixels(planted)
    without = split.x_test.copy()
    without[:, row, columns] = 0.0
    return _accuracy(model, without, split.y_test) - _accuracy(model, split.x_test, split.y_test)


def _accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Return the share of images whose most probable class is the label."""
    return float(np.mean(model.predict(x, batch_size=2048, verbose=0).argmax(axis=1) == y))


def effect_table(runs: pd.DataFrame, chosen: dict[str, str]) -> pd.DataFrame:
    """Return per chosen setting and measure its paired effect on the baseline (ratios as log ratios, shown as
    geometric-mean factors), Holm-corrected across the whole table."""
    logged = runs.assign(**{f"log_{name}": np.log(runs[name]) for name in RATIOS})
    differences = {}
    for technique, arm in chosen.items():
        for name in RATIOS:
            differences[technique, arm, name] = stats.paired_differences(logged, f"log_{name}", arm)
        for name in DIFFERENCES:
            differences[technique, arm, name] = stats.paired_differences(runs, name, arm)
    family = stats.effect_family(differences)
    family[["technique", "arm", "measure"]] = pd.DataFrame(family.pop("effect").tolist(), index=family.index)
    return family


def _effect_text(row, measure: str) -> str:
    """Write a measure's effect: a factor for ratios, percentage points for the rest, with its Holm interval."""
    if measure in RATIOS:
        return (f"×{np.exp(row['diff_mean']):.2f} [{np.exp(row['adj_ci_low']):.2f}, "
                f"{np.exp(row['adj_ci_high']):.2f}]")
    return wording.effect_text(row["diff_mean"], row["adj_ci_low"], row["adj_ci_high"])


def _significant(row, lower: bool) -> bool:
    """Say whether an effect is significant after Holm, in the direction asked."""
    return bool(row["holm_p"] < stats.ALPHA and (row["diff_mean"] < 0) == lower)


def verdict(runs: pd.DataFrame, effects: pd.DataFrame, chosen: dict, validation: pd.Series,
            context: StudyContext) -> str:
    """Say whether the situation arose, then which chosen technique tames the planted weights, cuts the reliance,
    sparsifies and what it does to test accuracy, from the numbers."""
    ok = stats.successful(runs)
    baseline = ok[ok["technique"] == BASELINE]
    factor = context.grid["outlier_factor"]
    ratio, weight = baseline["planted_over_median"], baseline["planted_weight_over_median"]
    norms = f"{ratio.min():.1f}–{ratio.max():.1f}x the median live pixel's norm"
    weights = (f"their largest single weight {weight.min():.0f}–{weight.max():.0f}x the median live weight not near "
               "zero")
    if (ratio >= factor).all():
        situation = (f"The situation arises: in every baseline run the {context.base.planted} planted pixels' "
                     f"outgoing weights have {norms} (≥ {factor}x), {weights}")
    elif (weight >= factor).all():
        situation = (f"The situation arises in single weights, not in whole weight vectors: the planted pixels' "
                     f"outgoing weights have {norms} (below the {factor}x that would make them outlier inputs), but "
                     f"{weights} (≥ {factor}x in every baseline run)")
    else:
        situation = (f"The situation does not arise: the planted pixels' outgoing weights have {norms} and {weights}, "
                     f"below {factor}x in some baseline run")
    situation += (f"; the baseline loses {baseline['reliance'].mean() * 100:.2f} pp of test accuracy to the planted "
                  "noise")
    by = effects.set_index(["technique", "measure"])
    parts = []
    for technique, arm in chosen.items():
        listing = ", ".join(f"{name.replace('_', ' ')} {_effect_text(by.loc[(technique, name)], name)}"
                            for name in [*RATIOS, *DIFFERENCES])
        arms = sorted((label for label in validation.index if label.split(" ")[0] == technique),
                      key=lambda label: _strength(label, context.grid["settings"]))
        edge = " (the strongest setting tested: a stronger one might cost no more)" if arm == arms[-1] else ""
        parts.append(f"{arm}{edge}, validation {validation[arm] * 100:.2f}%: {listing}")
    unmatched = [f"{t} (its best {validation[[a for a in validation.index if a.split(' ')[0] == t]].max() * 100:.2f}%)"
                 for t in context.grid["settings"] if t not in chosen]
    tamed = [t for t in chosen if _significant(by.loc[(t, "planted_over_median")], lower=True)]
    raised = [t for t in chosen if _significant(by.loc[(t, "planted_over_median")], lower=False)]
    relieved = [t for t in chosen if _significant(by.loc[(t, "reliance")], lower=True)]
    sparser = [t for t in chosen if _significant(by.loc[(t, "sparsity")], lower=False)]
    best = (min(tamed, key=lambda t: by.loc[(t, "planted_over_median"), "diff_mean"]) if tamed else None)
    return (
        f"{situation}. Matched on the validation accuracy of tuning seeds "
        f"{', '.join(map(str, DEFAULT_TUNE_SEEDS))} (validation images keep the planted pixels blank, so the match "
        f"cannot see the test set's noise; baseline {validation[BASELINE] * 100:.2f}%), then measured on the "
        f"evaluation seeds against the baseline (paired by seed, Holm-corrected across {len(effects)} "
        f"comparisons): " + "; ".join(parts) + ". "
        + (f"No setting of {', '.join(unmatched)} stays within {MATCHING_COST * 100:g} pp of the baseline's validation "
           "accuracy, so it is not matched. " if unmatched else "")
        + (f"{best} tames the planted weights most (their ratio to the median ×"
           f"{np.exp(by.loc[(best, 'planted_over_median'), 'diff_mean']):.2f}); " if best else
           "No chosen setting lowers the planted weights' ratio significantly; ")
        + (f"{', '.join(raised)} raise{'s' if len(raised) == 1 else ''} it significantly: the planted pixels stand "
           "out more, not less; " if raised else "")
        + (f"the reliance falls significantly under {', '.join(relieved)}; " if relieved else
           "no chosen setting lowers the reliance significantly; ")
        + (f"{', '.join(sparser)} sparsif{'ies' if len(sparser) == 1 else 'y'} the live weights." if sparser else
           "none sparsifies the live weights significantly.")
        + (" Hidden-layer dropout raising the reliance runs against the textbook's account that dropout keeps units "
           "from leaning on a few inputs; it drops hidden units, not the planted input itself (input_rate 0), and "
           "what would test the account is input dropout (dropout's input_rate) matched the same way."
           if "dropout" in chosen and _significant(by.loc[("dropout", "reliance")], lower=False) else "")
        + " One planted shortcut, one model and data size: other outliers (a few hidden units grown large without a "
        "shortcut) may respond differently."
    )


def body(runs: pd.DataFrame, tuning: pd.DataFrame, effects: pd.DataFrame, chosen: dict,
         context: StudyContext) -> str:
    """Render the figure and the tables."""
    weights = [*RATIOS, "planted_largest_over_median", "sparsity"]
    sweep = stats.successful(tuning).groupby("technique", sort=False)[["val_accuracy", *weights]].mean()
    sweep_rows = [[arm + (" **(matched)**" if arm in chosen.values() else ""),
                   f"{m['val_accuracy'] * 100:.2f}", f"{m['planted_over_median']:.2f}",
                   f"{m['planted_largest_over_median']:.2f}", f"{m['planted_weight_over_median']:.1f}",
                   f"{m['largest_unit_over_median']:.2f}", f"{m['sparsity']:.1%}"] for arm, m in sweep.iterrows()]
    ok = stats.successful(runs)
    means = ok.groupby("technique", sort=False)[["val_accuracy", "test_accuracy", *weights, "reliance"]].mean()
    arm_rows = [[arm, int((ok["technique"] == arm).sum()), f"{m['val_accuracy'] * 100:.2f}",
                 f"{m['test_accuracy'] * 100:.2f}", f"{m['planted_over_median']:.2f}",
                 f"{m['planted_weight_over_median']:.1f}", f"{m['reliance'] * 100:.2f}", f"{m['sparsity']:.1%}"]
                for arm, m in means.iterrows()]
    effect_rows = [[row.arm, {**RATIOS, **DIFFERENCES}[row.measure], row.pairs,
                    _effect_text(row._asdict(), row.measure), wording.p_text(row.holm_p)]
                   for row in effects.itertuples()]
    row, columns = planted_pixels(context.base.planted)
    return f"""## Results

![Planted weights and validation accuracy against strength, tuning seeds](figure:planted_weights.png)

{context.base.planted} planted pixels (row {row}, columns {columns.start}–{columns.stop - 1}, blank in every MNIST
image): in each training image the pixel of its label's class is lit; in test images a random one is; validation
images keep them blank. Per run: the planted pixels' outgoing weight norm in the first layer (median over them,
and the largest) against the median over the other live pixels (pixels some training image lights: always-blank
pixels carry only their initial weights and are left out); the largest planted single weight against the median
live weight not near zero (|w| ≥ {NEAR_ZERO:g}: a penalty sends unused weights to 1e-30 and below); the largest
hidden unit's incoming norm against its own layer's median over the units not near zero; the share of near-zero
weights among the live ones; and, on the evaluation seeds only, the reliance: test accuracy with the planted
pixels blank minus with them as noise.

The design (all 50,000 training images, 40 epochs at a constant 3e-3) is the one of the pilots in
benchmarks/LARGE_WEIGHTS.md whose planted pixels' outgoing norms come closest to 10x the median live pixel's.

Matching rule: {MATCHING}. Every setting trains on the tuning seeds {', '.join(map(str, DEFAULT_TUNE_SEEDS))};
the baseline and the matched settings then train on the evaluation seeds
{', '.join(map(str, sorted(set(runs['seed']))))}, whose numbers the match never reads.

### Every setting, tuning seeds (means; no test number is read)

{wording.markdown_table(["arm", "val acc %", "planted / median", "largest planted / median",
                        "largest planted |w| / median |w|", "largest unit / median", "near-zero"], sweep_rows)}

### The matched settings and the baseline, evaluation seeds (means)

{wording.markdown_table(["arm", "runs", "val acc %", "test acc %", "planted / median",
                        "largest planted |w| / median |w|", "reliance (pp)", "near-zero"], arm_rows)}

### The matched settings against the baseline

Paired by seed; ratios as the geometric mean of treated / baseline. Holm-corrected across the
{len(effects)} comparisons, each interval at the level Holm tested it.

{wording.markdown_table(["arm", "measure", "pairs", "effect [Holm CI]", "p (Holm)"], effect_rows)}
"""


def figure(tuning: pd.DataFrame, settings: dict, chosen: dict) -> Figure:
    """Draw, on the tuning seeds, the planted weights' ratios and validation accuracy against strength, one line
    per technique, the matched settings circled."""
    ok = stats.successful(tuning)
    baseline = ok[ok["technique"] == BASELINE]
    colours = plots.arm_colours([BASELINE, *settings])
    fig = Figure(figsize=(16, 4.5))
    panels = fig.subplots(1, 3)
    measures = [("planted_over_median", 1, "planted / median live pixel ‖w‖₂", "log"),
                ("planted_weight_over_median", 1, "largest planted |w| / median live |w| not near 0", "log"),
                ("val_accuracy", 100, "validation accuracy (%), tuning seeds", "linear")]
    for axes, (name, scale, label, yscale) in zip(panels, measures):
        for technique in settings:
            arms = sorted((arm for arm in dict.fromkeys(ok["technique"]) if arm.split(" ")[0] == technique),
                          key=lambda arm: _strength(arm, settings))
            means = [ok.loc[ok["technique"] == arm, name].mean() * scale for arm in arms]
            axes.plot(range(len(arms)), means, "o-", color=colours[technique], label=technique)
            if technique in chosen:
                pick = arms.index(chosen[technique])
                axes.plot(pick, means[pick], "o", markersize=13, markerfacecolor="none", color="black")
        axes.axhline(baseline[name].mean() * scale, color=colours[BASELINE], linestyle="--", label="baseline")
        axes.set(xlabel="strength step (weakest to strongest; see the table)", ylabel=label, yscale=yscale,
                 title=label)
    return plots.finish_panels(fig, panels)
