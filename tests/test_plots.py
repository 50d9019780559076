"""Every figure draws from a small synthetic table and says what it shows."""

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from regbench.plots import (
    arm_colours, crossentropy_curves, paired_differences_plot, validation_accuracy_curves,
)

TECHNIQUES = ["dropout", "l2"]


def epochs_table():
    rng = np.random.default_rng(0)
    rows = []
    for technique in ["none", *TECHNIQUES]:
        for seed in range(3):
            for epoch in range(1, 6):
                rows.append({"technique": technique, "seed": seed, "epoch": epoch,
                             "val_accuracy": 0.9 + 0.01 * epoch + rng.normal(0, 0.002),
                             "train_crossentropy": 1 / epoch, "val_crossentropy": 1.2 / epoch})
    return pd.DataFrame(rows)


def summary_table():
    return pd.DataFrame({
        "technique": ["none", "dropout", "l2"], "pairs": pd.array([pd.NA, 3, 1], dtype="Int64"),
        "test_accuracy_diff": [np.nan, 0.004, -0.001],
        "diff_ci_low": [np.nan, 0.001, np.nan], "diff_ci_high": [np.nan, 0.007, np.nan],
    })


def legend_texts(figure):
    return [text.get_text() for text in figure.axes[0].get_legend().get_texts()]


def test_validation_accuracy_curves_show_each_arm():
    figure = validation_accuracy_curves(epochs_table(), TECHNIQUES, "tiny")
    assert isinstance(figure, Figure) and len(figure.axes) == 1
    assert legend_texts(figure) == ["none", "dropout", "l2"]
    assert figure.axes[0].get_ylabel() == "validation accuracy (%)"
    assert "tiny" in figure._suptitle.get_text()


def test_crossentropy_curves_show_train_and_validation():
    figure = crossentropy_curves(epochs_table(), TECHNIQUES, "tiny")
    texts = legend_texts(figure)
    assert texts[:3] == ["none", "dropout", "l2"] and "training (dashed)" in texts
    assert len(figure.axes[0].get_lines()) == 2 * 3 + 2


def test_paired_differences_plot_marks_zero_and_labels_pairs():
    figure = paired_differences_plot(summary_table(), "tiny")
    labels = [tick.get_text() for tick in figure.axes[0].get_yticklabels()]
    assert labels == ["dropout (3 pairs)", "l2 (1 pair)"]
    assert any(list(line.get_xdata()) == [0, 0] for line in figure.axes[0].get_lines())
    assert "percentage points" in figure.axes[0].get_xlabel()


def test_colours_are_stable_across_figures():
    assert arm_colours(["dropout", "l2"])["dropout"] == arm_colours(["dropout"])["dropout"]
    assert arm_colours(["l2"])["none"] == arm_colours(["dropout"])["none"]
