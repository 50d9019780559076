"""The same bits whatever the CPUs: a run trained in a process on one CPU and on two (JAX, whose pool followed the
CPUs; TensorFlow's one thread per op is checked where its processes run anyway, in test_faults.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SMALL_MNIST


def on_cpus(cpus: int, backend: str) -> dict:
    """Train the check's run in a fresh process limited to `cpus` CPU cores; return what it printed."""
    cores = sorted(os.sched_getaffinity(0))[:cpus]
    env = {**os.environ, "REGBENCH_JAX_CACHE": "off"}  # a program compiled at one CPU count would serve the other
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, str(Path(__file__).parent / "cpu_count_check.py"), backend,
                           str(SMALL_MNIST)], env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: os.sched_setaffinity(0, cores))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPU cores")
@pytest.mark.parametrize("backend", ["jax"])
def test_a_run_has_the_same_bits_on_one_cpu_and_on_two(backend):
    # XLA's CPU pool, sized by the CPUs, once split a binding max-norm's column norms: other bits at two CPUs.
    pytest.importorskip(backend)
    one, two = on_cpus(1, backend), on_cpus(2, backend)
    assert (one["cpus"], two["cpus"]) == (1, 2) and one["compute_threads"] == two["compute_threads"] == 1
    assert {key: one[key] for key in ("weights", "test_crossentropy", "weights_l2")} == {
        key: two[key] for key in ("weights", "test_crossentropy", "weights_l2")}
    assert f" {backend}=" in two["versions"]
