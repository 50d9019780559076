"""Study strength: sweep each technique's strength densely where it starts to act; choose each technique's best
strength on the validation numbers of tuning seeds, apart from the evaluation seeds its effect is measured on."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from regbench import plots, stats, wording
from regbench.config import DEFAULT_TUNE_SEEDS
from regbench.studies.context import QUICK_CONFIG, Findings, Preset, StudyContext, label_arms
from regbench.techniques import BASELINE


def _half_decades(low_exponent: int, high_exponent: int) -> tuple[float, ...]:
    """Return 1eN and 3eN for N from `low_exponent` up to 1e`high_exponent`: two steps per decade."""
    values = [factor * 10.0 ** exponent for exponent in range(low_exponent, high_exponent) for factor in (1, 3)]
    return tuple(float(f"{value:.3g}") for value in values + [10.0 ** high_exponent])


FULL = Preset(
    config={"train_size": 10_000, "epochs": 20},  # 10k images overfit in 20 epochs (training accuracy 100%)
    seeds=5,
    grid={"sweeps": {"l1": ("l1", _half_decades(-6, -2)),
                     "l2": ("l2", _half_decades(-5, -1)),
                     "weight-decay": ("wd", _half_decades(-2, 2)),  # Keras multiplies wd by the learning rate
                     "dropout": ("rate", (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9))}},
)
QUICK = Preset(config=QUICK_CONFIG, seeds=2, grid={"sweeps": {"l2": ("l2", (1e-3, 1.0))}})
SWEEPS: dict[str, str] = {}  # the options this study sets itself: none


def run(context: StudyContext) -> Findings:
    """Train every strength of every swept technique with the baseline, on the evaluation seeds and on the tuning
    seeds; choose each technique's best on the tuning seeds' validation numbers alone."""
    sweeps = context.grid["sweeps"]
    tuning = label_arms(context.runs(context.sweep_configs(sweeps, DEFAULT_TUNE_SEEDS)).runs)
    runs = label_arms(context.runs(context.sweep_configs(sweeps)).runs)
    tuning_means = stats.successful(tuning).groupby("technique")["val_accuracy"].mean()
    table = strength_table(runs, sweeps, tuning_means)
    return Findings(
        verdict=verdict(table, sweeps),
        body=body(table, sweeps),
        tables={"runs": runs, "tuning_runs": tuning, "strength": table},
        figures={"accuracy_by_strength": figure(table, sweeps)},
        choices=pd.DataFrame([{"technique": technique, "arm": arm, "tuning_val_accuracy": tuning_means[arm]}
                              for technique, arm in choices(tuning_means, sweeps).items()]),
    )


def choices(tuning_means: pd.Series, sweeps: dict) -> dict[str, str]:
    """Return each swept technique's choice: its arm of highest mean validation accuracy on the tuning seeds
    (`tuning_means`, by arm; the weakest setting on a tie). Evaluation seeds and test numbers play no part."""
    chosen = {}
    for technique in sweeps:
        mine = sorted((arm for arm in tuning_means.index if arm.split(" ")[0] == technique),
                      key=lambda arm: _strength(arm, sweeps))
        chosen[technique] = max(mine, key=lambda arm: tuning_means[arm])  # max keeps the first of equal scores
    return chosen


def strength_table(runs: pd.DataFrame, sweeps: dict, tuning_means: pd.Series) -> pd.DataFrame:
    """Return one row per arm of the evaluation `runs`: means over seeds, the paired test- and training-accuracy
    differences to the baseline (each Holm-corrected across every arm of the study), its strength, its mean
    validation accuracy on the tuning seeds (`tuning_means`) and whether it is its technique's choice there."""
    arms = [arm for arm in dict.fromkeys(runs["technique"]) if arm != BASELINE]
    table = stats.summarize(runs, arms, metrics=stats.STUDY_METRICS)
    train = stats.effect_family({arm: stats.paired_differences(runs, "train_accuracy", arm) for arm in arms})
    table = table.merge(train[["effect", "diff_mean", "holm_p", "adj_ci_low", "adj_ci_high"]].rename(
        columns={"effect": "technique", "diff_mean": "train_accuracy_diff", "holm_p": "train_holm_p",
                 "adj_ci_low": "train_adj_ci_low", "adj_ci_high": "train_adj_ci_high"}), on="technique", how="left")
    table["swept"] = [arm.split(" ")[0] for arm in table["technique"]]
    table["strength"] = [_strength(arm, sweeps) for arm in table["technique"]]
    weights = stats.successful(runs).groupby("technique")["weights_l2"].mean()
    table["weights_l2_mean"] = table["technique"].map(weights)
    table["tuning_val_accuracy"] = table["technique"].map(tuning_means)
    table["chosen_on_validation"] = table["technique"].isin(choices(tuning_means, sweeps).values())
    return table


def _strength(arm: str, sweeps: dict) -> float:
    """Return the swept parameter's value in an arm label such as 'l2 l2=0.001' (0 for the baseline)."""
    technique = arm.split(" ")[0]
    if technique == BASELINE:
        return 0.0
    values = dict(part.split("=") for part in arm.split(" ")[1:])
    return float(values[sweeps[technique][0]])


def _significant(row, prefix: str = "") -> bool:
    """Say whether a row's paired difference (test accuracy, or `prefix` 'train_') is significant after Holm."""
    return bool(row[f"{prefix}holm_p"] < stats.ALPHA)


def _technique_finding(rows: pd.DataFrame, param: str) -> tuple[str, bool]:
    """Describe one technique's sweep from its rows (weakest first); return the text and whether it underfits."""
    strongest, chosen = rows.iloc[-1], rows[rows["chosen_on_validation"]].iloc[0]
    acting = rows[[_significant(row, "train_") for _, row in rows.iterrows()]]
    underfits = (_significant(strongest) and _significant(strongest, "train_")
                 and strongest["test_accuracy_diff"] < 0 and strongest["train_accuracy_diff"] < 0)
    onset = (f"training accuracy first moves significantly at {param}={acting.iloc[0]['strength']:g} "
             f"({acting.iloc[0]['train_accuracy_diff'] * 100:+.2f} pp)" if len(acting)
             else "training accuracy moves significantly at no tested strength")
    chosen_text = (f"validation on the tuning seeds chooses {param}={chosen['strength']:g} "
                   f"({chosen['tuning_val_accuracy'] * 100:.2f}% there), whose test accuracy on the evaluation seeds "
                   f"differs from the baseline's by "
                   f"{wording.effect_text(chosen['test_accuracy_diff'], chosen['adj_ci_low'], chosen['adj_ci_high'])}"
                   f" ({chosen['verdict']})")
    where = ("the weakest setting tested" if chosen.name == rows.index[0] else
             "the strongest setting tested" if chosen.name == rows.index[-1] else "an interior setting")
    text = (f"{rows.iloc[0]['swept']}: {onset}; at the strongest, {param}={strongest['strength']:g}, training "
            f"accuracy {strongest['train_accuracy_diff'] * 100:+.2f} pp and test accuracy "
            f"{wording.effect_text(strongest['test_accuracy_diff'], strongest['adj_ci_low'], strongest['adj_ci_high'])}"
            f"{' (both significantly lower: underfitting)' if underfits else ''}; {chosen_text}, {where}")
    return text, underfits


def verdict(table: pd.DataFrame, sweeps: dict) -> str:
    """Say per technique where it starts to act, whether its strongest setting underfits, and what validation
    chooses, with the numbers behind each."""
    baseline = table[table["technique"] == BASELINE].iloc[0]
    parts, underfit, helped = [], 0, []
    for technique, (param, _) in sweeps.items():
        rows = table[table["swept"] == technique].sort_values("strength")
        text, underfits = _technique_finding(rows, param)
        parts.append(text)
        underfit += underfits
        chosen = rows[rows["chosen_on_validation"]].iloc[0]
        if _significant(chosen) and chosen["test_accuracy_diff"] > 0:
            helped.append(technique)
    claim = ("holds for every technique on this grid" if underfit == len(sweeps) else
             "is not shown on this grid: no strongest setting lowers both training and test accuracy significantly "
             "(with these seeds possibly for lack of power: see the intervals)" if underfit == 0 else
             f"holds for {underfit} of {len(sweeps)} techniques on this grid (the others' strongest setting does not "
             "lower both training and test accuracy significantly)")
    gain = (f"The setting chosen on validation beats the baseline significantly for {', '.join(helped)}"
            if helped else "No technique's setting chosen on validation beats the baseline significantly")
    return (f"Baseline: {baseline['test_accuracy_mean'] * 100:.2f}% test, {baseline['train_accuracy_mean'] * 100:.2f}% "
            f"training accuracy. " + "; ".join(parts) + f". Too much regularization underfits: the claim {claim}. "
            f"{gain} (intervals Holm-adjusted across all {len(table) - 1} settings). This design fixes one data size "
            "and one training budget: the onset and the best strength may move with either, and a best setting "
            "that beats nothing here may still help a model that overfits more.")


def body(table: pd.DataFrame, sweeps: dict) -> str:
    """Render the figure and the table of every arm."""
    rows = [[row.technique + (" **(chosen)**" if row.chosen_on_validation else ""), row.runs,
             f"{row.tuning_val_accuracy * 100:.2f}", f"{row.val_accuracy_mean * 100:.2f}",
             f"{row.test_accuracy_mean * 100:.2f} ± {row.test_accuracy_sd * 100:.2f}",
             f"{row.train_accuracy_mean * 100:.2f}", f"{row.gap_mean * 100:.2f}", f"{row.weights_l2_mean:.1f}",
             "(baseline)" if row.technique == BASELINE else
             wording.effect_text(row.train_accuracy_diff, row.train_adj_ci_low, row.train_adj_ci_high),
             "(baseline)" if row.technique == BASELINE else wording.effect_text(row.test_accuracy_diff, row.adj_ci_low,
                                                                                row.adj_ci_high),
             "" if row.technique == BASELINE else row.verdict]
            for row in table.itertuples()]
    steps = "; ".join(f"{technique}: {param} in {', '.join(f'{v:g}' for v in values)}"
                      for technique, (param, values) in sweeps.items())
    return f"""## Results

![Validation, test and training accuracy against strength](figure:accuracy_by_strength.png)

Validation, test and training accuracy (inference mode) against each technique's strength, means over the
evaluation seeds; the baseline's as horizontal lines; the ring marks the setting chosen on validation. Each choice
reads only the validation accuracy of the same sweep trained on the tuning seeds
{', '.join(map(str, DEFAULT_TUNE_SEEDS))}, which the evaluation seeds do not share, so the chosen setting's effect
on the evaluation seeds carries no winner's curse from the choice. Grid: {steps}.

Every difference is paired by seed with the baseline; the intervals are Holm-adjusted across all
{len(table) - 1} settings of the study (each at the level Holm's step-down procedure tested it), and the verdict
column is the compare command's (±{table['margin'].dropna().iloc[0] * 100:g} pp equivalence margin). A
technique "acts" where its training-accuracy difference is significant after the same correction.

{wording.markdown_table(["arm", "runs", "val acc %, tuning seeds", "val acc %", "test acc % (mean ± SD)",
                         "train acc %", "gap (pp)", "‖w‖₂", "Δ train acc, pp [Holm CI]", "Δ test acc, pp [Holm CI]",
                         "verdict"], rows)}
"""


def figure(table: pd.DataFrame, sweeps: dict) -> Figure:
    """Draw validation, test and training accuracy against strength, one panel per technique."""
    baseline = table[table["technique"] == BASELINE].iloc[0]
    columns = min(len(sweeps), 2)
    fig = Figure(figsize=(6.5 * columns, 4.5 * ((len(sweeps) + 1) // 2)))
    panels = fig.subplots((len(sweeps) + 1) // 2, columns, squeeze=False).ravel()
    lines = [("val_accuracy_mean", "validation", "#2ca02c", "o-"), ("test_accuracy_mean", "test", "#1f77b4", "o-"),
             ("train_accuracy_mean", "training", "#d62728", "s--")]
    for axes, (technique, (param, _)) in zip(panels, sweeps.items()):
        rows = table[table["swept"] == technique].sort_values("strength")
        for column, label, colour, style in lines:
            axes.plot(rows["strength"], rows[column] * 100, style, color=colour, label=label)
            axes.axhline(baseline[column] * 100, color=colour, alpha=0.5, linewidth=0.8, linestyle=style[1:],
                         label=f"baseline {label}")
        chosen = rows[rows["chosen_on_validation"]]
        axes.plot(chosen["strength"], chosen["val_accuracy_mean"] * 100, "o", markersize=14, markerfacecolor="none",
                  color="black", label="chosen on validation")
        axes.set(xscale="linear" if technique == "dropout" else "log", xlabel=f"{technique}: {param}",
                 ylabel="accuracy (%)", title=technique)
    for axes in panels[len(sweeps):]:
        axes.set_visible(False)
    return plots.finish_panels(fig, panels[:len(sweeps)])
