"""REPORT.md and a self-contained report.html from a comparison's tables and figures (the wording they share
with the studies' reports is regbench.wording's)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from regbench import plots, stats
from regbench.config import LEGACY_PROTOCOL, STUDY_FIELDS, TUNING_FIELDS, with_added_defaults
from regbench.errors import UsageError
from regbench.experiment import EXPERIMENT_FILE, experiment_toml
from regbench.outputs import (
    COMPARISON_FIGURES,
    COMPARISON_TABLES,
    Manifest,
    baseline_label,
    read_comparison,
    read_tuning,
    write_outputs,
)
from regbench.store import RunTables
from regbench.techniques import BASELINE, describe_params
from regbench.verdicts import SWITCHED_OFF, Kind, Verdict, kind_of
from regbench.wording import (
    decimal,
    holm_confidence,
    markdown_table,
    p_text,
    p_value,
    plural,
    png,
    points,
    points_interval,
    report_html,
)

FIGURE_CAPTIONS = dict(zip(COMPARISON_FIGURES, (  # in COMPARISON_FIGURES' order
    "Validation (solid) and training (dashed, inference mode) accuracy and cross-entropy per epoch.",
    "Generalization gap per epoch: training minus validation accuracy.",
    "Paired test-accuracy difference to the baseline with its unadjusted 95% intervals (forest plot); the verdicts are "
    "Holm-adjusted.",
    "Final kernel weight magnitudes per arm, with max |w| and the share of near-zero weights.",
    "Training time per epoch and in total, relative to the baseline.",
    "Tuning: validation score against each searched parameter, per tuned setting: every full-budget tuning run "
    "(dots), each trial's mean over its tuning seeds (circles), the chosen trial (star; none when off won), the "
    "baseline's mean on the tuning seeds (dashed), and the values of trials successive halving pruned (ticks along "
    "the bottom); diverged runs are left out.",
), strict=True))


def write_comparison(out: Path, tables: RunTables, manifest: Manifest,
                     tuning: pd.DataFrame | None = None) -> tuple[pd.DataFrame, list[Path]]:
    """Compute statistics, draw figures and write every table, figure and report of a comparison
    (`tuning`: the tuning runs of a --tune comparison)."""
    manifest = as_stored(manifest)
    runs, effects, summary = comparison_statistics(tables.runs, manifest)
    epochs_table = stats.best_and_final_epochs(tables.epochs)
    images = {name: png(figure) for name, figure in comparison_figures(tables, manifest, summary, tuning).items()}
    texts = comparison_texts(manifest, runs, tables.epochs, summary, effects, epochs_table, images, tuning)
    if manifest.get("options"):  # manifests before experiment files have none
        texts[EXPERIMENT_FILE] = experiment_toml(manifest["options"])
    written = dict(zip(COMPARISON_TABLES, (tables.runs, tables.epochs, tables.weights, summary, effects, epochs_table)))
    if manifest.get("tune"):
        written["tuning"] = tuning
    files = write_outputs(out, written, images, manifest, texts)
    return summary, files


def as_stored(manifest: Manifest) -> Manifest:
    """Return a manifest as manifest.json stores it (tuples as lists), so that what is rendered from it is what
    verify and load render from the file."""
    return json.loads(json.dumps(manifest))


def comparison_figures(tables: RunTables, manifest: Manifest, summary: pd.DataFrame,
                       tuning: pd.DataFrame | None = None) -> dict[str, Figure]:
    """Draw a comparison's figures, by name (the sensitivity figure only when it was tuned)."""
    techniques, reference = list(manifest["techniques"]), reference_arm(manifest)[0]
    title = comparison_title(manifest)
    figures = {
        "learning_curves": plots.learning_curves(tables.epochs, techniques, title, reference),
        "gap_curves": plots.gap_curves(tables.epochs, techniques, title, reference),
        "paired_test_accuracy": plots.paired_differences_plot(summary, title),
        "weight_histograms": plots.weight_histograms(tables.weights, tables.runs, techniques, title, reference),
        "cost": plots.cost_plot(summary, tables.runs, title),
    }
    if tune := manifest.get("tune"):
        figures["sensitivity"] = plots.sensitivity(tuning, tune, title)
    return figures


def comparison_statistics(runs: pd.DataFrame, manifest: Manifest) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Return a comparison's analysed runs, its paired effects and its summary (with each setting's values)."""
    techniques, (reference, reference_params) = list(manifest["techniques"]), reference_arm(manifest)
    runs = analysed_runs(runs, manifest)
    analysis = stats.analysis_of(manifest)
    effects = stats.paired_effects(runs, techniques, analysis["margin"], analysis["target_effect"], reference)
    summary = stats.summarize(runs, techniques, effects, baseline=reference)
    tuned = (manifest.get("tuned") or {}).get("chosen", {})
    summary.insert(1, "params", [describe_params(reference_params if t == reference else manifest["techniques"][t])
                                 for t in summary["technique"]])
    summary.insert(2, "tuned_score", [tuned[t]["score"] if t in tuned else math.nan for t in summary["technique"]])
    switched_off = summary["technique"].map(lambda t: bool(tuned.get(t, {}).get("off")))
    summary.loc[switched_off, "verdict"] = SWITCHED_OFF
    if sequential := manifest.get("sequential"):  # --seeds auto: the verdicts are the sequences', not the t-tests'
        last = {arm: looks[-1] for arm, looks in sequential["looks"].items()}
        for column, key in (("sequence_low", "low"), ("sequence_high", "high"), ("seeds_trained", "seeds")):
            summary[column] = [math.nan if t not in last or last[t][key] is None else last[t][key]
                               for t in summary["technique"]]
        summary["looks"] = [len(sequential["looks"][t]) if t in last else math.nan
                            for t in summary["technique"]]
        decided = summary["technique"].isin(last) & ~switched_off
        summary.loc[decided, "verdict"] = [last[t]["verdict"] for t in summary.loc[decided, "technique"]]
    return runs, effects, summary


def reference_arm(manifest: Manifest) -> tuple[str, dict]:
    """Return the arm every arm is paired with (--baseline; 'none' in manifests written before it) and its values,
    as tuning chose them when it was tuned."""
    label = baseline_label(manifest)
    chosen = (manifest.get("tuned") or {}).get("chosen", {})
    return label, chosen[label]["params"] if label in chosen else manifest.get("baseline", {label: {}})[label]


SEQUENTIAL_FOREST = ("Paired test-accuracy difference to the baseline with each arm's anytime-valid confidence "
                     "sequence (thick; the verdicts rest on them) and its unadjusted 95% t-interval (thin, which does "
                     "not hold under sequential seeds); forest plot.")


def figure_captions(manifest: Manifest) -> dict[str, str]:
    """Return the captions of a comparison's figures (the sensitivity figure only when it was tuned; the forest
    plot's for sequential seeds)."""
    captions = {name: caption for name, caption in FIGURE_CAPTIONS.items()
                if name != "sensitivity" or manifest.get("tune")}
    return {**captions, "paired_test_accuracy": SEQUENTIAL_FOREST} if manifest.get("sequential") else captions


def protocol_of(manifest: Manifest) -> dict:
    """Return a comparison's protocol: its name and which weights of every run were measured."""
    return manifest.get("protocol", LEGACY_PROTOCOL)


def analysed_runs(runs: pd.DataFrame, manifest: Manifest) -> pd.DataFrame:
    """Return a comparison's runs as its statistics read them: measured at the weights its protocol selects."""
    return stats.selected(runs, protocol_of(manifest)["select"])


def comparison_texts(manifest: Manifest, runs: pd.DataFrame, epochs: pd.DataFrame, summary: pd.DataFrame,
                     effects: pd.DataFrame, epochs_table: pd.DataFrame, images: dict[str, bytes] | None = None,
                     tuning: pd.DataFrame | None = None) -> dict[str, str]:
    """Return REPORT.md and report.html of a comparison (report.html's images left empty when not given)."""
    body = report_markdown(manifest, runs, epochs, summary, effects, epochs_table, tuning)
    images = images if images is not None else {name: b"" for name in figure_captions(manifest)}
    return {"REPORT.md": body.replace("](figure:", "]("),
            "report.html": report_html(body, images, comparison_title(manifest))}


def rebuild_report(directory: str | Path) -> tuple[pd.DataFrame, list[Path]]:
    """Re-render the statistics, figures and reports of a compare output directory."""
    tables, manifest = read_comparison(Path(directory))
    return write_comparison(Path(directory), tables, manifest, read_tuning(Path(directory), manifest))


def rebuild_study_page(directory: Path) -> dict | None:
    """Re-render a study directory's report.html from its REPORT.md and figures; return its manifest (None: no
    study)."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or "study" not in manifest:
        return None
    try:
        body = (directory / "REPORT.md").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{directory}/REPORT.md: cannot be read ({error}); rerun "
                         f"`{manifest.get('command')}`") from None
    names = re.findall(r"\]\(([\w.-]+)\.png\)", body)
    missing = [name for name in names if not (directory / f"{name}.png").is_file()]
    if missing:
        raise UsageError(f"{directory}/{missing[0]}.png: missing, though REPORT.md shows it; "
                         f"rerun `{manifest.get('command')}`")
    images = {name: (directory / f"{name}.png").read_bytes() for name in names}
    body = re.sub(r"\]\(([\w.-]+)\.png\)", r"](figure:\1.png)", body)
    write_outputs(directory, {}, {}, manifest, {"report.html": report_html(body, images, f"study {manifest['study']}")})
    return manifest


def comparison_title(manifest: Manifest) -> str:
    """Say what was compared, on what: model, data size, optimizer, budget and seeds."""
    config = with_added_defaults(manifest["config"])
    widths = "-".join(str(width) for width in config["hidden"])
    schedule = "" if config["schedule"] == "constant" else (
        " cosine" + (f" (warm-up {config['warmup_epochs']})" if config["warmup_epochs"] else ""))
    measured = ", measured at the highest-val-acc epoch" if protocol_of(manifest)["select"] == "best-val" else ""
    seeds = plural(len(manifest["seeds"]), "seed")
    if sequential := manifest.get("sequential"):
        trained = sorted(looks[-1]["seeds"] for looks in sequential["looks"].values())
        seeds = (f"{trained[0]} to {trained[-1]} seeds per arm, added until decided" if trained[0] != trained[-1]
                 else f"{plural(trained[0], 'seed')} per arm, added until decided")
    lr = f"lr {config['lr']:g}"
    baseline_shared = ((manifest.get("tuned") or {}).get("baseline") or {}).get("shared", {})
    if "lr" in baseline_shared:  # --tune-shared lr
        lr = f"lr tuned per arm (baseline {baseline_shared['lr']:g})"
    return (f"{config['architecture']} {widths} {config['activation']}, "
            f"{training_images(manifest, config['train_size'])}, {seeds}; "
            f"{config['optimizer']} {lr}{schedule}, "
            f"batch {config['batch_size']}, {plural(config['epochs'], 'epoch')} max{measured}, "
            f"{config['backend']}/{config['device']}")


def training_images(manifest: Manifest, count: int) -> str:
    """Say how many training images of which data: '50,000 Fashion-MNIST training images', or '2,500 training images
    of a subset of MNIST (...)' for a file that is not the published dataset (manifests before datasets: MNIST)."""
    data = manifest["data"]
    title = data.get("title", "MNIST")
    content = data.get("content", title)
    return f"{count:,} {title} training images" if content == title else f"{count:,} training images of {content}"


VERDICT_RULE = (
    "Verdicts, in this order (Holm corrects each family of tests across the {family} technique(s)): "
    "**helps / hurts** when the paired t-test rejects 0 after Holm's correction and equivalence within "
    "±{margin} pp (`--margin`, the smallest effect that matters) is not shown; **negligible** when both are "
    "shown (a real but smaller difference); **equivalent** when only equivalence is shown (two one-sided "
    "tests, TOST, statsmodels' ttost_paired); **inconclusive** otherwise: no detectable effect is not no "
    "effect. The verdict on 0 rests on the t-interval at the level Holm tested that technique at (0.05/m "
    "for the smallest p of m, 0.05/(m - 1) for the next, up to 0.05 for the largest): it excludes 0 exactly "
    "when that step rejects (Holm also needs every smaller p rejected, so in the rare case it stopped "
    "earlier, that interval may exclude 0 under an inconclusive verdict). Equivalence rests on the "
    "interval at 1 - 2 x its own Holm level lying inside the margin. The unadjusted 95% intervals are "
    "shown too; one may exclude 0 while the verdict stays inconclusive."
)

SEQUENTIAL_RULE = (
    "Verdicts rest on each arm's anytime-valid confidence sequence (section Sequential seeds): **helps / hurts** "
    "when it excludes 0, **negligible** when it also lies within ±{margin} pp (`--margin`, the smallest effect "
    "that matters), **equivalent** when it lies within ±{margin} pp, **undecided** otherwise: neither an effect nor "
    "its absence is shown. The t-intervals, Holm-adjusted p-values, TOST and Wilcoxon tests in the tables are "
    "fixed-sample statistics of the pairs each arm ended with, for reading only: they do not hold under the "
    "stopping rule."
)

INTERVAL_KIND = {
    False: ("Every interval is over the paired seeds, conditional on this one training/validation "
            "split and test set: it says how results vary with the seed (initial weights, batch order, dropout "
            "masks), not with the data drawn (`--resample-data` draws a split per seed)."),
    True: ("Every interval is over the paired seeds, across data splits: each seed also drew its own "
           "stratified validation split and training subset (`--resample-data`; both arms of a pair share it), so "
           "the intervals include data-sampling variation; the test set is the same for all."),
}

SELECTION_TEXT = {
    "final": "Test numbers are for the final weights (or, with early stopping, the restored best ones).",
    "best-val": ("Every run, in every arm alike, is measured with the weights of its selected epoch (the epoch "
                 "of highest validation accuracy, ties to the lower validation cross-entropy; the test set plays no "
                 "part in the choice), so early stopping's own effect is stopping, against the same selection on a "
                 "full run."),
}


def budget_paragraph(epochs: pd.DataFrame, config: dict, protocol: dict, reference: str = BASELINE) -> str:
    """Say whether the baseline had plateaued: its validation accuracy over the last 10% of its epochs."""
    plateau = stats.plateau(epochs[epochs["technique"] == reference])
    if plateau is None:
        return ""
    schedule = "cosine-decayed" if config["schedule"] == "cosine" else "constant"
    return (f"Budget ({protocol['name']} protocol, {plural(config['epochs'], 'epoch')} at a {schedule} learning rate): "
            "over "
            f"the last 10% of its epochs ({plateau['first']}-{plateau['last']}) the baseline's validation accuracy "
            f"moved by {points(plateau['change'])} pp on average (first to last of them; SD within a run "
            f"{points(plateau['sd'], False)} pp), mean {points(plateau['mean'], False)}%.")


def compiling_note(summary: pd.DataFrame) -> str:
    """Say that time/epoch leaves out the runs whose epochs also compiled their model, and their time ('' if none)."""
    compiling = summary.get("compiling_seconds_per_epoch_mean", pd.Series(dtype=float)).dropna()
    if compiling.empty:
        return ""
    return (f"\n\nTime per epoch leaves out the first run of each model in its process, whose epochs also compiled it "
            f"({compiling.min():.2f}-{compiling.max():.2f} s per epoch; runs.csv: `warmup_in_epochs`).")


def summary_table(summary: pd.DataFrame) -> str:
    """Render the summary: one row per arm, the baseline first, with effects, intervals, p-values and verdicts."""
    rows = []
    for index, row in summary.iterrows():
        arm = [row["technique"], f"{row['runs']}" + (f" ({row['diverged']} diverged)" if row["diverged"] else ""),
               f"{points(row['test_accuracy_mean'], False)} ± {points(row['test_accuracy_sd'], False)}"]
        if index == 0:
            rows.append(arm + ["(baseline)"] + [""] * 9 + [f"{decimal(row['time_ratio'])}x"])
            continue
        rows.append(arm + [
            points(row["test_accuracy_diff"]), points_interval(row["diff_ci_low"], row["diff_ci_high"]),
            f"{points_interval(row['adj_ci_low'], row['adj_ci_high'])} ({holm_confidence(row['holm_level'])})",
            f"{points_interval(row['eq_ci_low'], row['eq_ci_high'])} ({holm_confidence(row['tost_level'], 2)})",
            p_value(row["t_p"]), p_value(row["holm_p"]), p_value(row["tost_holm_p"]), decimal(row["cohens_dz"]),
            f"**{row['verdict']}**", points(row["gap_diff"]), f"{decimal(row['time_ratio'])}x",
        ])
    header = ["technique", "runs", "test acc % (mean ± SD)", "Δ test acc (pp)", "95% CI (t, unadjusted)",
              "CI at Holm's level (tests 0)", "CI at Holm's level (tests ±margin)", "p (paired t)", "p (Holm)",
              "p (TOST, Holm)", "d_z", "verdict", "Δ gap (pp)", "time/epoch"]
    return markdown_table(header, rows)


def arm_name(technique: str, params: dict) -> str:
    """Name an arm in the report's text: its label in bold and its values."""
    setting = describe_params(params)
    return f"**{technique}**" + (f" ({setting})" if setting else "")


def technique_paragraph(row: pd.Series, params: dict, family: int) -> str:
    """Say in plain words what the numbers show for one technique, and which interval its verdict rests on."""
    name = arm_name(row["technique"], params)
    verdict = Verdict.parse(row["verdict"])
    if verdict.kind is Kind.SWITCHED_OFF:
        return switched_off_text(name, row["technique"])
    if pd.isna(row["test_accuracy_diff"]) or row["pairs"] < 2:
        return (f"{name}: fewer than 2 successful pairs ({row['pairs']}), so no interval or test can be given; "
                "run more seeds.")
    margin = f"±{row['margin'] * 100:g} pp"
    text = (f"{name}: over {row['pairs']} paired seeds, test accuracy changed by {points(row['test_accuracy_diff'])} "
            f"percentage points (95% CI {points(row['diff_ci_low'])} to {points(row['diff_ci_high'])}, unadjusted; "
            "paired "
            f"t-test {p_text(row['t_p'])}, Holm-adjusted {p_text(row['holm_p'])}, Wilcoxon "
            f"{p_text(row['wilcoxon_p'])}; d_z = {decimal(row['cohens_dz'])}). ")
    test_zero = (f"the {holm_confidence(row['holm_level'])} interval at the level Holm tested it, "
                 f"{points_interval(row['adj_ci_low'], row['adj_ci_high'])}")
    test_margin = (f"the {holm_confidence(row['tost_level'], 2)} interval at the level Holm tested equivalence, "
                   f"{points_interval(row['eq_ci_low'], row['eq_ci_high'])}")
    if verdict.kind in (Kind.HELPS, Kind.HURTS):
        text += (f"Verdict: it **{verdict}** on this setup: {test_zero}, excludes 0, and equivalence within "
                 f"{margin} is not shown (TOST, Holm-adjusted {p_text(row['tost_holm_p'])}). ")
    elif verdict.kind is Kind.NEGLIGIBLE:
        text += (f"Verdict: **{verdict}**: the difference is detectable ({test_zero}, excludes 0) but "
                 f"{test_margin}, lies inside {margin}, the smallest effect that matters here (`--margin`). ")
    elif verdict.kind is Kind.EQUIVALENT:
        text += (f"Verdict: **{verdict}**: {test_margin}, lies inside {margin} (TOST, Holm-adjusted "
                 f"{p_text(row['tost_holm_p'])}). This rules out effects larger than the margin, not every effect. ")
    else:
        reason = (f"its unadjusted 95% interval excludes 0, but not after Holm's correction for the {family} "
                  f"technique(s) compared" if verdict.uncorrected else
                  f"{test_zero}, includes 0")
        text += (f"Verdict: **inconclusive**: {reason}, and {test_margin}, is not inside {margin}; neither an "
                 "effect nor its absence is shown. ")
        if pd.notna(row["min_detectable_effect"]):
            detectable = points(row["min_detectable_effect"], False)
            level = row.get("mde_alpha", 0.05)  # summaries written before it: the unadjusted 0.05
            text += (f"If the true SD of the paired differences were the observed {points(row['diff_sd'], False)} pp, "
                     f"{row['pairs']} pairs would detect a true difference of {detectable}"
                     f" pp with 80% power at level {level:.4g} (Holm's first step: 0.05 / {family}); that SD is "
                     f"itself uncertain (95% CI {points(row['sd_low'], False)}"
                     f" to {points(row['sd_high'], False)} pp), so the "
                     f"detectable difference lies between {points(row['mde_low'], False)} and "
                     f"{points(row['mde_high'], False)} pp. ")
    if pd.notna(row.get("planning_sd")):
        needed, equivalent = row["seeds_for_target"], row.get("seeds_for_equivalence")
        level = row.get("mde_alpha", 0.05)
        text += (f"Planning (`--target-effect {points(row['target_effect'], False)}`): with the SD's 80% upper "
                 "confidence "
                 f"bound, {points(row['planning_sd'], False)} pp, and the level the verdict needs ({level:.4g}, Holm's "
                 "first step), "
                 + (f"about {needed} seeds would detect {points(row['target_effect'], False)} pp with 80% power"
                    if pd.notna(needed) else "more than 1,000 seeds would be needed to detect it")
                 + (f", and about {equivalent} would show equivalence within ±{row['margin'] * 100:g} pp (TOST) "
                    "if the true difference were 0. " if pd.notna(equivalent) else
                    f"; showing equivalence within ±{row['margin'] * 100:g} pp would take more than 1,000. "))
    text += (f"The generalization gap changed by {points(row['gap_diff'])} points, and an epoch took "
             f"{decimal(row['time_ratio'])}x the baseline's time.")
    return text


def sequence_level(sequential: dict) -> float:
    """Return the confidence of each arm's sequence: 1 - alpha / m for m arms (Bonferroni)."""
    return 1 - sequential["alpha"] / len(sequential["looks"])


def sequential_text(name: str, row: pd.Series, manifest: Manifest) -> str:
    """Say one arm's sequential verdict: the seeds it took, its mean difference and its confidence sequence."""
    sequential = manifest["sequential"]
    assert sequential is not None  # an arm decided by sequential seeds
    level = sequence_level(sequential)
    interval = (f"{points_interval(row['sequence_low'], row['sequence_high'])} (anytime-valid, {level * 100:.4g}%)"
                if pd.notna(row["sequence_low"]) else "an interval not yet bounded (too few pairs, or no spread)")
    if kind_of(row["verdict"]) is Kind.UNDECIDED:
        needed = sequential["looks"][row["technique"]][-1].get("seeds_to_decide")
        estimate = (f"deciding it would take about {needed} seeds, if the mean stayed and the SD were its 80% upper "
                    "confidence bound" if needed else "deciding it would take more than 1,000 seeds")
        return (f"{name}: **undecided** after {row['seeds_trained']:g} seeds, the most allowed: the effect lies within "
                f"{interval}; the mean difference is {points(row['test_accuracy_diff'])} pp; {estimate}.")
    return (f"{name}: **{row['verdict']}**, decided at look {row['looks']:g} after {row['seeds_trained']:g} seeds: "
            f"test accuracy {points(row['test_accuracy_diff'])} pp against the baseline, within {interval}.")


def sequential_paragraph(name: str, row: pd.Series, manifest: Manifest) -> str:
    """Say one arm's sequential verdict, how far an undecided arm's sequence was from a decision, and what else
    changed (descriptively)."""
    text = sequential_text(name, row, manifest)
    low, high, margin = row["sequence_low"], row["sequence_high"], row["margin"]
    if kind_of(row["verdict"]) is Kind.UNDECIDED and pd.notna(low):
        beyond = [f"{points(excess, False)} pp {side} {bound}{margin * 100:g}" for excess, side, bound in (
            (-margin - low, "below", "-"), (high - margin, "above", "+")) if excess > 0]
        text += (f" By how much it missed: equivalence needs the sequence inside ±{margin * 100:g} pp, and it reaches "
                 f"{' and '.join(beyond)}; an effect needs 0 outside it, and 0 lies "
                 f"{points(min(high, -low), False)} pp "
                 "inside its nearer end.")
    return text + (f" The generalization gap changed by {points(row['gap_diff'])} points and an epoch took "
                   f"{decimal(row['time_ratio'])}x the baseline's time (means over its pairs).")


def sequential_section(manifest: Manifest) -> str:
    """Show how sequential seeds decided: the rule, and every arm's looks."""
    sequential = manifest["sequential"]
    assert sequential is not None  # a comparison with --seeds auto
    rows = [[arm, "; ".join(f"{look['seeds']} seeds: {look['verdict']}" for look in looks),
             "not yet bounded" if looks[-1]["low"] is None else points_interval(looks[-1]["low"], looks[-1]["high"])]
            for arm, looks in sequential["looks"].items()]
    level = sequence_level(sequential)
    return f"""## Sequential seeds

`--seeds auto`: every arm first trained {sequential['seed_batch']} seeds; after each look, the arms still undecided
trained {sequential['seed_batch']} more (the baseline as many as the arm that needed most), up to
{sequential['max_seeds']}. Method: {sequential['method']}. Each arm's interval is a confidence sequence at level
{level * 100:.4g}%: it covers the arm's true mean paired difference at every look at once, so stopping when it
decides keeps its error rate; with probability at least {(1 - sequential['alpha']) * 100:g}% every arm's sequence
covers its mean throughout, and then no verdict below is wrong. Verdicts: helps or hurts when the sequence excludes
0 (negligible when it also lies within ±margin), equivalent when it lies within ±margin, undecided otherwise. The
t-intervals and p-values elsewhere in this report are fixed-sample statistics of the same pairs: they do not hold
under this stopping rule, and no verdict rests on them.

{markdown_table(["arm", "looks (seeds: verdict)", "confidence sequence at the last look (pp)"], rows)}
"""


def switched_off_text(name: str, technique: str) -> str:
    """Say that tuning switched an arm's technique off, and what its comparison then is."""
    return (f"{name}: switched off. Validation prefers no {technique} at this budget (tuning's race chose \"off\"), "
            "so this arm trains the untreated model, bit for bit as the baseline, and its difference of exactly 0 "
            "is by construction, not a finding about the technique.")


def bottom_line(row: pd.Series, params: dict) -> str:
    """Say one technique's result in one sentence: effect, the interval its verdict rests on, and the verdict."""
    name = arm_name(row["technique"], params)
    if kind_of(row["verdict"]) is Kind.SWITCHED_OFF:
        return switched_off_text(name, row["technique"])
    if pd.isna(row["test_accuracy_diff"]):
        return f"{name}: no successful pair, so no effect can be given."
    if pd.isna(row["diff_ci_low"]):
        return (f"{name}: test accuracy {points(row['test_accuracy_diff'])} pp from one pair, with no interval: "
                f"{row['verdict']}.")
    return (f"{name}: test accuracy {points(row['test_accuracy_diff'])} pp against the baseline (95% CI "
            f"{points_interval(row['diff_ci_low'], row['diff_ci_high'])}; "
            f"{holm_confidence(row['holm_level'])} at Holm's level "
            f"{points_interval(row['adj_ci_low'], row['adj_ci_high'])}; {row['pairs']} paired seeds): {row['verdict']}"
            + (f"; {seeds_to_decide_text(row)}." if kind_of(row["verdict"]) is Kind.INCONCLUSIVE else "."))


def seeds_to_decide_text(row: pd.Series) -> str:
    """Say about how many seeds would decide an inconclusive arm (fixed seeds): to detect its observed difference,
    or to show equivalence were the true difference 0; at the level the verdict needs and the SD's 80% upper
    confidence bound."""
    sd = stats.planning_sd(row["diff_sd"], int(row["pairs"]))
    level = row.get("mde_alpha", stats.ALPHA)
    detect = stats.seeds_for(row["test_accuracy_diff"], sd, level)
    equivalent = stats.seeds_for_equivalence(row["margin"], sd, level)
    def seeds(count) -> str:
        return f"about {count}" if count else "over 1,000"

    return (f"deciding it would take {seeds(detect)} seeds to detect this difference, or {seeds(equivalent)} to show "
            "equivalence if the true difference were 0 (SD at its 80% upper bound; `--seeds auto` decides as it goes)")


def tuning_section(manifest: Manifest, tuning: pd.DataFrame) -> str:
    """Say how a --tune comparison chose its settings, with a table of the choices and the sensitivity figure."""
    tune, tuned = manifest["tune"], manifest["tuned"]
    assert tune is not None and tuned is not None  # a comparison with --tune
    accuracy = tune["metric"] == "accuracy"
    shared = tune.get("shared", [])

    def score(value) -> str:
        return points(value, False) + "%" if accuracy else decimal(value, 4)

    def lead(value) -> str:
        if value is None:
            return "–"
        scaled = 100 if accuracy else 1
        se = "" if value["se"] is None else f" ± {decimal(value['se'] * scaled, 3)}"
        return f"{value['mean'] * scaled:+.3f}{se}" + (" pp" if accuracy else "")

    def row(setting: str, searches: dict, choice: dict) -> list[str]:
        trials = tuned["trials"][setting]
        off, values = choice.get("off", False), {**choice["params"], **choice.get("shared", {})}
        finished = [t for t in trials if t["score"] is not None and math.isfinite(t["score"])]
        edges = [name for name in searches if not off and finished
                 and values[name] in (min(t["params"][name] for t in trials), max(t["params"][name] for t in trials))]
        space = "; ".join(f"{name} in [{s['low']:g}, {s['high']:g}], {s['scale']}" for name, s in searches.items())
        picked = describe_params({name: values[name] for name in searches if name in values})
        if off:
            picked = f"**off**: validation prefers no {setting} at this budget" + (
                f" ({describe_params(choice['shared'])}, the baseline's)" if choice["shared"] else "")
        pruned = sum(1 for t in trials if t.get("pruned_at") is not None)
        race = ("–" if "decided" not in choice else  # tuned before races
                ("decided" if choice["decided"] else "**chosen within noise**") + f", {choice['seeds']} seeds")
        over_baseline = choice.get("lead_baseline") if "decided" in choice else {  # tuned before races: the gap
            "mean": (choice["score"] - tuned["baseline_score"]) * (1 if accuracy else -1), "se": None}  # of means
        return [setting, space, picked, ", ".join(edges) or "–", score(choice["score"]),
                lead(choice.get("lead_runner_up")), lead(over_baseline), race,
                f"{len(trials)} tried, {pruned} pruned, {len(finished)} finished"]

    rows = []
    if tuned.get("baseline"):
        rows.append(row(BASELINE, tune["baseline_searches"], tuned["baseline"]))
    rows += [row(setting, searches, tuned["chosen"][setting]) for setting, searches in tune["searches"].items()]
    rows += [[setting, "nothing to tune", describe_params(tune["fixed"][setting]) or "–"] + ["–"] * 6
             for setting in tune["untuned"]]
    eval_seeds, reference = manifest["seeds"], reference_arm(manifest)[0]
    untreated = ("The baseline" if reference == BASELINE else
                 f"The model without regularization ({BASELINE}; the baseline {reference} was tuned like every arm)"
                 if reference in tuned["chosen"] else f"The model without regularization ({BASELINE})")
    both = (f"The shared training options {', '.join(shared)} were searched jointly with every arm's own values, and "
            f"for {BASELINE} (no regularization) alone in the same budget, so both sides of every pair are at their "
            "validated best; each arm trains its evaluation runs at its own chosen values. " if shared else
            "Every arm and the baseline train at the same training options; only the techniques' values were "
            "searched. ")
    off = [setting for setting, choice in tuned["chosen"].items() if choice.get("off")]
    off_text = (f"Validation preferred off for {', '.join(off)}: those arms are evaluated at their untreated values, "
                "which train bit for bit as the baseline. " if off else "")
    procedure = (f"""{tune['pruner']}: a trial kept to the full budget
is scored by its mean validation {tune['metric']} over its tuning seeds, at each run's selected weights. Then
the race: {tune['race']}, using the tuning seeds {tune['race_seeds']}. "Off" (the untreated model, the
baseline as tuned) always races and wins ties. {both}{off_text}""" if "pruner" in tune else f"""A trial's score
is the mean validation {tune['metric']} over its tuning seeds, at each run's selected weights; a trial with a
diverged run fails; the best score is chosen. (This comparison was tuned before regbench pruned trials, raced
the best and offered "off", the untreated model, as a candidate.) """)
    return f"""## Tuning

Each setting's values were chosen on validation data alone, before any evaluation run. {tune['sampler']}
proposed {tune['trials']} settings in the declared search space; each trained on the tuning seeds {tune['seeds']},
which the evaluation seeds {eval_seeds} do not share. {procedure}The test set is not read during the search.
A chosen score is the best of many and so flatters its setting (a winner's curse); the
evaluation on fresh seeds and the test set does not. {untreated} scored {score(tuned['baseline_score'])} on the
tuning seeds. "Lead" is the winner's mean paired lead in validation {tune['metric']} on its race seeds, ± its
standard error; a race that ended at the seed limit with more than one candidate left chose **within noise**.
A value chosen at the edge of the values tried hints that the best one may lie outside the searched range:
widen it with `--search NAME=LO:HI`. {len(tuning)} tuning runs in all (`tuning.csv`; partial runs are a
rung's first epochs).

{markdown_table(["setting", "searched", "chosen", "at the edge of the values tried",
                 f"validation {tune['metric']} (chosen)", "lead over runner-up", "lead over baseline", "race",
                 "trials"], rows)}

![{FIGURE_CAPTIONS['sensitivity']}](figure:sensitivity.png)

*{FIGURE_CAPTIONS['sensitivity']}*
"""


def repeats_section(manifest: Manifest) -> str:
    """Show how much each arm's effect depends on the draw of the search: every repeat's choice and its mean paired
    test-accuracy difference on the evaluation seeds (--tune-repeats)."""
    repeats = manifest["tune_repeats"]
    assert repeats is not None  # a comparison with --tune-repeats
    rows: list[list[str]] = []
    for label in manifest["techniques"]:
        diffs = [r["arms"][label]["test_accuracy_diff"] for r in repeats]
        cells = [("off" if r["arms"][label]["off"] else describe_params(
            {k: v for k, v in (r["arms"][label]["values"] or {}).items() if v is not None}) or "as given")
                 + f": {points(diff)}" if diff is not None else "–" for r, diff in zip(repeats, diffs)]
        known = [diff for diff in diffs if diff is not None]
        spread = points(float(np.std(known, ddof=1)), False) if len(known) > 1 else "–"
        rows.append([label, *cells, points(float(np.mean(known))) if known else "–", spread])
    header = ["arm", *(f"repeat {r['repeat'] + 1} (tuning seeds {r['tuning_seeds'][0]}..{r['tuning_seeds'][-1]})"
                       for r in repeats), "mean (pp)", "SD across repeats (pp)"]
    return f"""## Tuning variance

The whole search was repeated {len(repeats)} times, each on tuning seeds of its own and with its own proposals,
and each repeat's choices were trained on the evaluation seeds {manifest['seeds']} (as MLCommons AlgoPerf repeats
its tuning studies; Bouthillier et al. 2021 count the hyperparameter search among the sources of variance). Each
cell is the value chosen and its mean paired test-accuracy difference to the baseline of the same repeat, in
percentage points; the comparison above is repeat 1. The SD across repeats is how much of an effect is the draw
of the search rather than the technique.

{markdown_table(header, rows)}
"""


def _sequentially(manifest: Manifest, row: pd.Series) -> bool:
    """Return whether an arm's verdict rests on sequential seeds' confidence sequences (not switched off by tuning)."""
    return bool(manifest.get("sequential")) and kind_of(row["verdict"]) is not Kind.SWITCHED_OFF


def bottom_lines(manifest: Manifest, summary: pd.DataFrame) -> list[str]:
    """Say each compared arm's result in one sentence, in the summary's order (the report's bottom line)."""
    return [sequential_text(arm_name(row["technique"], manifest["techniques"][row["technique"]]), row, manifest)
            if _sequentially(manifest, row) else bottom_line(row, manifest["techniques"][row["technique"]])
            for _, row in summary.iloc[1:].iterrows()]


def report_markdown(manifest: Manifest, runs: pd.DataFrame, epochs: pd.DataFrame, summary: pd.DataFrame,
                    effects: pd.DataFrame, epochs_table: pd.DataFrame, tuning: pd.DataFrame | None = None) -> str:
    """Write the whole report in Markdown; figures are linked as 'figure:NAME.png'."""
    techniques, (reference, reference_params) = list(manifest["techniques"]), reference_arm(manifest)
    config = with_added_defaults(manifest["config"])
    protocol = protocol_of(manifest)
    treated = summary.iloc[1:]
    paragraphs = [sequential_paragraph(arm_name(row["technique"], manifest["techniques"][row["technique"]]), row,
                                       manifest)
                  if _sequentially(manifest, row) else
                  technique_paragraph(row, manifest["techniques"][row["technique"]], len(techniques))
                  for _, row in treated.iterrows()]
    bottom = bottom_lines(manifest, summary)
    other_effects = effects[effects["metric"] != stats.PRIMARY]
    effect_rows = [[row["technique"], row["metric"], f"{row['pairs']}", decimal(row["diff_mean"], 4),
                    f"[{decimal(row['t_ci_low'], 4)}, {decimal(row['t_ci_high'], 4)}]", p_value(row["t_p"]),
                    p_value(row["holm_p"]), row["verdict"]] for _, row in other_effects.iterrows()]
    epoch_rows = [[row["technique"], decimal(row["best_epoch"], 1), points(row["best_val_accuracy"], False),
                   decimal(row["best_val_crossentropy"], 4), decimal(row["final_epoch"], 1),
                   points(row["final_val_accuracy"], False), decimal(row["final_val_crossentropy"], 4)]
                  for _, row in epochs_table.iterrows()]
    setup_rows = [["protocol", f"`{protocol['name']}`, measured at the `{protocol['select']}` weights"]]
    setup_rows += [[key, f"`{value}`"] for key, value in config.items()
                   if key not in (*STUDY_FIELDS, *TUNING_FIELDS) or value]
    setup_rows += [["seeds", f"`{manifest['seeds']}`"], ["data", f"{manifest['data'].get('content', 'MNIST')}, from "
                   f"`{manifest['data']['source']}` (fingerprint `{manifest['data']['fingerprint']}`)"],
                   ["device", f"`{manifest['device']}`"], ["versions", f"`{manifest['versions']}`"],
                   ["date", manifest["date"]], ["command", f"`{manifest['command']}`"]]
    technique_rows = [[name, describe_params(params) or "–"]
                      for name, params in manifest["techniques"].items()]
    if reference != BASELINE:
        technique_rows.insert(0, [f"{reference} (baseline)", describe_params(reference_params) or "–"])
    run_rows = [[technique, ", ".join(f"`{run_id}`" for run_id in ids)]
                for technique, ids in manifest["run_ids"].items()]
    pairs = int(summary["pairs"].max()) if summary["pairs"].notna().any() else 0
    margin = stats.analysis_of(manifest)["margin"]
    diverged = runs[runs["status"] != "ok"]
    diverged_note = (f"\n\n{len(diverged)} run(s) diverged (loss became NaN or infinite) and are left out of every "
                     f"statistic: " + ", ".join(f"`{r.run_id}` ({r.technique}, seed {r.seed}, epoch "
                                                 f"{r.diverged_epoch:g})" for r in diverged.itertuples())
                     if len(diverged) else "")
    figures = "\n\n".join(f"![{caption}](figure:{name}.png)\n\n*{caption}*"
                          for name, caption in figure_captions(manifest).items() if name != "sensitivity")
    tuning_text = tuning_section(manifest, tuning) + "\n" if manifest.get("tune") else ""
    tuning_text += repeats_section(manifest) + "\n" if manifest.get("tune_repeats") else ""
    tuning_text += sequential_section(manifest) + "\n" if manifest.get("sequential") else ""
    chosen = " (chosen by tuning)" if manifest.get("tune") else ""
    rule = (SEQUENTIAL_RULE if manifest.get("sequential") else VERDICT_RULE).format(
        family=len(techniques), margin=f"{margin * 100:g}")
    wilcoxon = "" if manifest.get("sequential") else (
        f"\nWith {pairs} pairs the Wilcoxon signed-rank test cannot give a p-value below {2 / 2 ** pairs:.4g} (all "
        "differences of one sign), so it confirms direction but is weak at this size.")
    other_caveat = (" Under sequential seeds these are fixed-sample tests at the seeds each arm ended with, whose "
                    "number the test accuracy decided: for reading only, their error rates do not hold."
                    if manifest.get("sequential") else "")
    return f"""# regbench: {', '.join(techniques)} against {plots.baseline_name(reference)}

{comparison_title(manifest)}.

## Bottom line

{chr(10).join(f"- {line}" for line in bottom)}

Each technique is compared with the baseline pairwise: for every seed both models start from
the same initial weights in every layer they share and see the same mini-batches in the same
order. Δ is technique minus baseline per seed, averaged over pairs; p-values are two-sided; d_z is
the mean paired difference over its SD. {rule}{wilcoxon} {INTERVAL_KIND[config["resample_data"]]}
{SELECTION_TEXT[protocol["select"]]} The compared loss is the data cross-entropy, without any penalty.

{budget_paragraph(epochs, config, protocol, reference)}

{tuning_text}## Summary

{summary_table(summary)}{compiling_note(summary)}

## What the numbers say

{chr(10).join(f"- {paragraph}" for paragraph in paragraphs)}{diverged_note}

## Figures

{figures}

## Lowest-validation-loss epoch and final epoch

Validation numbers at the epoch of lowest validation cross-entropy (not the epoch a `best-val` protocol
measures, which is the one of highest validation accuracy) and at the last epoch run, averaged over seeds
(early stopping and overfitting make them differ).

{markdown_table(["technique", "lowest-val-CE epoch", "val acc % there", "val CE there", "final epoch",
         "val acc % at final", "val CE at final"], epoch_rows)}

## Other paired effects

Differences are technique minus baseline in the metric's own unit (fractions for accuracy and gap,
nats for cross-entropy, epochs, seconds).{other_caveat}

{markdown_table(["technique", "metric", "pairs", "Δ mean", "95% CI (t)", "p (t)", "p (Holm)", "verdict"], effect_rows)}

## Setup

{markdown_table(["setting", "value"], setup_rows)}

Techniques and their parameters:

{markdown_table(["technique", "parameters" + chosen], technique_rows)}

## Runs behind each row

Every number above is computed from these stored runs (`runs.csv`, `epochs.csv`, `weights.csv`).

{markdown_table(["arm", "run ids"], run_rows)}
"""
