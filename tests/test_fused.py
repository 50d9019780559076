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


ROUNDING_APART = ("augment+spatial-dropout",)  # image transformations: XLA compiles them differently in fit's
# program than in the epoch's, ~4e-7 apart (the cnn's convolutions, trained one step per program, are bit-exact)


def test_fused_epochs_train_the_same_bits_as_keras_fit(fused_report):
    checks = {name: check for name, check in fused_report["fit_vs_fused"].items()
              if not name.startswith(ROUNDING_APART)}
    assert len(checks) == 6
    for name, check in checks.items():
        assert check["weights"] == 0.0, name  # every weight, moving statistic and random layer's seed state
        assert check["averaged"] == 0.0, name  # ema: the moving average too (others: the weights again)
        assert check["accuracy"][0] == check["accuracy"][1], name  # the epoch's metrics, reset per epoch
        assert check["loss"][0] == check["loss"][1], name  # penalty included, as in fit
        for keras_value, program_value in check["evaluation"]:  # validation through the compiled program
            assert keras_value == program_value, name
    for name, check in fused_report["fit_vs_fused"].items():  # an epoch's own measurement: evaluate's bits
        assert check["measured_with_epoch"][0], (name, check["measured_with_epoch"][1])


def test_runs_trained_together_match_their_lone_twins_closely(fused_report):
    assert max(fused_report["together_vs_alone"]) < 1e-5
    assert fused_report["alone_seeds_apart"] > 0.01  # the two seeds really are different runs


def test_fused_epochs_with_image_transformations_or_convolutions_match_fit_to_rounding(fused_report):
    checks = {name: check for name, check in fused_report["fit_vs_fused"].items() if name.startswith(ROUNDING_APART)}
    assert len(checks) == 1
    for name, check in checks.items():
        assert 0 < check["weights"] < 1e-5, name
        assert abs(check["loss"][0] - check["loss"][1]) < 1e-5, name


def test_a_program_loaded_from_the_program_cache_trains_the_bits_of_one_traced_anew(fused_report):
    loaded = fused_report["loaded_vs_traced"]
    assert loaded["programs"] >= 2  # the epoch and evaluation programs this structure exported
    assert loaded["weights"] == 0.0  # trained without tracing (jax.export refused): every weight the same
    assert loaded["evaluation"][0], loaded["evaluation"][1]


def test_programs_beyond_those_kept_are_dropped_and_their_compiled_code_freed(fused_report):
    dropped = fused_report["programs_dropped"]
    assert dropped["kept"] == 2  # PROGRAMS_KEPT, lowered for the check
    grown = dropped["mappings"][-1] - dropped["mappings"][1]  # four structures more, each ~500 mappings if kept
    assert grown < 400, dropped["mappings"]


def test_the_cnn_s_max_pooling_on_jax_gives_keras_numbers_and_gradient_bit_for_bit(fused_report):
    assert len(fused_report["max_pool"]) == 2
    for shape, (values, gradient) in fused_report["max_pool"].items():
        assert values and gradient, shape
