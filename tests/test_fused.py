"""The JAX fused epoch computes exactly what Keras' fit computes (checked in a JAX process)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SMALL_MNIST


@pytest.fixture(scope="module")
def fused_report():
    pytest.importorskip("jax")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    env.pop("KERAS_BACKEND", None)
    done = subprocess.run([sys.executable, str(Path(__file__).parent / "fused_check.py"), str(SMALL_MNIST)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_fused_epochs_train_the_same_bits_as_keras_fit(fused_report):
    checks = fused_report["fit_vs_fused"]
    assert len(checks) == 6
    for name, check in checks.items():
        assert check["weights"] == 0.0, name  # every weight, moving statistic and dropout seed state
        assert check["accuracy"][0] == check["accuracy"][1], name  # the epoch's metrics, reset per epoch
        assert check["loss"][0] == check["loss"][1], name  # penalty included, as in fit
        for keras_value, program_value in check["evaluation"]:  # validation through the compiled program
            assert keras_value == program_value, name


def test_runs_trained_together_match_their_lone_twins_closely(fused_report):
    assert max(fused_report["together_vs_alone"]) < 1e-5
    assert fused_report["alone_seeds_apart"] > 0.01  # the two seeds really are different runs
