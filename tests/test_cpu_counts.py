"""The same bits whatever the CPUs: a run trained in a process on one CPU and on two, on both backends."""

import os
import subprocess
import sys

import pandas as pd
import pytest

from conftest import SMALL_MNIST


REDUCING = ["compare", "--technique", "max-norm", "--param", "c=0.5", "--train-size", "500", "--epochs",
            "1", "--seeds", "1", "--data", str(SMALL_MNIST)]  # a binding max-norm: its column norms are reductions
EXACT = ["run_id", "test_crossentropy", "val_crossentropy", "train_crossentropy", "weights_l1", "weights_l2",
         "weights_max_abs"]


def on_cpus(path, cpus: int, *args):
    """Run regbench in a fresh process limited to `cpus` CPU cores; return its runs.csv."""
    cores = sorted(os.sched_getaffinity(0))[:cpus]
    path.mkdir()
    env = {**os.environ, "REGBENCH_JAX_CACHE": "off"}  # a program compiled at one CPU count would serve the other
    process = subprocess.run([sys.executable, "-m", "regbench", *args, "--store", "s.sqlite", "--out", "out"],
                             cwd=path, env=env, capture_output=True, text=True, timeout=300,
                             preexec_fn=lambda: os.sched_setaffinity(0, cores))
    assert process.returncode == 0, process.stderr[-3000:]
    return pd.read_csv(path / "out" / "runs.csv").sort_values("run_id").reset_index(drop=True)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPU cores")
@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_a_run_has_the_same_bits_on_one_cpu_and_on_two(tmp_path, backend):
    # XLA's CPU pool, sized by the CPUs, once split the max-norm's column norms: other bits at two CPUs.
    pytest.importorskip(backend)
    one, two = (on_cpus(tmp_path / str(cpus), cpus, *REDUCING, "--backend", backend) for cpus in (1, 2))
    pd.testing.assert_frame_equal(one[EXACT], two[EXACT], check_exact=True)
    assert list(one["cpus"]) == [1, 1] and list(two["cpus"]) == [2, 2]
    assert set(one["compute_threads"]) == set(two["compute_threads"]) == {1}
    assert set(two["executor"]) == {"in-process"} and two["versions"].str.contains(f"keras=.* {backend}=").all()
