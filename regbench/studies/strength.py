"""Study strength: sweep each technique's strength and watch test and training accuracy."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from regbench import report
from regbench.studies.common import (
    QUICK_CONFIG, Findings, Preset, StudyContext, arm_table, finish, label_arms, pp_effect,
)
from regbench.techniques import BASELINE

FULL = Preset(
    config={"train_size": 10_000, "epochs": 20},  # 10k images overfit enough in 20 epochs to show both sides
    seeds=3,
    grid={"sweeps": {"l1": ("l1", (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)),
                     "l2": ("l2", (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)),
                     "weight-decay": ("wd", (1e-2, 1e-1, 1.0, 10.0, 100.0)),  # Keras multiplies wd by the lr
                     "dropout": ("rate", (0.1, 0.3, 0.5, 0.7, 0.9))}},
)
QUICK = Preset(config=QUICK_CONFIG, seeds=2,
               grid={"sweeps": {"l2": ("l2", (1e-3, 1.0))}})
SWEEPS = {}


def run(context: StudyContext) -> Findings:
    """Train every strength of every swept technique with the baseline; find each best setting."""
    sweeps = context.grid["sweeps"]
    runs = label_arms(context.runs(context.sweep_configs(sweeps)).runs)
    table = arm_table(runs, list(dict.fromkeys(runs["technique"])))
    table["swept"] = [arm.split(" ")[0] for arm in table["arm"]]
    table["strength"] = [_strength(arm, sweeps) for arm in table["arm"]]
    return Findings(
        verdict=verdict(table, sweeps),
        body=body(table),
        tables={"runs": runs, "strength": table},
        figures={"accuracy_by_strength": figure(table, sweeps)},
    )


def _strength(arm: str, sweeps: dict) -> float:
    """Return the swept parameter's value in an arm label such as 'l2 l2=0.001' (0 for the baseline)."""
    technique = arm.split(" ")[0]
    if technique == BASELINE:
        return 0.0
    param = sweeps[technique][0]
    values = dict(part.split("=") for part in arm.split(" ")[1:])
    return float(values[param])


def verdict(table: pd.DataFrame, sweeps: dict) -> str:
    """Say, per technique, whether the strongest setting underfits and which setting is best."""
    baseline = table[table["arm"] == BASELINE].iloc[0]
    parts, underfit = [], 0
    for technique in sweeps:
        rows = table[table["swept"] == technique].sort_values("strength")
        strongest, best = rows.iloc[-1], rows.loc[rows["test_accuracy_mean"].idxmax()]
        lost = strongest["diff_ci_high"] < 0 and strongest["train_accuracy_diff"] < 0
        underfit += lost
        parts.append(
            f"{technique}: at {sweeps[technique][0]}={strongest['strength']:g} training accuracy is "
            f"{strongest['train_accuracy_diff'] * 100:+.2f} pp and test accuracy {pp_effect(strongest)} against the "
            f"baseline{' (underfits)' if lost else ''}; best {sweeps[technique][0]}={best['strength']:g} at "
            f"{best['test_accuracy_mean'] * 100:.2f}% ({pp_effect(best)})"
        )
    return (f"Baseline {baseline['test_accuracy_mean'] * 100:.2f}% test, {baseline['train_accuracy_mean'] * 100:.2f}% "
            f"training accuracy. " + "; ".join(parts) + f". The strongest setting lowers both training and test "
            f"accuracy significantly for {underfit} of {len(sweeps)} techniques: the claim "
            f"{'holds' if underfit == len(sweeps) else 'holds only in part'} on this grid.")


def body(table: pd.DataFrame) -> str:
    """Render the figure and the table of every arm."""
    rows = [[row.arm, row.runs, f"{row.test_accuracy_mean * 100:.2f} ± {row.test_accuracy_sd * 100:.2f}",
             f"{row.train_accuracy_mean * 100:.2f}", f"{row.gap_mean * 100:.2f}",
             "(baseline)" if row.arm == BASELINE else pp_effect(row)] for row in table.itertuples()]
    return f"""## Results

![Test and training accuracy against strength](figure:accuracy_by_strength.png)

Test accuracy (solid) and training accuracy in inference mode (dashed) against each technique's strength
(means over seeds); the baseline's as horizontal lines. Left of the best setting the model
overfits (training far above test), right of it both fall: underfitting.

{report.markdown_table(["arm", "runs", "test acc % (mean ± SD)", "train acc %", "gap (pp)",
                        "Δ test acc vs baseline, pp [95% CI]"], rows)}
"""


def figure(table: pd.DataFrame, sweeps: dict) -> Figure:
    """Draw test and training accuracy against strength, one panel per technique."""
    baseline = table[table["arm"] == BASELINE].iloc[0]
    fig = Figure(figsize=(6 * min(len(sweeps), 2), 4.5 * ((len(sweeps) + 1) // 2)))
    axes_list = fig.subplots((len(sweeps) + 1) // 2, min(len(sweeps), 2), squeeze=False).ravel()
    for axes, (technique, (param, _)) in zip(axes_list, sweeps.items()):
        rows = table[table["swept"] == technique].sort_values("strength")
        axes.plot(rows["strength"], rows["test_accuracy_mean"] * 100, "o-", color="#1f77b4", label="test")
        axes.plot(rows["strength"], rows["train_accuracy_mean"] * 100, "s--", color="#d62728", label="training")
        axes.axhline(baseline["test_accuracy_mean"] * 100, color="#1f77b4", alpha=0.5, linewidth=0.8,
                     label="baseline test")
        axes.axhline(baseline["train_accuracy_mean"] * 100, color="#d62728", alpha=0.5, linewidth=0.8,
                     linestyle="--", label="baseline training")
        axes.set(xscale="linear" if technique == "dropout" else "log", xlabel=f"{technique}: {param}",
                 ylabel="accuracy (%)", title=technique)
    for axes in axes_list[len(sweeps):]:
        axes.set_visible(False)
    return finish(fig, axes_list[:len(sweeps)])
