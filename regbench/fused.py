"""Whole training epochs (and evaluations) as compiled JAX programs, for one run or several at once.

Keras' JAX `fit` calls one jitted step per batch from Python and re-feeds every batch from
host memory. Here an epoch is a `jax.lax.scan` over Keras' own `model.train_step` with the
data kept as device arrays and the batch order passed in, so the run computes exactly what
`fit` computes (same steps, same batches, same bits; tested) without the per-batch round trips.
One program serves every run of the same structure (all seeds), so it compiles once, also for runs
training at once in threads of the process (JAX's --jobs), which make each program under a lock; the
evaluation scans Keras' own `test_step` the same way. An epoch's own measurements (validation, the training
monitor) are one evaluation program over sets kept on the device, fed the epoch's new state where it lies: no
copy of the images and no round trip of the weights through Keras' variables per epoch (benchmarks/CONVERGED.md:
0.093 -> 0.069 s per epoch besides training). It stays a program of its own, so that an epoch's seconds remain its
training's, which cost comparisons read: folded into the epoch's program it saved another 8 ms (2%) per epoch here.

Each program is traced through `jax.export` and kept in the user's program cache (beside JAX's
persistent compilation cache), keyed by structure, shapes, regbench's code and the versions of
JAX and Keras: a later process loads it instead of tracing Keras' steps again (0.3 to 1 s a
structure in the short commands here), and JAX's cache skips its compilation. Both paths compile the
one exported module.
"""

from __future__ import annotations

import gc
import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import jax
import jax.numpy as jnp
import jaxlib
import keras
import numpy as np

from regbench.backend import jax_cache_dir
from regbench.config import RunConfig, code_digest


class _Program:
    """The programs of one model structure: a template model and its compiled scans (or, for runs whose steps are
    apart, its compiled step)."""

    def __init__(self, key: Hashable, template: keras.Model, batch_size: int, eval_batch_size: int):
        self.template = template
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.steps_apart = isinstance(key, RunConfig) and key.steps_apart  # one program per step, not per epoch
        self.identity = repr((key, batch_size, eval_batch_size))  # names its programs in the program cache
        self.compiled: dict[tuple[str, str], Any] = {}  # (name, the arguments' shapes) -> the program compiled ahead
        self.compiling = threading.Lock()  # runs training at once (--jobs) make each program once

    def compile(self, name: str, args: tuple):
        """Return the program `name` ('epoch', 'step' or 'evaluate') compiled for `args`' shapes, made the first
        time."""
        shapes = name, _shapes(args)
        if shapes in self.compiled:  # every epoch after the first: no lock, so a lane compiling waits alone
            return self.compiled[shapes]
        with self.compiling:
            if shapes not in self.compiled:
                functions: dict[str, Callable] = {"epoch": self._epoch, "step": self._step, "evaluate": self._evaluate}
                function = functions[name]
                exported = _exported(jax.jit(function), args, f"{name} {self.identity}")
                self.compiled[shapes] = jax.jit(exported.call).lower(*args).compile()
        return self.compiled[shapes]

    def _epoch(self, state, x, y, order):
        """Train one epoch from `state` on x[order] in batches; return (epoch logs, new state)."""
        full = len(order) // self.batch_size * self.batch_size

        def step(state, batch):
            logs, state = self.template.train_step(state, (x[batch], y[batch]))
            return state, logs

        state, logs = jax.lax.scan(step, state, order[:full].reshape(-1, self.batch_size))
        logs = jax.tree.map(lambda values: values[-1], logs)
        if full < len(order):  # the last, smaller batch, as `fit` takes it
            logs, state = self.template.train_step(state, (x[order[full:]], y[order[full:]]))
        return logs, state

    def _step(self, state, x, y, batch):
        """Train one step from `state` on x[batch], y[batch]; return (the epoch's logs so far, new state)."""
        return self.template.train_step(state, (x[batch], y[batch]))

    def steps(self, state, x, y, order: np.ndarray):
        """Train one epoch from `state` on x[order], one compiled step per batch (as `fit` takes them); return (epoch
        logs, new state)."""
        logs, programs = None, {}  # batch length -> its compiled step, looked up once per epoch
        for start in range(0, len(order), self.batch_size):
            batch = jnp.asarray(order[start:start + self.batch_size])
            if len(batch) not in programs:
                programs[len(batch)] = self.compile("step", (state, x, y, batch))
            logs, state = programs[len(batch)](state, x, y, batch)
        return logs, state

    def _evaluate(self, state, sets):
        """Return the inference-mode logs over each (x, y) of `sets` in batches, as Keras' `evaluate` takes them."""
        return tuple(self._evaluate_one(state, x, y) for x, y in sets)

    def _evaluate_one(self, state, x, y):
        """Return the inference-mode logs over x, y in batches."""
        size = self.eval_batch_size
        full = len(x) // size * size
        logs = None
        if full:
            def step(state, start):  # slices in place: no copy of the whole set
                batch = (jax.lax.dynamic_slice_in_dim(x, start, size), jax.lax.dynamic_slice_in_dim(y, start, size))
                logs, state = self.template.test_step(state, batch)
                return state, logs

            state, logs = jax.lax.scan(step, state, jnp.arange(0, full, size))
            logs = jax.tree.map(lambda values: values[-1], logs)
        if full < len(x):
            logs, state = self.template.test_step(state, (x[full:], y[full:]))
        return logs


PROGRAMS_KEPT = 16  # structures whose programs a process keeps, the latest used. Each holds about 500 memory
# mappings of compiled code and 24 MB; Linux allows a process 65,530 mappings, and a tuning search that kept every
# trial's program died after a few hundred ("LLVM ERROR: Unable to allocate section memory")
_PROGRAMS: OrderedDict[Hashable, _Program] = OrderedDict()  # structure key -> program, the most recently used last
_MAKING = threading.Lock()  # held while _PROGRAMS is read or changed


def _program(key: Hashable, model: keras.Model, x, y, batch_size: int, eval_batch_size: int) -> _Program:
    """Return the programs of `key`, made from `model` the first time the key is seen (or since it was dropped as
    the least recently used of more than PROGRAMS_KEPT)."""
    name, dropped = (key, batch_size, eval_batch_size), False
    with _MAKING:
        if name not in _PROGRAMS:
            model.evaluate(np.asarray(x[:batch_size]), np.asarray(y[:batch_size]), verbose=0)  # builds the metrics
            _PROGRAMS[name] = _Program(key, model, batch_size, eval_batch_size)
            while len(_PROGRAMS) > PROGRAMS_KEPT:
                _PROGRAMS.popitem(last=False)  # a structure in training is used every epoch: never the least
                dropped = True
        _PROGRAMS.move_to_end(name)
        program = _PROGRAMS[name]
    if dropped:
        gc.collect()  # frees the dropped programs' compiled code, which their Keras models hold in reference cycles
    return program


def _state(model: keras.Model, program: _Program) -> tuple:
    """Return `model`'s training state as Keras' train_step takes it, with fresh epoch metrics."""
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    program.template.reset_metrics()
    return (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.optimizer.variables],
        [v.value for v in program.template.metrics_variables],
    )


def _store_state(model: keras.Model, state: tuple) -> None:
    """Write a trained state back into `model`'s variables."""
    trainable, non_trainable, optimizer_variables, _ = state
    for variables, values in ((model.trainable_variables, trainable),
                              (model.non_trainable_variables, non_trainable),
                              (model.optimizer.variables, optimizer_variables)):
        for variable, value in zip(variables, values):
            variable.assign(value)


def _shapes(args) -> str:
    """Return the shapes, types and nesting of `args` (arrays or ShapeDtypeStructs) as a string."""
    leaves, tree = jax.tree.flatten(args)
    return f"{tree} {[(leaf.shape, str(leaf.dtype)) for leaf in leaves]}"


def _exported(function, args: tuple, what: str) -> jax.export.Exported:
    """Return jitted `function` exported for `args`: loaded from the program cache when an earlier process
    exported it for the same `what`, shapes, code and versions, else traced now (and kept there)."""
    folder = jax_cache_dir()
    if folder is None:  # REGBENCH_JAX_CACHE=off
        return jax.export.export(function)(*args)
    identity = (what, _shapes(args), code_digest(), jax.__version__, jaxlib.__version__, keras.__version__,
                keras.config.floatx(), jax.default_backend())
    path = folder / "programs" / f"{hashlib.sha256(repr(identity).encode()).hexdigest()}.jaxexport"
    try:
        return jax.export.deserialize(bytearray(path.read_bytes()))
    except Exception:  # none kept yet, or a damaged file: trace it (again)
        exported = jax.export.export(function)(*args)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(exported.serialize())
    partial.replace(path)  # whole or not at all, where processes export at once
    return exported


def _as_floats(logs: dict) -> dict:
    """Return an epoch's logs as Python floats."""
    return {name: float(value) for name, value in logs.items()}


def _evaluation_args(state: tuple, sets: tuple) -> tuple:
    """Return the evaluation program's arguments: the weights of training `state`, fresh metrics and `sets`."""
    trainable, non_trainable, _, metrics = state
    return (trainable, non_trainable, metrics), sets


def compile_epoch(key: Hashable, model: keras.Model, x: jax.Array, y: jax.Array, batch_size: int,
                  eval_batch_size: int, length: int | None = None, measure: tuple = ()) -> float:
    """Compile the epoch program of `key` for these training arrays and an order of `length` images (all of them
    by default), and the evaluation program of the `measure` sets, unless done; return the seconds it took.

    Compiling ahead of time keeps the one-off compile out of every epoch's time (a run's warm-up).
    """
    started = time.perf_counter()
    program = _program(key, model, x, y, batch_size, eval_batch_size)
    length, index = length or len(y), jnp.asarray(np.zeros(1, np.int64)).dtype
    state = _state(model, program)
    if program.steps_apart:  # a step program for the full batches, and one for a smaller last batch
        for size in {min(batch_size, length), length % batch_size} - {0}:
            program.compile("step", (state, x, y, jax.ShapeDtypeStruct((size,), index)))
    else:
        program.compile("epoch", (state, x, y, jax.ShapeDtypeStruct((length,), index)))
    if measure:
        program.compile("evaluate", _evaluation_args(state, measure))
    return time.perf_counter() - started


def train_epoch(key: Hashable, model: keras.Model, x: jax.Array, y: jax.Array, order: np.ndarray,
                batch_size: int, eval_batch_size: int, measure: tuple = ()) -> tuple[dict, float, list[dict]]:
    """Train `model` one epoch (or part of one) on x[order], y[order], then evaluate its new weights on each
    device-resident (x, y) of `measure`; return the epoch's mean loss and metrics, the seconds of its training
    alone, and the logs of each evaluation.

    `key` names the model's structure: runs with the same key share one compiled program. The evaluation
    starts once the epoch's logs are back (they time the training) and reads its state on the device.
    """
    program = _program(key, model, x, y, batch_size, eval_batch_size)
    start = _state(model, program)
    started = time.perf_counter()
    if program.steps_apart:
        logs, state = program.steps(start, x, y, order)
    else:
        args = (start, x, y, jnp.asarray(order))
        logs, state = program.compile("epoch", args)(*args)
    logs = _as_floats(logs)  # waits for the epoch
    seconds = time.perf_counter() - started
    measured = []
    if measure:
        evaluation = _evaluation_args((*state[:3], start[3]), measure)  # the epoch's fresh metrics, unused by it
        measured = [_as_floats(each) for each in program.compile("evaluate", evaluation)(*evaluation)]
    _store_state(model, state)
    return logs, seconds, measured


def device_sets(sets: list[tuple[np.ndarray, np.ndarray]]) -> tuple:
    """Return (x, y) sets as device arrays, to evaluate every epoch without copying them each time."""
    return tuple((jax.device_put(x), jax.device_put(y)) for x, y in sets)


def evaluate(key: Hashable, model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int,
             eval_batch_size: int) -> dict:
    """Return `model`'s inference-mode loss and metrics on x, y (the same bits as Keras' evaluate)."""
    program = _program(key, model, x, y, batch_size, eval_batch_size)
    args = _evaluation_args(_state(model, program), device_sets([(x, y)]))
    return _as_floats(program.compile("evaluate", args)(*args)[0])
