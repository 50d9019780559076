"""regbench.compare called again and again in one process, as a notebook or a script's loop calls it (run by speed.py).

Usage: python benchmarks/warm.py MNIST_NPZ BACKEND JOBS EPOCHS CALLS -> prints one JSON line last: each call's wall
seconds.

Every call compares dropout with the baseline on seed 0 (2 runs of EPOCHS epochs) into a new store, so that both
runs train each time, and reads the summary (the statistics); nothing is written.
"""

import json
import sys
import tempfile
import time

started = time.perf_counter()
import regbench  # noqa: E402

path, backend, jobs, epochs, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
walls = []
with tempfile.TemporaryDirectory() as scratch:
    for call in range(calls):
        began = time.perf_counter()
        comparison = regbench.compare("dropout", seed_list=[0], epochs=epochs, data=path, backend=backend,
                                      jobs=jobs, store=f"{scratch}/{call}.sqlite", verbose=False)
        assert len(comparison.summary) == 2
        walls.append(time.perf_counter() - began)
print(json.dumps({"walls": walls, "process": time.perf_counter() - started,
                  "baseline_test_accuracy": float(comparison.summary["test_accuracy_mean"].iloc[0])}))
