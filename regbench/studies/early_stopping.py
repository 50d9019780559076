"""Study early-stopping: train long, then ask where each stopping rule would stop and what that costs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from regbench import report
from regbench.studies.common import QUICK_CONFIG, Findings, Preset, StudyContext, finish, interval
from regbench.techniques import BASELINE, resolve_params

FULL = Preset(config={"epochs": 50}, seeds=5,
              grid={"patiences": (1, 3, 5, 10), "gl_alphas": (1.0, 2.0, 5.0), "keras_check_patience": 3})
QUICK = Preset(config={**QUICK_CONFIG, "epochs": 6, "lr": 0.01}, seeds=2,  # fast enough to stop early
               grid={"patiences": (1, 2), "gl_alphas": (1.0,), "keras_check_patience": 1})
SWEEPS = {}


def run(context: StudyContext) -> Findings:
    """Train the baseline long (measuring the test set every epoch) and replay each rule on its validation curve."""
    long_runs = context.configs(technique=BASELINE, technique_params=(), variant="test-curve")
    patience = context.grid["keras_check_patience"]
    keras_runs = context.configs(technique="early-stopping",
                                 technique_params=resolve_params(("early-stopping",), {"patience": patience}))
    tables = context.runs(long_runs + keras_runs)
    epochs = tables.epochs
    long_ids = {c.run_id for c in long_runs}
    curves = epochs[epochs["run_id"].isin(long_ids)]
    rules = [(f"patience {p}", lambda val, p=p: stop_by_patience(val, p)) for p in context.grid["patiences"]]
    rules += [(f"GL > {a:g}", lambda val, a=a: stop_by_generalization_loss(val, a)) for a in context.grid["gl_alphas"]]
    stops = stop_table(curves, rules)
    keras = keras_check(tables.runs, stops, f"patience {patience}")
    summary = summarize_stops(stops)
    return Findings(
        verdict=verdict(summary, keras, context.base.epochs),
        body=body(summary, keras, context.base.epochs),
        tables={"runs": tables.runs, "epochs": curves, "stops": stops, "stop_summary": summary},
        figures={"stopping_points": figure(curves, summary)},
    )


def stop_by_patience(val: np.ndarray, patience: int) -> int:
    """Return the 1-based epoch at which Keras' EarlyStopping (min_delta 0) stops, or the last epoch."""
    best, wait = math.inf, 0
    for epoch, value in enumerate(val):
        wait += 1
        if value < best:
            best, wait = value, 0
        elif wait >= patience and epoch > 0:
            return epoch + 1
    return len(val)


def stop_by_generalization_loss(val: np.ndarray, alpha: float) -> int:
    """Return the first 1-based epoch where Prechelt's GL = 100 (E_va / E_opt - 1) exceeds `alpha`."""
    lowest = np.minimum.accumulate(val)
    above = np.nonzero(100 * (val / lowest - 1) > alpha)[0]
    return int(above[0]) + 1 if len(above) else len(val)


def stop_table(curves: pd.DataFrame, rules: list) -> pd.DataFrame:
    """Return one row per seed and rule: stop epoch, restored best epoch and test accuracies there."""
    rows = []
    for seed, curve in curves.sort_values("epoch").groupby("seed"):
        val, test = curve["val_crossentropy"].to_numpy(), curve["test_accuracy"].to_numpy()
        overall_best = int(np.argmin(val))
        for rule, stop_at in rules:
            stop = stop_at(val)
            restored = int(np.argmin(val[:stop]))
            rows.append({"seed": seed, "rule": rule, "stop_epoch": stop, "restored_epoch": restored + 1,
                         "epochs_saved": len(val) - stop, "test_accuracy_at_stop": test[stop - 1],
                         "test_accuracy_restored": test[restored], "test_accuracy_at_best_val": test[overall_best],
                         "test_accuracy_at_end": test[-1], "best_val_epoch": overall_best + 1})
    return pd.DataFrame(rows)


def summarize_stops(stops: pd.DataFrame) -> pd.DataFrame:
    """Return per rule: mean stop epoch, epochs saved, and restored-minus-end test accuracy with its CI."""
    rows = []
    for rule, mine in stops.groupby("rule", sort=False):
        gain, low, high = interval(mine["test_accuracy_restored"] - mine["test_accuracy_at_end"])
        rows.append({"rule": rule, "seeds": len(mine), "stop_epoch_mean": mine["stop_epoch"].mean(),
                     "stop_epoch_min": mine["stop_epoch"].min(), "stop_epoch_max": mine["stop_epoch"].max(),
                     "epochs_saved_mean": mine["epochs_saved"].mean(),
                     "test_accuracy_at_stop": mine["test_accuracy_at_stop"].mean(),
                     "test_accuracy_restored": mine["test_accuracy_restored"].mean(),
                     "test_accuracy_at_best_val": mine["test_accuracy_at_best_val"].mean(),
                     "test_accuracy_at_end": mine["test_accuracy_at_end"].mean(),
                     "restored_minus_end": gain, "restored_minus_end_ci_low": low, "restored_minus_end_ci_high": high})
    return pd.DataFrame(rows)


def keras_check(runs: pd.DataFrame, stops: pd.DataFrame, rule: str) -> pd.DataFrame:
    """Compare the replayed rule with real Keras EarlyStopping runs on the same seeds."""
    keras = runs[runs["technique"] == "early-stopping"].set_index("seed")
    replayed = stops[stops["rule"] == rule].set_index("seed")
    return pd.DataFrame({"seed": replayed.index, "replayed_stop": replayed["stop_epoch"].to_numpy(),
                         "keras_stop": keras.loc[replayed.index, "epochs_run"].to_numpy(),
                         "replayed_test_accuracy": replayed["test_accuracy_restored"].to_numpy(),
                         "keras_test_accuracy": keras.loc[replayed.index, "test_accuracy"].to_numpy()})


def verdict(summary: pd.DataFrame, keras: pd.DataFrame, epochs: int) -> str:
    """State, per rule, where it stops, what it saves and what the restored weights score against the end."""
    parts = [f"{row.rule} stops at epoch {row.stop_epoch_mean:.1f} on average (saves "
             f"{row.epochs_saved_mean / epochs:.0%} of {epochs} epochs) with restored test accuracy "
             f"{row.test_accuracy_restored * 100:.2f}% vs {row.test_accuracy_at_end * 100:.2f}% at the end "
             f"({row.restored_minus_end * 100:+.2f} pp [{row.restored_minus_end_ci_low * 100:+.2f}, "
             f"{row.restored_minus_end_ci_high * 100:+.2f}])" for row in summary.itertuples()]
    agree = (keras["replayed_stop"] == keras["keras_stop"]).all()
    better = int((summary["restored_minus_end_ci_low"] > 0).sum())
    worse = int((summary["restored_minus_end_ci_high"] < 0).sum())
    saved = summary["epochs_saved_mean"] / epochs
    return ("; ".join(parts) + f". Against training all {epochs} epochs, {better} of {len(summary)} rules score "
            f"significantly better, {worse} significantly worse, the rest within the seed noise, while saving "
            f"{saved.min():.0%} to {saved.max():.0%} of the epochs. Real Keras EarlyStopping runs stop at "
            f"{'the same epochs as the replay' if agree else 'other epochs than the replay (see the table)'}.")


def body(summary: pd.DataFrame, keras: pd.DataFrame, epochs: int) -> str:
    """Render the figure and the tables."""
    rows = [[row.rule, row.seeds, f"{row.stop_epoch_mean:.1f} ({row.stop_epoch_min}–{row.stop_epoch_max})",
             f"{row.epochs_saved_mean:.1f}", f"{row.test_accuracy_at_stop * 100:.2f}",
             f"{row.test_accuracy_restored * 100:.2f}", f"{row.test_accuracy_at_best_val * 100:.2f}",
             f"{row.test_accuracy_at_end * 100:.2f}",
             f"{row.restored_minus_end * 100:+.2f} [{row.restored_minus_end_ci_low * 100:+.2f}, "
             f"{row.restored_minus_end_ci_high * 100:+.2f}]"] for row in summary.itertuples()]
    check_rows = [[row.seed, row.replayed_stop, row.keras_stop, f"{row.replayed_test_accuracy * 100:.2f}",
                   f"{row.keras_test_accuracy * 100:.2f}"] for row in keras.itertuples()]
    return f"""## Results

![Validation loss and test accuracy per epoch with each rule's stop](figure:stopping_points.png)

The baseline is trained for {epochs} epochs; validation cross-entropy (which the rules see) and test accuracy
(which they never see; measured after every epoch for this study only) are recorded per epoch. Each rule is
replayed on the validation curve: *patience p* is Keras' EarlyStopping (stop after p epochs without a new
lowest validation cross-entropy); *GL > α* is Prechelt's generalization loss, GL(t) = 100 (E_va(t) / E_opt(t) − 1),
stopping at the first epoch where it exceeds α. "Restored" means the weights of the lowest validation
cross-entropy up to the stop (Keras' restore_best_weights). The rules watch the validation cross-entropy
(the protocol's data loss, as `--technique early-stopping` does); when it turns up because the model grows
overconfident on the images it gets wrong while accuracy still rises, stopping on it gives that accuracy up.

{report.markdown_table(["rule", "seeds", "stop epoch (range)", "epochs saved", "test acc % at stop",
                        "restored", "at best val epoch overall", f"at epoch {epochs}",
                        "restored − end, pp [95% CI]"], rows)}

### The replay against real Keras EarlyStopping

The same seeds trained with `--technique early-stopping` (Keras' callback, restore_best_weights):

{report.markdown_table(["seed", "replayed stop", "Keras stop", "replayed restored test acc %",
                        "Keras run test acc %"], check_rows)}
"""


def figure(curves: pd.DataFrame, summary: pd.DataFrame) -> Figure:
    """Draw mean validation cross-entropy and test accuracy per epoch, with each rule's mean stop."""
    mean = curves.groupby("epoch")[["val_crossentropy", "test_accuracy"]].mean()
    fig = Figure(figsize=(13, 5))
    left, right = fig.subplots(1, 2)
    for seed, curve in curves.groupby("seed"):
        left.plot(curve["epoch"], curve["val_crossentropy"], color="#999999", linewidth=0.6)
        right.plot(curve["epoch"], curve["test_accuracy"] * 100, color="#999999", linewidth=0.6)
    left.plot(mean.index, mean["val_crossentropy"], color="black", linewidth=2, label="mean over seeds")
    right.plot(mean.index, mean["test_accuracy"] * 100, color="black", linewidth=2, label="mean over seeds")
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    for colour, row in zip(colours, summary.itertuples()):
        for axes in (left, right):
            axes.axvline(row.stop_epoch_mean, color=colour, linestyle="--", linewidth=1, label=f"{row.rule} stops")
    left.set(xlabel="epoch", ylabel="validation cross-entropy", title="What the rules see")
    right.set(xlabel="epoch", ylabel="test accuracy (%)", title="What they never see")
    return finish(fig, [left, right])
