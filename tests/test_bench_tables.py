"""The benchmarks' own arithmetic: what their tables say from given figures (benchmarks/cnn.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import cnn  # noqa: E402

ROWS = [{"what": "plain Keras convnet, tensorflow", "epoch_seconds": [30.0, 10.0, 12.0]},
        {"what": "regbench cnn, tensorflow, this tree", "epoch_seconds": [20.0, 9.0, 9.0], "training_seconds": [8, 8]},
        {"what": "regbench compare --jobs 2, tensorflow, this tree", "epoch_seconds": [8.5]},
        {"what": "plain Keras convnet, jax", "epoch_seconds": [60.0, 40.0]},
        {"what": "regbench compare --jobs 2, jax, this tree", "epoch_seconds": [31.0]},
        {"what": "regbench cnn, jax, this tree", "epoch_seconds": [50.0, 30.0], "training_seconds": [29.0]}]


def test_cnn_targets_judge_the_epochs_after_the_first_against_both_yardsticks():
    targets = cnn.targets(ROWS).splitlines()
    assert targets[0] == ("- tensorflow: at least as fast as the plain convnet on TensorFlow: 8.50 s against 11.00 s "
                          "per model-epoch (0.77x, regbench compare --jobs 2, tensorflow, this tree): met")
    assert targets[2].endswith("30.00 s against 11.00 s per model-epoch (2.73x, regbench cnn, jax, this tree): NO")
    assert targets[3].endswith("30.00 s against 40.00 s per model-epoch (0.75x, regbench cnn, jax, this tree): met")
    table = cnn.table(ROWS)
    assert "| regbench cnn, jax, this tree | 30.00 | 2.73x | 0.75x | 29.00 |" in table
