"""Choose the Keras backend and device before Keras is imported, and make its ops deterministic."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from pathlib import Path

from regbench.config import BACKENDS
from regbench.errors import UsageError

DEVICES = ("auto", "cpu", "gpu")
JAX_CACHE = "REGBENCH_JAX_CACHE"  # JAX's persistent compilation cache: a directory, or 'off' (default: below)
GPU_DEVICE_FILES = ("nvidia[0-9]*", "kfd", "dxg")  # /dev entries of NVIDIA, AMD (ROCm) and WSL2 GPUs
# One compute thread per run on the CPU, whatever the CPUs: XLA's CPU client sizes its op thread pool by $NPROC
# (else by the CPUs), and a pool of another size splits some ops' work otherwise, which changes the bits (a
# 10-epoch max-norm run on full MNIST: 97.37% at one CPU, 97.70% at two). More runs at once come from --jobs.
COMPUTE_THREADS = 1


def jax_cache_dir() -> Path | None:
    """Return where JAX keeps compiled programs across processes: $REGBENCH_JAX_CACHE, else the user's
    ~/.cache/regbench/jax/threads-1 (one for every store, so that a new store starts warm; the thread count is in
    the name because the compiled programs depend on it, and JAX's cache keys do not); None when it is 'off'."""
    chosen = os.environ.get(JAX_CACHE)
    if chosen == "off":
        return None
    return Path(chosen) if chosen else Path.home() / ".cache" / "regbench" / "jax" / f"threads-{COMPUTE_THREADS}"


_BACKEND_MODULE = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def select_backend(backend: str, device: str, tf_threads: int = COMPUTE_THREADS, start: bool = True) -> str:
    """Set up `backend` on `device` ('auto', 'cpu', 'gpu'); return the device used ('cpu'/'gpu').

    Must run before the first `import keras` of the process: Keras reads KERAS_BACKEND once.
    With `start=False` the backend is not imported where the device is known without it (see
    device_known_without_backend): the first run to train starts it (select_backend again), so a
    command whose runs are all stored never loads it.
    On the CPU, TensorFlow gets `tf_threads` intra- and inter-op threads and JAX COMPUTE_THREADS
    (through $NPROC): the same bits whatever the CPUs (see COMPUTE_THREADS); one thread was also the
    faster for these small models in most paired timings here (docs: Speed).
    """
    # 1. Check the request against what this process and this machine can do.
    check_installed(backend)
    if "keras" in sys.modules:
        loaded = sys.modules["keras"].backend.backend()
        if loaded != backend:
            raise UsageError(
                f"Keras is already loaded with backend {loaded!r} in this process; "
                f"run --backend {backend} in a new process"
            )
    # 2. Hide the GPU before the backend starts, or ask the backend for deterministic kernels.
    os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TF's C++ info and error chatter
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        if backend == "jax":
            os.environ["JAX_PLATFORMS"] = "cpu"
    if backend == "jax":
        os.environ["NPROC"] = str(COMPUTE_THREADS)
        os.environ.setdefault("XLA_FLAGS", "--xla_gpu_deterministic_ops=true")
        cache = jax_cache_dir()
        if cache is not None:  # a later process loads each compiled program instead of compiling it again
            os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(cache))
            os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # every program, even quick ones
    # 3. Start the backend and see which device it got.
    known = device_known_without_backend(device)
    if not start and known:
        return known
    used = "gpu" if _gpu_visible(backend) else "cpu"
    if device == "gpu" and used != "gpu":
        raise UsageError(
            f"--device gpu: backend {backend!r} sees no GPU here (is its GPU build installed?); "
            "use --device auto or cpu"
        )
    _make_deterministic(backend)
    if backend == "tensorflow" and used == "cpu":  # never under JAX: TF's threading settings slow JAX badly
        _limit_tensorflow_threads(tf_threads)
    return used


def device_known_without_backend(device: str) -> str | None:
    """Return the device runs train on where that is known without starting a backend: 'cpu' when asked for, or
    under 'auto' on a Linux machine with no GPU device file (no backend can see a GPU there); else None."""
    if device == "cpu":
        return "cpu"
    if device == "auto" and sys.platform == "linux" and not any(
            any(Path("/dev").glob(pattern)) for pattern in GPU_DEVICE_FILES):
        return "cpu"
    return None


def _limit_tensorflow_threads(threads: int) -> None:
    """Give TensorFlow `threads` intra-op and inter-op threads, unless it has already started."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TF already ran ops in this process (a second command in one process, as in
        pass  # tests): its pools stay as they are, which changes speed only, never the numbers


def check_installed(backend: str) -> None:
    """Raise UsageError unless `backend` is a known Keras backend installed here."""
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if importlib.util.find_spec(_BACKEND_MODULE[backend]) is None:
        extra = " (pip install 'regbench[jax]')" if backend == "jax" else ""
        raise UsageError(f"backend {backend!r} is not installed{extra}")


@contextlib.contextmanager
def native_stderr_silenced():
    """Silence what native libraries write straight to file descriptor 2 (Python errors still raise)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _gpu_visible(backend: str) -> bool:
    """Return whether `backend` sees a GPU."""
    if backend == "tensorflow":
        with native_stderr_silenced():  # TensorFlow's start-up chatter (oneDNN, CUDA probes)
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
        return bool(gpus)
    if backend == "jax":
        import jax

        return jax.default_backend() == "gpu"
    import torch

    return torch.cuda.is_available()


def _make_deterministic(backend: str) -> None:
    """Turn on the backend's deterministic ops, so a rerun reproduces a run exactly."""
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
        tf.get_logger().setLevel("ERROR")  # one retracing warning per new model is expected here
    elif backend == "torch":
        import torch

        torch.use_deterministic_algorithms(True, warn_only=True)
