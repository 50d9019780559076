"""Every figure draws from a small synthetic table and says what it shows."""

import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from regbench.config import WEIGHT_BIN_EDGES
from regbench.plots import (
    arm_colours,
    arm_markers,
    cost_plot,
    gap_curves,
    learning_curves,
    paired_differences_plot,
    weight_histograms,
)

TECHNIQUES = ["dropout", "l2"]
ARMS = ["none", *TECHNIQUES]


def epochs_table():
    rng = np.random.default_rng(0)
    rows = []
    for technique in ARMS:
        for seed in range(3):
            for epoch in range(1, 6):
                rows.append({"technique": technique, "seed": seed, "epoch": epoch, "run_id": f"{technique}{seed}",
                             "val_accuracy": 0.9 + 0.01 * epoch + rng.normal(0, 0.002),
                             "train_inference_accuracy": 0.92 + 0.012 * epoch,
                             "train_inference_crossentropy": 1 / epoch, "val_crossentropy": 1.2 / epoch})
    return pd.DataFrame(rows)


def runs_table():
    return pd.DataFrame([
        {"technique": t, "seed": s, "run_id": f"{t}{s}", "status": "ok", "seconds_per_epoch": 2.0 + i,
         "train_seconds": 20.0 + 10 * i,
         "weights_max_abs": 0.5, "weights_near_zero_fraction": 0.01}
        for i, t in enumerate(ARMS) for s in range(3)
    ])


def weights_table():
    counts = np.arange(len(WEIGHT_BIN_EDGES) - 1)
    return pd.DataFrame([
        {"technique": t, "seed": s, "run_id": f"{t}{s}", "bin_low": WEIGHT_BIN_EDGES[b],
         "bin_high": WEIGHT_BIN_EDGES[b + 1],
         "count": int(counts[b])}
        for t in ["none", "dropout"] for s in range(2) for b in range(len(counts))
    ])


def summary_table():
    return pd.DataFrame({
        "technique": ARMS, "pairs": pd.array([pd.NA, 3, 1], dtype="Int64"),
        "test_accuracy_diff": [np.nan, 0.004, -0.001],
        "diff_ci_low": [np.nan, 0.001, np.nan], "diff_ci_high": [np.nan, 0.007, np.nan],
        "adj_ci_low": [np.nan, 0.0005, np.nan], "adj_ci_high": [np.nan, 0.0075, np.nan],
        "margin": [np.nan, 0.001, 0.001],
        "verdict": [np.nan, "helps", "cannot tell (fewer than 2 successful pairs)"],
    })


def legend_texts(legend):
    return [text.get_text() for text in legend.get_texts()]


def test_learning_curves_show_accuracy_and_crossentropy_for_each_arm():
    figure = learning_curves(epochs_table(), TECHNIQUES, "tiny")
    assert isinstance(figure, Figure) and len(figure.axes) == 2
    assert [axes.get_title() for axes in figure.axes] == ["Accuracy", "Cross-entropy"]
    assert legend_texts(figure.legends[0]) == ARMS + ["validation (solid)", "training, inference mode (dashed)"]
    assert len(figure.axes[1].get_lines()) == 2 * len(ARMS)  # validation and training per arm
    assert "tiny" in figure._suptitle.get_text()


def test_gap_curves_plot_training_minus_validation_per_arm():
    figure = gap_curves(epochs_table(), TECHNIQUES, "tiny")
    axes = figure.axes[0]
    assert legend_texts(axes.get_legend()) == ARMS
    assert "percentage points" in axes.get_ylabel()
    first = axes.get_lines()[0].get_ydata()
    assert np.allclose(first, [2.0 + 0.2 * e for e in range(1, 6)], atol=0.5)  # about 2 points + 0.2 per epoch


def test_forest_plot_marks_zero_and_labels_pairs_and_verdicts():
    figure = paired_differences_plot(summary_table(), "tiny")
    axes = figure.axes[0]
    assert [tick.get_text() for tick in axes.get_yticklabels()] == ["dropout (3 pairs)", "l2 (1 pair)"]
    assert any(list(line.get_xdata()) == [0, 0] for line in axes.get_lines())
    assert "helps" in [text.get_text() for text in axes.texts]
    assert "level Holm tested" in axes.get_xlabel() and "bootstrap" not in axes.get_xlabel()
    assert legend_texts(figure.legends[0]) == ["±0.1 pp: the smallest effect that matters (--margin)"]  # below the axes


def test_forest_plot_keeps_to_the_data_and_marks_an_interval_that_runs_off():
    summary = summary_table()
    summary.loc[2, ["pairs", "diff_ci_low", "diff_ci_high", "adj_ci_low", "adj_ci_high"]] = [2, -0.58, 0.34, -0.8, 0.6]
    axes = paired_differences_plot(summary, "tiny").axes[0]
    low, high = axes.get_xlim()
    assert high == -low and np.isclose(high, 4 * 0.4 * 1.08)  # 4 x the largest |mean| (0.4 pp), a little room
    written = [text.get_text() for text in axes.texts]
    assert {"-58.00, -80.00", "+34.00, +60.00"} <= set(written)  # where the clipped intervals end
    assert "cannot tell (fewer than 2\nsuccessful pairs)" in written or all(len(line) <= 30 for text in written
                                                                          for line in text.splitlines())


def test_forest_plot_draws_a_confidence_sequence_that_excludes_the_last_mean():
    summary = summary_table()  # a running intersection of looks' sequences can lie wholly to one side of the mean
    summary["sequence_low"], summary["sequence_high"] = [np.nan, 0.0045, np.nan], [np.nan, 0.006, np.nan]
    axes = paired_differences_plot(summary, "tiny").axes[0]
    bars = [collection.get_segments()[0] for collection in axes.collections if collection.get_segments()]
    ends = sorted((round(float(bar[0][0]), 6), round(float(bar[1][0]), 6)) for bar in bars)
    assert (0.45, 0.6) in ends and (0.1, 0.7) in ends  # the thick sequence and the thin 95% interval, as given


def test_arms_past_the_palette_keep_distinct_colour_and_marker_pairs():
    arms = [f"l2:l2={index}" for index in range(1, 45)]
    colours, markers = arm_colours(arms), arm_markers(arms)
    assert len({(colours[arm], markers[arm]) for arm in ["none", *arms]}) == 45


def test_weight_histograms_have_a_log_panel_per_arm_with_stats_in_the_legend():
    figure = weight_histograms(weights_table(), runs_table(), TECHNIQUES, "tiny")
    visible = [axes for axes in figure.axes if axes.get_visible()]
    assert [axes.get_title() for axes in visible] == ARMS
    assert all(axes.get_xscale() == "log" and axes.get_yscale() == "log" for axes in visible)
    assert "max |w| 0.50" in legend_texts(visible[0].get_legend())[0]
    assert [text.get_text() for text in visible[2].texts] == ["no successful run with a histogram"]  # none for l2


def test_cost_plot_gives_ratios_to_the_baseline():
    summary = summary_table()
    figure = cost_plot(summary, runs_table(), "tiny")
    per_epoch = figure.axes[0]
    assert [text.get_text() for text in per_epoch.texts] == ["1.00x (2.0 s)", "1.50x (3.0 s)", "2.00x (4.0 s)"]
    assert "relative to the baseline" in per_epoch.get_xlabel()


def test_colours_are_stable_across_figures():
    assert arm_colours(["dropout", "l2"])["dropout"] == arm_colours(["dropout"])["dropout"]
    assert arm_colours(["l2"])["none"] == arm_colours(["dropout"])["none"]


def test_a_long_run_description_fits_within_the_forest_plot():
    title = ("cnn 128 relu, 5,000 Fashion-MNIST training images, 10 to 15 seeds per arm, added until decided; adam lr "
             "tuned per arm (baseline 0.00266) cosine, batch 32, 20 epochs max, measured at the highest-val-acc "
             "epoch, tensorflow/cpu")
    figure = paired_differences_plot(summary_table(), title)
    figure.savefig(io.BytesIO(), format="png")  # lays the figure out
    heading = next(text for text in figure.texts if text.get_text().startswith("Paired test-accuracy difference"))
    extent = heading.get_window_extent()
    assert 0 <= extent.x0 and extent.x1 <= figure.bbox.width
