"""Make regbench/known_images/NAME.npy: the sampled image hashes by which regbench recognises each registered
dataset's images in any file (data.identify), and print each full file's content fingerprint for the registry.

Usage: python tests/data/make_known_images.py mnist PATH/TO/mnist.npz fashion-mnist PATH/TO/fashion-mnist/
"""

import sys
from pathlib import Path

import numpy as np

from regbench.data import HASH_SAMPLE, KNOWN_IMAGES, content_fingerprint, image_hashes, read_arrays


def main(pairs: list[str]) -> None:
    """Write one hash file per (dataset, path) pair."""
    for name, source in zip(pairs[::2], pairs[1::2]):
        arrays = read_arrays(Path(source))
        hashes = image_hashes(np.concatenate([arrays["x_train"], arrays["x_test"]]))
        sample = np.unique(hashes[hashes % HASH_SAMPLE == 0])
        target = KNOWN_IMAGES / f"{name}.npy"
        np.save(target, sample)
        print(f"{name}: fingerprint {content_fingerprint(arrays)}; wrote {target} ({len(sample):,} of {len(hashes):,} "
              f"image hashes)")


if __name__ == "__main__":
    main(sys.argv[1:])
