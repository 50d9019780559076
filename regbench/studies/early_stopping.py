"""Study early-stopping: train long, then ask where each stopping rule would stop and what its restored weights
score against training on and against the best-validation checkpoint of the same run."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from regbench import plots, stats, wording
from regbench.studies.context import QUICK_CONFIG, Findings, Preset, StudyContext
from regbench.techniques import BASELINE, resolve_params

FULL = Preset(config={"epochs": 50}, seeds=5,
              grid={"patiences": (1, 3, 5, 10), "gl_alphas": (1.0, 2.0, 5.0), "keras_check_patience": 3})
QUICK = Preset(config={**QUICK_CONFIG, "epochs": 6, "lr": 0.01}, seeds=2,  # fast enough to stop early
               grid={"patiences": (1, 2), "gl_alphas": (1.0,), "keras_check_patience": 1})
SWEEPS: dict[str, str] = {}  # the options this study sets itself: none
MONITORS = {  # what a rule watches -> (epoch column, the error it minimizes from that column's values)
    "val cross-entropy": ("val_crossentropy", lambda values: values),
    "val accuracy": ("val_accuracy", lambda values: 1.0 - values),  # Prechelt's GL is defined on an error
}
REFERENCES = {"end": "training all epochs", "checkpoint": "the best-validation checkpoint of the same run"}


def run(context: StudyContext) -> Findings:
    """Train the baseline long (measuring the test set every epoch) and replay each rule on its validation curve."""
    long_runs = context.configs(technique=BASELINE, technique_params=(), variant="test-curve")
    patience = context.grid["keras_check_patience"]
    keras_runs = context.configs(technique="early-stopping",
                                 technique_params=resolve_params(("early-stopping",), {"patience": patience}))
    tables = context.runs(long_runs + keras_runs)
    curves = tables.epochs[tables.epochs["run_id"].isin({c.run_id for c in long_runs})]
    stops = stop_table(curves, rules_of(context.grid))
    outcomes = outcome_table(stops)
    keras = keras_check(tables.runs, stops, f"patience {patience} on val cross-entropy")
    summary = summarize_stops(stops)
    return Findings(
        verdict=verdict(summary, outcomes, keras, context.base.epochs),
        body=body(summary, outcomes, keras, context.base.epochs),
        tables={"runs": tables.runs, "epochs": curves, "stops": stops, "stop_summary": summary,
                "distinct_comparisons": outcomes},
        figures={"stopping_points": figure(curves, summary)},
        choices=stops[["seed", "rule", "stop_epoch", "restored_epoch", "checkpoint_epoch"]],
    )


def rules_of(grid: dict) -> list[tuple[str, str, Callable[[np.ndarray], int]]]:
    """Return every (rule name, monitor, stop function of the monitored error) the grid names."""
    rules: list[tuple[str, str, Callable[[np.ndarray], int]]] = []
    for monitor in MONITORS:
        rules += [(f"patience {p} on {monitor}", monitor, functools.partial(stop_by_patience, patience=p))
                  for p in grid["patiences"]]
        rules += [(f"GL > {a:g} on {monitor}", monitor, functools.partial(stop_by_generalization_loss, alpha=a))
                  for a in grid["gl_alphas"]]
    return rules


def stop_by_patience(error: np.ndarray, patience: int) -> int:
    """Return the 1-based epoch at which Keras' EarlyStopping (min_delta 0) stops on `error`, or the last epoch."""
    best, wait = math.inf, 0
    for epoch, value in enumerate(error):
        wait += 1
        if value < best:
            best, wait = value, 0
        elif wait >= patience and epoch > 0:
            return epoch + 1
    return len(error)


def stop_by_generalization_loss(error: np.ndarray, alpha: float) -> int:
    """Return the first 1-based epoch where Prechelt's GL = 100 (E_va / E_opt - 1) exceeds `alpha`, or the last."""
    lowest = np.minimum.accumulate(error)
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero error so far: no loss yet
        loss = np.where(lowest > 0, 100 * (error / lowest - 1), np.where(error > 0, np.inf, 0.0))
    above = np.nonzero(loss > alpha)[0]
    return int(above[0]) + 1 if len(above) else len(error)


def stop_table(curves: pd.DataFrame, rules: list) -> pd.DataFrame:
    """Return one row per seed and rule: stop epoch, restored epoch (Keras' restore_best_weights: the lowest error
    up to the stop, first on a tie) and the test accuracy there, at the end and at the run's best checkpoint."""
    rows = []
    for seed, curve in curves.sort_values("epoch").groupby("seed"):
        test = curve["test_accuracy"].to_numpy()
        for rule, monitor, stop_at in rules:
            column, to_error = MONITORS[monitor]
            error = to_error(curve[column].to_numpy())
            stop, checkpoint = stop_at(error), int(np.argmin(error))
            restored = int(np.argmin(error[:stop]))
            rows.append({"seed": seed, "rule": rule, "monitor": monitor, "stop_epoch": stop,
                         "restored_epoch": restored + 1, "epochs_saved": len(error) - stop,
                         "test_accuracy_restored": test[restored], "test_accuracy_at_end": test[-1],
                         "checkpoint_epoch": checkpoint + 1, "test_accuracy_at_checkpoint": test[checkpoint]})
    return pd.DataFrame(rows)


def summarize_stops(stops: pd.DataFrame) -> pd.DataFrame:
    """Return per rule: stop and restored epochs, epochs saved and the mean test accuracies (no tests here: the
    tests are of distinct outcomes, see outcome_table)."""
    return stops.groupby(["rule", "monitor"], sort=False).agg(
        seeds=("seed", "size"), stop_epoch_mean=("stop_epoch", "mean"), stop_epoch_min=("stop_epoch", "min"),
        stop_epoch_max=("stop_epoch", "max"), restored_epoch_mean=("restored_epoch", "mean"),
        epochs_saved_mean=("epochs_saved", "mean"), test_accuracy_restored=("test_accuracy_restored", "mean"),
        test_accuracy_at_end=("test_accuracy_at_end", "mean"),
        test_accuracy_at_checkpoint=("test_accuracy_at_checkpoint", "mean")).reset_index()


def outcome_table(stops: pd.DataFrame) -> pd.DataFrame:
    """Return the distinct comparisons the rules make, tested and Holm-corrected across them all.

    Rules that restore the same epoch on every seed give the same weights, so against training on they are one
    comparison, and against the checkpoint one per checkpoint they share; a rule that restores its checkpoint on
    every seed compares identical weights, which is no test and is left out of the family.
    """
    comparisons: dict[tuple, list[str]] = {}  # (reference, restored epochs, reference epochs) -> the rules that make it
    for rule, mine in stops.groupby("rule", sort=False):
        restored = tuple(mine["restored_epoch"])
        for reference, epochs in (("end", tuple(mine["stop_epoch"] + mine["epochs_saved"])),
                                  ("checkpoint", tuple(mine["checkpoint_epoch"]))):
            if restored != epochs:
                comparisons.setdefault((reference, restored, epochs), []).append(rule)
    differences, rows = {}, []
    for number, ((reference, restored, epochs), rules) in enumerate(comparisons.items(), start=1):
        mine = stops[stops["rule"] == rules[0]].set_index("seed")
        column = "test_accuracy_at_end" if reference == "end" else "test_accuracy_at_checkpoint"
        differences[number] = mine["test_accuracy_restored"] - mine[column]
        rows.append({"comparison": number, "reference": reference, "rules": " = ".join(rules),
                     "restored_epochs": " ".join(map(str, restored)), "reference_epochs": " ".join(map(str, epochs))})
    if not rows:
        return pd.DataFrame(columns=["comparison", "reference", "rules", "restored_epochs", "reference_epochs"])
    family = stats.effect_family(differences).rename(columns={"effect": "comparison"})
    return pd.DataFrame(rows).merge(family, on="comparison")


def keras_check(runs: pd.DataFrame, stops: pd.DataFrame, rule: str) -> pd.DataFrame:
    """Compare the replayed rule with real Keras EarlyStopping runs on the same seeds."""
    keras = runs[runs["technique"] == "early-stopping"].set_index("seed")
    replayed = stops[stops["rule"] == rule].set_index("seed")
    return pd.DataFrame({"seed": replayed.index, "replayed_stop": replayed["stop_epoch"].to_numpy(),
                         "keras_stop": keras.loc[replayed.index, "epochs_run"].to_numpy(),
                         "replayed_test_accuracy": replayed["test_accuracy_restored"].to_numpy(),
                         "keras_test_accuracy": keras.loc[replayed.index, "test_accuracy"].to_numpy()})


def _direction(row) -> str:
    """Say how a comparison came out after Holm's correction."""
    if row.holm_p < stats.ALPHA:
        return "better" if row.diff_mean > 0 else "worse"
    return "no detectable difference"


def verdict(summary: pd.DataFrame, outcomes: pd.DataFrame, keras: pd.DataFrame, epochs: int) -> str:
    """State where the rules stop, how many distinct comparisons they make, and how those come out, from the
    numbers."""
    per_monitor = "; ".join(
        f"on {monitor} they stop at epoch {mine['stop_epoch_mean'].min():.1f}–{mine['stop_epoch_mean'].max():.1f} on "
        f"average (saving {mine['epochs_saved_mean'].min() / epochs:.0%}–{mine['epochs_saved_mean'].max() / epochs:.0%}"
        f" of {epochs} epochs)" for monitor, mine in summary.groupby("monitor", sort=False))
    listing = "; ".join(
        f"{row.rules} vs {REFERENCES[row.reference]}: "
        f"{wording.effect_text(row.diff_mean, row.adj_ci_low, row.adj_ci_high)} ({_direction(row)})"
        for row in outcomes.itertuples())
    ends, checkpoints = (outcomes[outcomes["reference"] == name] for name in REFERENCES)
    better = ends[(ends["holm_p"] < stats.ALPHA) & (ends["diff_mean"] > 0)]
    worse = checkpoints[(checkpoints["holm_p"] < stats.ALPHA) & (checkpoints["diff_mean"] < 0)]
    agree = (keras["replayed_stop"] == keras["keras_stop"]).all()
    return (
        f"{len(summary)} rules: {per_monitor}. Rules that restore the same weights on every seed make one "
        f"comparison, and a rule that restores its run's checkpoint makes none against it, so the family holds "
        f"{len(outcomes)} distinct comparisons (Holm-corrected): {listing or 'none'}. "
        + (f"{len(better)} of {len(ends)} distinct outcomes score significantly better than training all {epochs} "
           "epochs" if len(better) else f"No outcome scores significantly better than training all {epochs} epochs")
        + (f"; {len(worse)} score significantly worse than keeping the run's best-validation checkpoint, which needs "
           "no stopping rule, only the full run" if len(worse) else
           "; none scores detectably worse than keeping the run's best-validation checkpoint"
           + _cost_left_open(outcomes))
        + ". Real Keras EarlyStopping runs stop at "
        + ("the same epochs as the replay." if agree else "other epochs than the replay (see the table).")
        + " This design watches one training setup (a constant learning rate); with a decaying schedule the "
        "validation curve, and so every rule's stop, would differ; 'no detectable difference' is not 'no difference'"
        " (see the intervals)."
    )


def _cost_left_open(outcomes: pd.DataFrame) -> str:
    """Say how large a cost of stopping early the comparisons' Holm intervals leave open, where they leave one."""
    lowest = outcomes["adj_ci_low"].min() if len(outcomes) else math.nan
    if not lowest < 0:
        return ""
    return (f", though these seeds leave a cost of up to {-lowest * 100:.2f} pp open (the lowest Holm bound): "
            "stopping early saves the epochs at a cost not told apart from none, which is not no cost")


def body(summary: pd.DataFrame, outcomes: pd.DataFrame, keras: pd.DataFrame, epochs: int) -> str:
    """Render the figure and the tables."""
    rows = [[row.rule, row.seeds, f"{row.stop_epoch_mean:.1f} ({row.stop_epoch_min}–{row.stop_epoch_max})",
             f"{row.restored_epoch_mean:.1f}", f"{row.epochs_saved_mean:.1f}",
             f"{row.test_accuracy_restored * 100:.2f}", f"{row.test_accuracy_at_checkpoint * 100:.2f}",
             f"{row.test_accuracy_at_end * 100:.2f}"] for row in summary.itertuples()]
    outcome_rows = [[row.comparison, row.rules, row.restored_epochs, REFERENCES[row.reference], row.reference_epochs,
                     row.pairs,
                     wording.effect_text(row.diff_mean, row.t_ci_low, row.t_ci_high),
                     wording.effect_text(row.diff_mean, row.adj_ci_low, row.adj_ci_high), wording.p_text(row.holm_p)]
                    for row in outcomes.itertuples()]
    check_rows = [[row.seed, row.replayed_stop, row.keras_stop, f"{row.replayed_test_accuracy * 100:.2f}",
                   f"{row.keras_test_accuracy * 100:.2f}"] for row in keras.itertuples()]
    return f"""## Results

![Validation curves and test accuracy per epoch with each rule's stop](figure:stopping_points.png)

The baseline is trained for {epochs} epochs; validation cross-entropy and accuracy (which the rules see) and test
accuracy (which they never see; measured after every epoch for this study only) are recorded per epoch. Each
rule is replayed on one validation curve: *patience p* is Keras' EarlyStopping (stop after p epochs without a
new best); *GL > α* is Prechelt's generalization loss, GL(t) = 100 (E(t) / E_opt(t) − 1) with E the validation
cross-entropy or the validation error (1 − accuracy), stopping at the first epoch where it exceeds α.
"Restored" is the best epoch up to the stop (Keras' restore_best_weights); the "checkpoint" is the best epoch
of the whole run by the same measure, which any run can keep without stopping.

### Every rule

{wording.markdown_table(["rule", "seeds", "stop epoch (range)", "restored epoch", "epochs saved",
                        "test acc % restored", "at the run's checkpoint", f"at epoch {epochs}"], rows)}

### Distinct outcomes, tested

Rules that restore the same epoch on every seed give the same weights, so they make one comparison, not several;
a rule whose restored epoch is its run's checkpoint on every seed compares identical weights, which is no test.
The {len(outcomes)} distinct comparisons are paired by seed; Holm's step-down correction runs over all of them,
and its interval is at the level Holm tested each.

{wording.markdown_table(["comparison", "rules", "restored epoch per seed", "against", "its epoch per seed", "pairs",
                        "restored − reference, pp [95% CI]", "[Holm CI]", "p (Holm)"], outcome_rows)}

### The replay against real Keras EarlyStopping

The same seeds trained with `--technique early-stopping` (Keras' callback on validation cross-entropy,
restore_best_weights):

{wording.markdown_table(["seed", "replayed stop", "Keras stop", "replayed restored test acc %",
                        "Keras run test acc %"], check_rows)}
"""


def figure(curves: pd.DataFrame, summary: pd.DataFrame) -> Figure:
    """Draw mean validation cross-entropy, validation error and test accuracy per epoch, with each rule's mean stop."""
    mean = curves.groupby("epoch")[["val_crossentropy", "val_accuracy", "test_accuracy"]].mean()
    fig = Figure(figsize=(18, 5))
    panels = fig.subplots(1, 3)
    columns = [("val_crossentropy", 1, "validation cross-entropy"), ("val_accuracy", 100, "validation accuracy (%)"),
               ("test_accuracy", 100, "test accuracy (%)")]
    for axes, (column, scale, label) in zip(panels, columns):
        for _, curve in curves.groupby("seed"):
            axes.plot(curve["epoch"], curve[column] * scale, color="#999999", linewidth=0.6)
        axes.plot(mean.index, mean[column] * scale, color="black", linewidth=2, label="mean over seeds")
        axes.set(xlabel="epoch", ylabel=label)
    colours = plots.arm_colours(list(summary["rule"]))
    for row in summary.itertuples():
        watched = 0 if row.monitor == "val cross-entropy" else 1
        for axes in (panels[watched], panels[2]):
            axes.axvline(row.stop_epoch_mean, color=colours[row.rule], linestyle="--" if watched == 0 else ":",
                         linewidth=1.2, label=f"{row.rule} stops")
    panels[0].set_title("What the cross-entropy rules see")
    panels[1].set_title("What the accuracy rules see")
    panels[2].set_title("What no rule sees")
    return plots.finish_panels(fig, panels)
