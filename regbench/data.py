"""The dataset registry; load, validate, identify, split and subset a dataset's images (the only module that reads
data)."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import json
import math
import os
import shutil
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
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
KERAS_CACHE = Path("~/.keras/datasets")
KNOWN_IMAGES = Path(__file__).with_name("known_images")  # a sample of each dataset's image hashes (see image_hashes)
HASH_SAMPLE = 8  # known_images keeps the hashes divisible by this: about one image in eight
SUBSET_SHARE = 0.9  # a file whose sampled images are at least this share one dataset's is a subset of it
READ_FILES = Path("~/.cache/regbench/images")  # what each data file held (fingerprint, content), by path and stat
IDX_FILES = {"x_train": "train-images-idx3-ubyte.gz", "y_train": "train-labels-idx1-ubyte.gz",
             "x_test": "t10k-images-idx3-ubyte.gz", "y_test": "t10k-labels-idx1-ubyte.gz"}  # Keras' directory layout


@dataclass(frozen=True)
class Dataset:
    """A registered dataset: its images' shape and classes, where Keras keeps it, and its known content."""

    name: str  # --dataset
    title: str  # how reports and figures name it
    image_shape: tuple[int, int]  # height, width (one channel)
    classes: int
    class_names: tuple[str, ...]
    cache: str  # Keras' cache under ~/.keras/datasets: an .npz file or a directory of idx files
    fingerprint: str  # the content fingerprint (Images.fingerprint) of the full, published dataset
    keras_loader: str | None  # the keras.datasets module that downloads it (None: Keras has none)
    credit: str

    def load_with_keras(self) -> dict:
        """Fetch the dataset through keras.datasets (needs internet unless Keras has it cached), with what Keras and
        its backend print on the way silenced: a failure is then one line, and a success says so in one."""
        from regbench.backend import native_stderr_silenced

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        with native_stderr_silenced(), contextlib.redirect_stdout(io.StringIO()):
            import keras

            (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, str(self.keras_loader)).load_data()
        print(f"{self.title}: downloaded through keras.datasets into {KERAS_CACHE}", file=sys.stderr)
        return dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


DATASETS = {dataset.name: dataset for dataset in (
    Dataset("mnist", "MNIST", (28, 28), 10, tuple("0123456789"), "mnist.npz", "06b0d1f124c4e5fa", "mnist",
            "Yann LeCun, Corinna Cortes and Christopher J.C. Burges, CC BY-SA 3.0"),
    Dataset("fashion-mnist", "Fashion-MNIST", (28, 28), 10,
            ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
            "fashion-mnist", "ca3ab2a37f845e1b", "fashion_mnist",
            "Han Xiao, Kashif Rasul and Roland Vollgraf (Zalando Research, 2017), MIT licence"),
)}
DEFAULT_DATASET = "mnist"


def get_dataset(name: str) -> Dataset:
    """Look a dataset up by name; a miss raises UsageError listing the registered ones."""
    if name not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    return DATASETS[name]


@dataclass(frozen=True)
class Images:
    """A dataset's images: uint8 images (N, H, W) and uint8 labels (read when first used: a file read before is
    known by its stat), where they came from, and what they are."""

    source: str  # path (or Keras' loader) the arrays came from
    fingerprint: str  # sha256 of the arrays' bytes; part of every run's identity
    read: Callable[[], dict] = field(repr=False, compare=False)  # the four arrays (picklable: sent to Dask workers)
    train_images: int  # len(y_train)
    dataset: str = DEFAULT_DATASET  # the registered dataset they are used as
    content: str = ""  # what the content check found: the dataset's title, 'a subset of ...', or an unknown file

    @functools.cached_property
    def arrays(self) -> dict:
        """The four arrays, read on first use."""
        return self.read()

    x_train = property(lambda self: self.arrays["x_train"])
    y_train = property(lambda self: self.arrays["y_train"])
    x_test = property(lambda self: self.arrays["x_test"])
    y_test = property(lambda self: self.arrays["y_test"])

    def __getstate__(self) -> dict:
        """Pickle the arrays too (a Dask worker sent the images may not reach their file)."""
        return {**self.__dict__, "arrays": self.arrays}

    @property
    def description(self) -> str:
        """Name the data for reports: 'MNIST', 'a subset of MNIST (3,500 images, ...)', or the unknown file's name."""
        return self.content or get_dataset(self.dataset).title

    def record(self) -> dict:
        """Return what a manifest records of the data: dataset, its title, what the content is, source, fingerprint."""
        return {"dataset": self.dataset, "title": get_dataset(self.dataset).title, "content": self.description,
                "source": self.source, "fingerprint": self.fingerprint}


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


def validate_arrays(arrays: dict, source: str, dataset: Dataset) -> None:
    """Raise UsageError naming `source` unless `arrays` hold images of `dataset`'s shape and classes in Keras'
    layout."""
    missing = [key for key in EXPECTED_KEYS if key not in arrays]
    if missing:
        raise UsageError(
            f"{source}: missing key(s) {', '.join(missing)}; expected {', '.join(EXPECTED_KEYS)}"
        )
    shape = "(N, " + ", ".join(map(str, dataset.image_shape)) + ")"
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.ndim != 3 or x.shape[1:] != dataset.image_shape or len(x) == 0:
            raise UsageError(f"{source}: x_{part} has shape {x.shape}; expected {shape} with N > 0 for {dataset.title}")
        if x.dtype != np.uint8:
            raise UsageError(f"{source}: x_{part} has dtype {x.dtype}; expected uint8 pixels 0..255")
        if y.ndim != 1 or len(y) != len(x):
            raise UsageError(
                f"{source}: y_{part} has shape {y.shape}; expected ({len(x)},) to match x_{part}"
            )
        if not np.issubdtype(y.dtype, np.integer):
            raise UsageError(f"{source}: y_{part} has dtype {y.dtype}; expected integer labels "
                             f"0..{dataset.classes - 1}")
        if y.min() < 0 or y.max() >= dataset.classes:
            raise UsageError(f"{source}: y_{part} holds labels {_label_counts(y)}; {dataset.title} has labels "
                             f"0..{dataset.classes - 1}")
    least = MIN_TRAIN_SIZE + -(-MIN_TRAIN_SIZE // 5)  # 100 to train on, a sixth of the file held out
    if len(arrays["x_train"]) < least:
        raise UsageError(f"{source}: x_train has {len(arrays['x_train'])} images; regbench needs at least {least} "
                         f"({MIN_TRAIN_SIZE} to train on and a sixth held out for validation)")
    absent = sorted(set(range(dataset.classes)) - set(np.unique(arrays["y_train"]).tolist()))
    if absent:
        raise UsageError(f"{source}: y_train holds labels {_label_counts(arrays['y_train'])}, none of class(es) "
                         f"{', '.join(map(str, absent))}; training needs images of all {dataset.classes} classes")


def _label_counts(labels: np.ndarray) -> str:
    """Write the labels found with their counts, e.g. '3 (x500), 12 (x2)'."""
    values, counts = np.unique(labels, return_counts=True)
    return ", ".join(f"{value} (x{count})" for value, count in zip(values.tolist(), counts.tolist()))


def read_arrays(path: Path) -> dict:
    """Read the four arrays of an .npz file or of a directory of idx files in Keras' layout (UsageError naming
    the path for every problem)."""
    if not path.exists():
        raise UsageError(f"{path}: no such file or directory")
    if path.is_dir():
        return _read_idx_directory(path)
    kind = _file_kind(path)
    if kind != "zip":
        raise UsageError(f"{path}: {kind}, not an .npz archive; expected an .npz in Keras' layout (as mnist.npz) or "
                         "a directory of idx files (as Keras' fashion-mnist/)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise UsageError(f"{path}: not a readable .npz file ({error})") from None


def _read_idx_directory(directory: Path) -> dict:
    """Read the four gzipped idx files of `directory` (Keras' fashion-mnist/ layout) into arrays."""
    missing = [name for name in IDX_FILES.values() if not (directory / name).is_file()]
    if missing:
        raise UsageError(f"{directory}: is a directory without {', '.join(missing)}; expected an .npz file or a "
                         f"directory of the four idx files {', '.join(IDX_FILES.values())}")
    arrays = {}
    for key, name in IDX_FILES.items():
        path = directory / name
        try:
            raw = gzip.decompress(path.read_bytes())
        except (OSError, EOFError, gzip.BadGzipFile) as error:
            raise UsageError(f"{path}: not a readable gzip file ({error})") from None
        dims = 3 if key.startswith("x") else 1
        header = 4 + 4 * dims
        if len(raw) < header or raw[:4] != bytes([0, 0, 8, dims]):
            raise UsageError(f"{path}: not an idx file of uint8 {'images' if dims == 3 else 'labels'} "
                             f"(magic {raw[:4].hex() or 'missing'}, expected 0000080{dims})")
        shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
        if len(raw) - header != math.prod(shape):
            raise UsageError(f"{path}: holds {len(raw) - header:,} bytes after its header; its header says {shape}")
        arrays[key] = np.frombuffer(raw, np.uint8, offset=header).reshape(shape)
    return arrays


HELD_FILES = 2  # data files a process keeps loaded for its next comparison (a notebook's, a script's loop)
_HELD: dict[tuple, Images] = {}  # by path as given and absolute, dataset and the file's stat


def read_images(path: Path, dataset: str = DEFAULT_DATASET) -> Images:
    """Read, validate and identify the images of `dataset` at `path` (an .npz file or an idx directory).

    A file read before and unchanged since (the same size, modification and change times, inode and device, as
    git's index trusts) is not read again until its arrays are used; then its content must still have the
    fingerprint found before.
    """
    spec = get_dataset(dataset)
    known = _read_before(path, dataset)
    if known is not None:
        return Images(str(path), known["fingerprint"], functools.partial(_read_again, path, spec, known["fingerprint"]),
                      known["train_images"], dataset, known["content"])
    arrays = read_arrays(path)
    validate_arrays(arrays, str(path), spec)
    images = identify(_images_from_arrays(arrays, str(path), dataset))
    _remember(path, images)
    return images


def _held_images(path: Path, dataset: str) -> Images:
    """Return read_images(path, dataset), the same Images (its arrays loaded once) while this process's comparisons
    read the same unchanged file: a notebook's or a script's next comparison does not read it again."""
    held = (str(path), str(path.absolute()), dataset, repr(_file_stat(path)))
    if held not in _HELD:
        _HELD[held] = read_images(path, dataset)
        while len(_HELD) > HELD_FILES:
            _HELD.pop(next(iter(_HELD)))
    return _HELD[held]


def _read_again(path: Path, spec: Dataset, fingerprint: str) -> dict:
    """Read the arrays of a file known from before; raise UsageError if its content is no longer what it was."""
    arrays = read_arrays(path)
    validate_arrays(arrays, str(path), spec)
    now = content_fingerprint(arrays)
    if now != fingerprint:
        _record_path(path, spec.name).unlink(missing_ok=True)
        raise UsageError(f"{path}: its content changed since it was first read (content fingerprint {now}, not "
                         f"{fingerprint}); run the command again")
    return arrays


def _file_stat(path: Path) -> list | None:
    """Return what tells whether the file (or each idx file of the directory) changed, or None if one is missing."""
    try:
        files = [path / name for name in IDX_FILES.values()] if path.is_dir() else [path]
        return [[each.st_size, each.st_mtime_ns, each.st_ctime_ns, each.st_ino, each.st_dev]
                for each in map(os.stat, files)]
    except OSError:
        return None


def _record_path(path: Path, dataset: str) -> Path:
    """Return where what `path` held as `dataset` is remembered."""
    key = hashlib.sha256(f"{path.resolve()}\0{dataset}".encode()).hexdigest()[:16]
    return READ_FILES.expanduser() / f"{key}.json"


def _read_before(path: Path, dataset: str) -> dict | None:
    """Return what `path` held when read before as `dataset`, if it has not changed since (else None)."""
    try:
        known = json.loads(_record_path(path, dataset).read_text())
    except (OSError, ValueError):
        return None
    return known if known.get("stat") == _file_stat(path) and known.get("path") == str(path.resolve()) else None


def _remember(path: Path, images: Images) -> None:
    """Remember what `path` held (written whole or not at all; a home that cannot be written keeps nothing)."""
    stat = _file_stat(path)
    if stat is None:
        return
    record = _record_path(path, images.dataset)
    text = json.dumps({"path": str(path.resolve()), "stat": stat, "fingerprint": images.fingerprint,
                       "train_images": images.train_images, "content": images.content})
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        partial = record.with_name(f".{record.name}.{os.getpid()}.partial")
        partial.write_text(text)
        os.replace(partial, record)
    except OSError:
        pass


_MAGIC = [(b"PK\x03\x04", "zip"), (b"PK\x05\x06", "an empty zip archive"), (b"\x1f\x8b", "a gzip file"),
          (b"\x93NUMPY", "a single .npy array"), (b"\x80", "a Python pickle"),
          (b"SQLite format 3", "an SQLite database"), (b"BZh", "a bzip2 file"), (b"\xfd7zXZ", "an xz file")]


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


def content_fingerprint(arrays: dict) -> str:
    """Return the first 16 hex digits of the sha256 of the four arrays' bytes, in Keras' key order."""
    digest = hashlib.sha256()
    for key in EXPECTED_KEYS:
        digest.update(np.ascontiguousarray(arrays[key]).tobytes())
    return digest.hexdigest()[:16]


def _images_from_arrays(arrays: dict, source: str, dataset: str) -> Images:
    """Wrap validated arrays, fingerprinting their contents."""
    arrays = {key: np.asarray(arrays[key]) for key in EXPECTED_KEYS}
    return Images(source, content_fingerprint(arrays), functools.partial(dict, arrays), len(arrays["y_train"]),
                  dataset)


def image_hashes(images: np.ndarray) -> np.ndarray:
    """Return a 64-bit hash of every image's pixels (blake2b), to recognise a dataset's images in any file."""
    return np.array([int.from_bytes(hashlib.blake2b(image.tobytes(), digest_size=8).digest(), "little")
                     for image in np.ascontiguousarray(images)], dtype=np.uint64)


def known_hashes(dataset: str) -> np.ndarray:
    """Return the stored sample of `dataset`'s image hashes (those divisible by HASH_SAMPLE), sorted."""
    return np.load(KNOWN_IMAGES / f"{dataset}.npy")


def identify(images: Images) -> Images:
    """Check that the content is the dataset it is used as: the full published file (its fingerprint), a subset of
    its images, or a file that is neither dataset (accepted, and named so). A file of another registered dataset's
    images is a UsageError."""
    spec = get_dataset(images.dataset)
    if images.fingerprint == spec.fingerprint:
        return replace(images, content=spec.title)
    for other in DATASETS.values():
        if other.name != images.dataset and images.fingerprint == other.fingerprint:
            raise _wrong_dataset(images, other, "is")
    hashes = image_hashes(np.concatenate([images.x_train, images.x_test]))
    sampled = hashes[hashes % HASH_SAMPLE == 0]
    count = f"{len(hashes):,} images"
    for other in DATASETS.values():
        share = np.isin(sampled, known_hashes(other.name)).mean() if len(sampled) else 0.0
        if share >= SUBSET_SHARE:
            if other.name != images.dataset:
                raise _wrong_dataset(images, other, "holds images of")
            return replace(images, content=f"a subset of {spec.title} ({count}, fingerprint {images.fingerprint})")
    return replace(images, content=f"{Path(images.source).name}: not the published {spec.title} nor a subset of a "
                                   f"registered dataset ({count}, fingerprint {images.fingerprint})")


def _wrong_dataset(images: Images, other: Dataset, what: str) -> UsageError:
    """Say that `images` are another registered dataset's, not the one asked for."""
    asked = get_dataset(images.dataset)
    return UsageError(f"{images.source} {what} {other.title}, not {asked.title} (content fingerprint "
                      f"{images.fingerprint}); pass --dataset {other.name}, or --data with {asked.title}")


def load_images(dataset: str = DEFAULT_DATASET, path: str | os.PathLike | None = None) -> Images:
    """Find and load `dataset`: `path`, then $REGBENCH_DATA, then Keras' cache, then Keras' loader.

    An explicit path or $REGBENCH_DATA that is broken (or holds another dataset) is an error at once (the user
    asked for that file). Keras' cache is used only if its content is valid. Keras' loader is skipped when
    $REGBENCH_OFFLINE is set (tests set it).
    """
    spec = get_dataset(dataset)
    if path is not None:
        return _held_images(Path(path).expanduser(), dataset)
    if os.environ.get("REGBENCH_DATA"):
        return _held_images(Path(os.environ["REGBENCH_DATA"]).expanduser(), dataset)
    tried = ["--data PATH (not given)", "$REGBENCH_DATA (not set)"]
    cache = (KERAS_CACHE / spec.cache).expanduser()
    try:
        return _held_images(cache, dataset)
    except UsageError as error:
        tried.append(f"{cache} ({str(error).removeprefix(str(cache) + ': ')})")
    loader = f"keras.datasets.{spec.keras_loader}.load_data()"
    if spec.keras_loader is None:
        tried.append("Keras' loader (keras.datasets has none for it)")
    elif os.environ.get("REGBENCH_OFFLINE"):
        tried.append(f"{loader} (skipped: $REGBENCH_OFFLINE is set)")
    else:
        try:
            arrays = spec.load_with_keras()
            validate_arrays(arrays, loader, spec)
            return identify(_images_from_arrays(arrays, loader, dataset))
        except UsageError:
            raise
        except Exception as error:  # any network or keras failure ends the search
            tried.append(f"{loader} ({type(error).__name__}: {error})")
    raise UsageError(
        f"{spec.title} not found; tried " + "; ".join(tried)
        + f". Pass --data PATH or set REGBENCH_DATA to {spec.title} as an .npz in Keras' layout or a directory of "
        "its idx files"
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


def training_size(images: Images, train_size: int | None) -> int:
    """Return how many images a split of `images` trains on (`train_size`, or all not held out); raise
    UsageError for a size the file cannot give."""
    available = images.train_images - validation_size(images.train_images)
    if train_size is not None and not MIN_TRAIN_SIZE <= train_size <= available:
        raise UsageError(f"--train-size {train_size} is out of range; allowed {MIN_TRAIN_SIZE}..{available} "
                         f"for {images.source}")
    return available if train_size is None else train_size


def split_images(images: Images, train_size: int | None = None, draw: int | None = None, planted: int = 0) -> Split:
    """Hold out a stratified validation set, then take a stratified --train-size subset of the rest.

    `draw` (--resample-data: the run's seed) draws both from a stream of its own; None: the one fixed split.
    `planted` > 0 plants that many label-carrying pixels (see plant_features).
    """
    # 1. The validation split is fixed by DATA_SEED (and the draw) alone, so it never depends on train_size.
    rng = np.random.default_rng(DATA_SEED if draw is None else [DATA_SEED, 1, draw])
    val_index = stratified_indices(images.y_train, validation_size(len(images.y_train)), rng)
    rest = np.setdiff1d(np.arange(len(images.y_train)), val_index)
    # 2. The training subset comes from its own stream, so each size is one fixed subset.
    if training_size(images, train_size) != len(rest):
        assert train_size is not None  # None trains on every image not held out
        subset_seed = [DATA_SEED, train_size] if draw is None else [DATA_SEED, 2, draw, train_size]
        subset_rng = np.random.default_rng(subset_seed)
        rest = rest[stratified_indices(images.y_train[rest], train_size, subset_rng)]
    monitor = rest[_monitor_index(images.y_train[rest])]
    split = Split(
        x_train=_as_float(images.x_train[rest]),
        y_train=images.y_train[rest].astype(np.int32),
        x_val=_as_float(images.x_train[val_index]),
        y_val=images.y_train[val_index].astype(np.int32),
        x_test=_as_float(images.x_test),
        y_test=images.y_test.astype(np.int32),
        x_monitor=_as_float(images.x_train[monitor]),
        y_monitor=images.y_train[monitor].astype(np.int32),
    )
    return plant_features(split, planted) if planted else split


def planted_pixels(features: int) -> tuple[int, slice]:
    """Return where planted features sit: the first `features` pixels of the top row (blank in every MNIST image)."""
    return PLANTED_ROW, slice(0, features)


def plant_features(split: Split, features: int) -> Split:
    """Return `split` with `features` planted pixels: in training images pixel k is lit when the label is k
    (modulo `features`), a shortcut that predicts the label; in test images a pixel drawn at random is lit, noise. A
    model that leans on the shortcut grows large weights on those inputs and pays on test. Validation images keep
    the pixels blank, as every MNIST image has them: validation sees neither the shortcut nor the test set's noise,
    so a choice made on it cannot read how the test set punishes the shortcut."""
    row, columns = planted_pixels(features)
    rng = np.random.default_rng([DATA_SEED, 3, features])

    def lit(images: np.ndarray, which: np.ndarray) -> np.ndarray:
        images = images.copy()
        images[:, row, columns] = PLANTED_INTENSITY * np.eye(features, dtype=np.float32)[which]
        return images

    rng.integers(0, features, len(split.y_val))  # the draw validation's noise took before: test's noise stays as it was
    return Split(x_train=lit(split.x_train, split.y_train % features), y_train=split.y_train,
                 x_val=split.x_val, y_val=split.y_val,
                 x_test=lit(split.x_test, rng.integers(0, features, len(split.y_test))), y_test=split.y_test,
                 x_monitor=lit(split.x_monitor, split.y_monitor % features), y_monitor=split.y_monitor)


class Splits:
    """The splits of one MNIST file by (training size, draw), each made once and kept for the runs that follow."""

    def __init__(self, images: Images):
        self.images = images
        self._made: dict[tuple, Split] = {}

    @classmethod
    def of(cls, images: Images) -> Splits:
        """Return the splits of `images`, the same ones as this process's last comparison of them (kept warm)."""
        if _LAST_SPLITS and _LAST_SPLITS[0].images is images:
            return _LAST_SPLITS[0]
        _LAST_SPLITS[:] = [cls(images)]
        return _LAST_SPLITS[0]

    def get(self, train_size: int | None, draw: int | None = None, planted: int = 0) -> Split:
        """Return the split of `train_size` training images (all when None) for `draw`, with `planted` features
        (see split_images)."""
        if (train_size, draw, planted) not in self._made:
            self._made[train_size, draw, planted] = split_images(self.images, train_size, draw, planted)
        return self._made[train_size, draw, planted]


_LAST_SPLITS: list[Splits] = []  # the splits of the images last compared in this process


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
