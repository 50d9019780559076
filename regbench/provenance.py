"""Where and with what a run was computed: processor, CPUs, compute threads, library versions, executor.

Rounding, and so the exact bits of a run, depends on the processor and the library versions; regbench fixes the
compute threads (backend.select_backend) so that the CPU count, --jobs and the executor do not change them.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import socket

RESULT_PACKAGES = ("regbench", "keras", "numpy", "pandas", "scipy", "statsmodels", "optuna", "matplotlib", "click")
PROVENANCE_FIELDS = ("host", "cpu_model", "cpus", "compute_threads", "versions", "executor")  # in each run's record
TRAINING_PACKAGES = {"tensorflow": ("keras", "tensorflow", "numpy"), "jax": ("keras", "jax", "jaxlib", "numpy"),
                     "torch": ("keras", "torch", "numpy")}  # what a run's numbers depend on, by backend


def package_versions(backend: str) -> dict:
    """Return the versions of Python and of every package a result depends on."""
    return {"python": platform.python_version(), **{name: _version(name) for name in (*RESULT_PACKAGES, backend)}}


@functools.cache  # one look-up per process, not one per run
def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


@functools.cache
def cpu_model() -> str:
    """Return the processor's model name (float rounding, and so exact reproduction, depends on it)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def compute_threads(backend: str) -> int:
    """Return the threads one of this process's ops may use (as backend.select_backend set them)."""
    cpus = len(os.sched_getaffinity(0))
    if backend == "jax":
        return int(os.environ.get("NPROC") or cpus)  # XLA's CPU client sizes its pool by NPROC
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.config.threading.get_intra_op_parallelism_threads() or cpus  # 0: TensorFlow's default, every CPU
    return cpus


def run_provenance(backend: str) -> dict:
    """Return the flat provenance fields of a run trained in this process on `backend` (the executor is added by
    whoever sent the run here)."""
    return {
        "host": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cpus": len(os.sched_getaffinity(0)),
        "compute_threads": compute_threads(backend),
        "versions": " ".join(f"{name}={_version(name)}" for name in TRAINING_PACKAGES[backend]),
    }
