"""Run by test_cpu_counts.py in a process limited to some CPUs: train a binding max-norm run, print its numbers."""

import hashlib
import json
import sys
from pathlib import Path

from regbench.backend import select_backend

select_backend(sys.argv[1], "cpu")  # as every regbench process does, before Keras starts

import numpy as np  # noqa: E402
from helpers import config_for  # noqa: E402

from regbench.data import read_images, split_images  # noqa: E402
from regbench.train import train_run  # noqa: E402

images = read_images(Path(sys.argv[2]))
config = config_for("max-norm", {"c": 0.5}, train_size=500, backend=sys.argv[1], data=images.fingerprint)
result = train_run(config, split_images(images, train_size=500))
weights = hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in result.model.get_weights())).hexdigest()
print(json.dumps({"weights": weights, **{key: result.record[key] for key in (
    "test_crossentropy", "weights_l2", "cpus", "compute_threads", "versions")}}))
