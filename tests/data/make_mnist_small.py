"""Make tests/data/mnist-small.npz: a stratified real subset of the full MNIST file.

Usage: python tests/data/make_mnist_small.py PATH/TO/mnist.npz
"""

import sys
from pathlib import Path

import numpy as np

from regbench.data import read_images, stratified_indices

TRAIN_IMAGES = 3_000  # -> 500 validation (a sixth) and 2,500 training images
TEST_IMAGES = 500
SEED = 7


def main(source: str) -> None:
    """Write the subset beside this script."""
    images = read_images(Path(source))
    rng = np.random.default_rng(SEED)
    train = stratified_indices(images.y_train, TRAIN_IMAGES, rng)
    test = stratified_indices(images.y_test, TEST_IMAGES, rng)
    target = Path(__file__).with_name("mnist-small.npz")
    np.savez_compressed(
        target,
        x_train=images.x_train[train], y_train=images.y_train[train],
        x_test=images.x_test[test], y_test=images.y_test[test],
    )
    print(f"wrote {target} ({target.stat().st_size:,} bytes) from {source}")


if __name__ == "__main__":
    main(sys.argv[1])
