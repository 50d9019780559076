"""Load, validate, split and subset MNIST (the only module that reads data)."""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from regbench.errors import UsageError

EXPECTED_KEYS = ("x_train", "y_train", "x_test", "y_test")
VALIDATION_SIZE = 10_000  # images held out of the 60k training set
DATA_SEED = 20_240_601  # fixes the validation split and every --train-size subset
PLANTED_ROW = 0  # the image row that planted features overwrite
PLANTED_INTENSITY = 1.0  # a planted pixel is lit as brightly as a stroke of a digit
MONITOR_SIZE = 10_000  # training images evaluated in inference mode after every epoch
MIN_TRAIN_SIZE = 100
MAX_TRAIN_SIZE = 50_000
KERAS_CACHE = Path("~/.keras/datasets/mnist.npz")


@dataclass(frozen=True)
class Mnist:
    """MNIST as loaded: uint8 images (N, 28, 28) and uint8 labels, plus where it came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str  # path (or 'keras download') the arrays came from
    fingerprint: str  # sha256 of the arrays' bytes; part of every run's identity


@dataclass(frozen=True)
class Split:
    """The protocol's three sets, as float32 images in [0, 1] and int32 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_monitor: np.ndarray  # training images evaluated after each epoch (all, or a stratified 10k)
    y_monitor: np.ndarray


def validate_arrays(arrays: dict, source: str) -> None:
    """Raise UsageError naming `source` unless `arrays` hold MNIST in Keras' layout."""
    missing = [key for key in EXPECTED_KEYS if key not in arrays]
    if missing:
        raise UsageError(
            f"{source}: missing key(s) {', '.join(missing)}; expected {', '.join(EXPECTED_KEYS)}"
        )
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.ndim != 3 or x.shape[1:] != (28, 28) or len(x) == 0:
            raise UsageError(f"{source}: x_{part} has shape {x.shape}; expected (N, 28, 28) with N > 0")
        if x.dtype != np.uint8:
            raise UsageError(f"{source}: x_{part} has dtype {x.dtype}; expected uint8 pixels 0..255")
        if y.ndim != 1 or len(y) != len(x):
            raise UsageError(
                f"{source}: y_{part} has shape {y.shape}; expected ({len(x)},) to match x_{part}"
            )
        if not np.issubdtype(y.dtype, np.integer) or len(y) and (y.min() < 0 or y.max() > 9):
            raise UsageError(f"{source}: y_{part} must hold integer labels 0..9")
    least = MIN_TRAIN_SIZE + -(-MIN_TRAIN_SIZE // 5)  # 100 to train on, a sixth of the file held out
    if len(arrays["x_train"]) < least:
        raise UsageError(f"{source}: x_train has {len(arrays['x_train'])} images; regbench needs at least {least} "
                         f"({MIN_TRAIN_SIZE} to train on and a sixth held out for validation)")


def read_npz(path: Path) -> Mnist:
    """Read and validate an mnist.npz file; every problem becomes a UsageError naming the file."""
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if path.is_dir():
        raise UsageError(f"{path}: is a directory; expected an mnist.npz file")
    kind = _file_kind(path)
    if kind != "zip":
        raise UsageError(f"{path}: {kind}, not an .npz archive; expected an mnist.npz in Keras' layout")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise UsageError(f"{path}: not a readable .npz file ({error})") from None
    validate_arrays(arrays, str(path))
    return _mnist_from_arrays(arrays, str(path))


_MAGIC = [(b"PK\x03\x04", "zip"), (b"PK\x05\x06", "an empty zip archive"), (b"\x1f\x8b", "a gzip file"),
          (b"\x93NUMPY", "a single .npy array"), (b"\x80", "a Python pickle"), (b"SQLite format 3", "an SQLite database"),
          (b"BZh", "a bzip2 file"), (b"\xfd7zXZ", "an xz file")]


def _file_kind(path: Path) -> str:
    """Name what kind of file `path` is from its first bytes ('zip' for an .npz)."""
    try:
        with open(path, "rb") as file:
            head = file.read(16)
    except OSError as error:
        raise UsageError(f"{path}: cannot be read ({error.strerror})") from None
    if not head:
        return "an empty file"
    kind = next((name for magic, name in _MAGIC if head.startswith(magic)), None)
    return kind or ("a text file" if head.isascii() else "a file of unknown format")


def _mnist_from_arrays(arrays: dict, source: str) -> Mnist:
    """Wrap validated arrays, fingerprinting their contents."""
    digest = hashlib.sha256()
    for key in EXPECTED_KEYS:
        digest.update(np.ascontiguousarray(arrays[key]).tobytes())
    return Mnist(
        *(np.asarray(arrays[key]) for key in EXPECTED_KEYS),
        source=source,
        fingerprint=digest.hexdigest()[:16],
    )


def _download_with_keras() -> Mnist:
    """Fetch MNIST through keras.datasets (needs internet)."""
    import keras

    (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    arrays = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    validate_arrays(arrays, "keras.datasets.mnist.load_data()")
    return _mnist_from_arrays(arrays, "keras.datasets.mnist.load_data()")


def load_mnist(path: str | os.PathLike | None = None) -> Mnist:
    """Find and load MNIST: `path`, then $REGBENCH_DATA, then Keras' cache, then a download.

    An explicit path or $REGBENCH_DATA that is broken is an error at once (the user
    asked for that file). Keras' cache is used only if its content is valid. The
    download is skipped when $REGBENCH_OFFLINE is set (tests set it).
    """
    if path is not None:
        return read_npz(Path(path).expanduser())
    if os.environ.get("REGBENCH_DATA"):
        return read_npz(Path(os.environ["REGBENCH_DATA"]).expanduser())
    tried = ["--data PATH (not given)", "$REGBENCH_DATA (not set)"]
    cache = KERAS_CACHE.expanduser()
    try:
        return read_npz(cache)
    except UsageError as error:
        tried.append(f"{cache} ({str(error).removeprefix(str(cache) + ': ')})")
    if os.environ.get("REGBENCH_OFFLINE"):
        tried.append("download (skipped: $REGBENCH_OFFLINE is set)")
    else:
        try:
            return _download_with_keras()
        except Exception as error:  # any network or keras failure ends the search
            tried.append(f"keras.datasets.mnist.load_data() ({type(error).__name__}: {error})")
    raise UsageError(
        "MNIST not found; tried " + "; ".join(tried)
        + ". Pass --data PATH or set REGBENCH_DATA to an mnist.npz in Keras' layout"
    )


def stratified_indices(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Pick `size` indices whose class shares match `labels`' (largest remainders), sorted."""
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * size / len(labels)
    per_class = np.floor(exact).astype(int)
    shortfall = size - per_class.sum()
    per_class[np.argsort(-(exact - per_class), kind="stable")[:shortfall]] += 1
    chosen = [
        rng.choice(np.flatnonzero(labels == cls), take, replace=False)
        for cls, take in zip(classes, per_class)
    ]
    return np.sort(np.concatenate(chosen))


def validation_size(n_train_images: int) -> int:
    """Return how many training images the protocol holds out: 10,000 of 60k (a sixth of a smaller file)."""
    return min(VALIDATION_SIZE, n_train_images // 6)


def training_size(mnist: Mnist, train_size: int | None) -> int:
    """Return how many images a split of `mnist` trains on (`train_size`, or all not held out); raise
    UsageError for a size the file cannot give."""
    available = len(mnist.y_train) - validation_size(len(mnist.y_train))
    if train_size is not None and not MIN_TRAIN_SIZE <= train_size <= available:
        raise UsageError(f"--train-size {train_size} is out of range; allowed {MIN_TRAIN_SIZE}..{available} "
                         f"for {mnist.source}")
    return available if train_size is None else train_size


def split_mnist(mnist: Mnist, train_size: int | None = None, draw: int | None = None, planted: int = 0) -> Split:
    """Hold out a stratified validation set, then take a stratified --train-size subset of the rest.

    `draw` (--resample-data: the run's seed) draws both from a stream of its own; None: the one fixed split.
    `planted` > 0 plants that many label-carrying pixels (see plant_features).
    """
    # 1. The validation split is fixed by DATA_SEED (and the draw) alone, so it never depends on train_size.
    rng = np.random.default_rng(DATA_SEED if draw is None else [DATA_SEED, 1, draw])
    val_index = stratified_indices(mnist.y_train, validation_size(len(mnist.y_train)), rng)
    rest = np.setdiff1d(np.arange(len(mnist.y_train)), val_index)
    # 2. The training subset comes from its own stream, so each size is one fixed subset.
    if training_size(mnist, train_size) != len(rest):
        subset_seed = [DATA_SEED, train_size] if draw is None else [DATA_SEED, 2, draw, train_size]
        subset_rng = np.random.default_rng(subset_seed)
        rest = rest[stratified_indices(mnist.y_train[rest], train_size, subset_rng)]
    monitor = rest[_monitor_index(mnist.y_train[rest])]
    split = Split(
        x_train=_as_float(mnist.x_train[rest]),
        y_train=mnist.y_train[rest].astype(np.int32),
        x_val=_as_float(mnist.x_train[val_index]),
        y_val=mnist.y_train[val_index].astype(np.int32),
        x_test=_as_float(mnist.x_test),
        y_test=mnist.y_test.astype(np.int32),
        x_monitor=_as_float(mnist.x_train[monitor]),
        y_monitor=mnist.y_train[monitor].astype(np.int32),
    )
    return plant_features(split, planted) if planted else split


def planted_pixels(features: int) -> tuple[int, slice]:
    """Return where planted features sit: the first `features` pixels of the top row (blank in every MNIST image)."""
    return PLANTED_ROW, slice(0, features)


def plant_features(split: Split, features: int) -> Split:
    """Return `split` with `features` planted pixels: in training images pixel k is lit when the label is k
    (modulo `features`), a shortcut that predicts the label; in validation and test images a pixel drawn at random
    is lit, noise. A model that leans on the shortcut grows large weights on those inputs and pays on test."""
    row, columns = planted_pixels(features)
    rng = np.random.default_rng([DATA_SEED, 3, features])

    def lit(images: np.ndarray, which: np.ndarray) -> np.ndarray:
        images = images.copy()
        images[:, row, columns] = PLANTED_INTENSITY * np.eye(features, dtype=np.float32)[which]
        return images

    return Split(x_train=lit(split.x_train, split.y_train % features), y_train=split.y_train,
                 x_val=lit(split.x_val, rng.integers(0, features, len(split.y_val))), y_val=split.y_val,
                 x_test=lit(split.x_test, rng.integers(0, features, len(split.y_test))), y_test=split.y_test,
                 x_monitor=lit(split.x_monitor, split.y_monitor % features), y_monitor=split.y_monitor)


class Splits:
    """The splits of one MNIST file by (training size, draw), each made once and kept for the runs that follow."""

    def __init__(self, mnist: Mnist):
        self.mnist = mnist
        self._made: dict[tuple, Split] = {}

    def get(self, train_size: int | None, draw: int | None = None, planted: int = 0) -> Split:
        """Return the split of `train_size` training images (all when None) for `draw`, with `planted` features
        (see split_mnist)."""
        if (train_size, draw, planted) not in self._made:
            self._made[train_size, draw, planted] = split_mnist(self.mnist, train_size, draw, planted)
        return self._made[train_size, draw, planted]


def save_split(split: Split, directory: Path) -> None:
    """Write `split` as one float32/int32 .npy file per array into `directory` (made atomically, kept if there)."""
    if directory.is_dir():
        return
    temp = directory.with_name(f".{directory.name}.{os.getpid()}.partial")
    temp.mkdir(parents=True)
    for name in Split.__dataclass_fields__:
        np.save(temp / f"{name}.npy", getattr(split, name))
    try:
        os.rename(temp, directory)
    except OSError:  # another process placed it first: the same arrays
        shutil.rmtree(temp)


def load_split(directory: Path) -> Split:
    """Map a split written by save_split read-only into memory: processes on one host share its pages."""
    return Split(**{name: np.load(directory / f"{name}.npy", mmap_mode="r") for name in Split.__dataclass_fields__})


def _monitor_index(labels: np.ndarray) -> np.ndarray:
    """Return the training rows evaluated every epoch: all of them, or a fixed stratified 10k."""
    if len(labels) <= MONITOR_SIZE:
        return np.arange(len(labels))
    return stratified_indices(labels, MONITOR_SIZE, np.random.default_rng([DATA_SEED, len(labels)]))


def _as_float(images: np.ndarray) -> np.ndarray:
    """Scale uint8 pixels to float32 in [0, 1]."""
    return images.astype(np.float32) / np.float32(255.0)
