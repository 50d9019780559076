"""Make tests/data/fashion-mnist-small/: a stratified real subset of the full Fashion-MNIST, as a directory of
gzipped idx files in Keras' layout (so that the tests read that layout too).

Usage: python tests/data/make_fashion_small.py PATH/TO/fashion-mnist/
"""

import gzip
import sys
from pathlib import Path

import numpy as np

from regbench.data import IDX_FILES, read_images, stratified_indices

TRAIN_IMAGES = 3_000  # -> 500 validation (a sixth) and 2,500 training images
TEST_IMAGES = 500
SEED = 7


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array in the idx format: magic 0x0000080N, N big-endian dimensions, the bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(size.to_bytes(4, "big") for size in array.shape)
    return header + array.astype(np.uint8).tobytes()


def main(source: str) -> None:
    """Write the subset beside this script."""
    images = read_images(Path(source), "fashion-mnist")
    rng = np.random.default_rng(SEED)
    train = stratified_indices(images.y_train, TRAIN_IMAGES, rng)
    test = stratified_indices(images.y_test, TEST_IMAGES, rng)
    target = Path(__file__).with_name("fashion-mnist-small")
    target.mkdir(exist_ok=True)
    parts = {"x_train": images.x_train[train], "y_train": images.y_train[train],
             "x_test": images.x_test[test], "y_test": images.y_test[test]}
    for key, name in IDX_FILES.items():
        (target / name).write_bytes(gzip.compress(idx_bytes(parts[key]), mtime=0))
    size = sum(path.stat().st_size for path in target.iterdir())
    print(f"wrote {target} ({size:,} bytes) from {source}")


if __name__ == "__main__":
    main(sys.argv[1])
