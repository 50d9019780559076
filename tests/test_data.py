"""Data: validation of what was loaded, the look-up order, and the stratified split."""

import gzip
import json
import shutil

import numpy as np
import pytest
from conftest import SMALL_FASHION, SMALL_MNIST

from regbench.data import (
    DATA_SEED,
    DATASETS,
    IDX_FILES,
    get_dataset,
    load_images,
    read_images,
    split_images,
    stratified_indices,
    validation_size,
)
from regbench.errors import UsageError


def _write(path, **overrides):
    rng = np.random.default_rng(0)
    arrays = dict(
        x_train=rng.integers(0, 256, (120, 28, 28), dtype=np.uint8),  # the fewest regbench takes
        y_train=np.arange(120, dtype=np.uint8) % 10,
        x_test=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        y_test=np.arange(20, dtype=np.uint8) % 10,
    )
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_small_subset_is_real_mnist_in_keras_layout(images):
    assert images.x_train.shape == (3000, 28, 28) and images.x_train.dtype == np.uint8
    assert images.x_test.shape == (500, 28, 28)
    assert set(np.unique(images.y_train)) == set(range(10))
    assert images.x_train.max() == 255 and images.x_train.min() == 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"y_test": None}, "missing key(s) y_test"),
        ({"x_train": np.zeros((60, 28, 27), np.uint8)}, "x_train has shape (60, 28, 27)"),
        ({"x_test": np.zeros((20, 28, 28), np.float32)}, "x_test has dtype float32"),
        ({"y_train": np.full(120, 10, np.uint8)}, "y_train holds labels 10 (x120); MNIST has labels 0..9"),
        ({"y_test": np.arange(20, dtype=np.int16) - 1}, "y_test holds labels -1 (x1), 0 (x1), 1 (x1)"),
        ({"y_train": np.full(120, 3, np.uint8)}, "y_train holds labels 3 (x120), none of class(es) 0, 1, 2, 4, 5, 6, "
                                                 "7, 8, 9; training needs images of all 10 classes"),
        ({"y_train": np.arange(120, dtype=np.uint8) % 9}, "none of class(es) 9;"),
        ({"y_train": np.zeros(59, np.uint8)}, "y_train has shape (59,)"),
        ({"x_train": np.zeros((119, 28, 28), np.uint8), "y_train": np.zeros(119, np.uint8)},
         "x_train has 119 images; regbench needs at least 120"),
    ],
)
def test_wrong_contents_name_the_file_and_the_problem(tmp_path, overrides, message):
    path = _write(tmp_path / "bad.npz", **overrides)
    with pytest.raises(UsageError) as error:
        read_images(path)
    assert message in str(error.value) and str(path) in str(error.value)


def test_missing_truncated_and_non_npz_files_are_clear_errors(tmp_path):
    good = _write(tmp_path / "good.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:500])
    text = tmp_path / "text.npz"
    text.write_text("not an archive")
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    for path, message in [
        (tmp_path / "absent.npz", "no such file"),
        (truncated, "not a readable .npz"),
        (text, "a text file, not an .npz archive"),
        (empty, "an empty file, not an .npz archive"),
        (tmp_path, "is a directory without train-images-idx3-ubyte.gz"),
    ]:
        with pytest.raises(UsageError, match=message):
            read_images(path)


def test_lookup_prefers_explicit_path_then_env_then_keras_cache(tmp_path, monkeypatch):
    explicit = _write(tmp_path / "explicit.npz")
    env = _write(tmp_path / "env.npz")
    cache = tmp_path / "home" / ".keras" / "datasets" / "mnist.npz"
    cache.parent.mkdir(parents=True)
    _write(cache)
    monkeypatch.setenv("REGBENCH_DATA", str(env))
    assert load_images(path=explicit).source == str(explicit)
    assert load_images().source == str(env)
    monkeypatch.delenv("REGBENCH_DATA")
    assert load_images().source == str(cache)


def test_lookup_failure_names_every_place_tried(tmp_path, monkeypatch):
    monkeypatch.delenv("REGBENCH_DATA")
    cache = tmp_path / "home" / ".keras" / "datasets" / "mnist.npz"
    cache.parent.mkdir(parents=True)
    cache.write_text("garbage")  # the cache is checked by content, not trusted
    with pytest.raises(UsageError) as error:
        load_images()
    message = str(error.value)
    for place in ("--data PATH", "$REGBENCH_DATA", str(cache), "a text file, not an .npz",
                  "keras.datasets.mnist.load_data() (skipped"):
        assert place in message


def test_stratified_indices_keep_class_shares():
    labels = np.repeat(np.arange(10), [100 + 10 * k for k in range(10)])
    chosen = stratified_indices(labels, 290, np.random.default_rng(1))
    counts = np.bincount(labels[chosen], minlength=10)
    expected = 290 * np.bincount(labels) / len(labels)
    assert len(chosen) == len(set(chosen)) == 290
    assert np.all(np.abs(counts - expected) < 1)


def test_split_holds_out_a_fixed_stratified_validation_set(images):
    full = split_images(images)
    small = split_images(images, train_size=300)
    assert len(full.y_val) == validation_size(3000) == 500
    assert len(full.y_train) == 2500 and len(small.y_train) == 300
    np.testing.assert_array_equal(full.x_val, small.x_val)  # the validation set ignores --train-size
    np.testing.assert_array_equal(small.x_train, split_images(images, train_size=300).x_train)
    assert np.abs(np.bincount(small.y_train) / 300 - np.bincount(images.y_train) / 3000).max() < 0.01
    assert full.x_train.dtype == np.float32 and 0.0 <= full.x_train.min() and full.x_train.max() == 1.0
    # no training image is also a validation image
    val_rows = {row.tobytes() for row in full.x_val}
    assert not any(row.tobytes() in val_rows for row in full.x_train)


def test_a_data_draw_gives_each_seed_its_own_stratified_split_and_none_keeps_the_fixed_one(images):
    fixed, first, again, second = (split_images(images, 300, draw) for draw in (None, 0, 0, 1))
    np.testing.assert_array_equal(first.y_val, again.y_val)  # a draw is reproducible
    assert not np.array_equal(first.x_val, second.x_val) and not np.array_equal(first.x_val, fixed.x_val)
    assert not np.array_equal(first.x_train, second.x_train)
    for split in (first, second):  # each draw stays stratified, at the same sizes
        assert len(split.y_val) == len(fixed.y_val) and len(split.y_train) == 300
        assert np.abs(np.bincount(split.y_val, minlength=10) - np.bincount(fixed.y_val, minlength=10)).max() <= 1
    np.testing.assert_array_equal(first.x_test, fixed.x_test)  # the test set never moves


def test_validation_size_is_ten_thousand_of_the_full_sixty_thousand():
    assert validation_size(60_000) == 10_000 and DATA_SEED


@pytest.mark.parametrize("size", [99, 2501])
def test_train_size_out_of_range_says_the_allowed_range(images, size):
    with pytest.raises(UsageError, match=r"allowed 100\.\.2500"):
        split_images(images, train_size=size)


def test_the_fashion_subset_is_read_from_keras_idx_directory_layout_and_recognised():
    fashion = read_images(SMALL_FASHION, "fashion-mnist")
    assert fashion.x_train.shape == (3000, 28, 28) and fashion.x_test.shape == (500, 28, 28)
    assert np.bincount(fashion.y_train).tolist() == [300] * 10  # stratified
    assert fashion.description.startswith("a subset of Fashion-MNIST (3,500 images")
    assert read_images(SMALL_MNIST).description.startswith("a subset of MNIST")


@pytest.mark.parametrize("path, asked, found", [(SMALL_MNIST, "fashion-mnist", "MNIST"),
                                                (SMALL_FASHION, "mnist", "Fashion-MNIST")])
def test_another_datasets_images_are_refused_by_content(path, asked, found):
    with pytest.raises(UsageError, match=f"holds images of {found}, not {get_dataset(asked).title}"):
        read_images(path, asked)


def test_a_file_of_neither_dataset_is_accepted_under_its_own_fingerprint_and_named(tmp_path):
    images = read_images(_write(tmp_path / "mine.npz"), "fashion-mnist")
    assert "mine.npz: not the published Fashion-MNIST" in images.description
    assert images.fingerprint in images.description


def test_fashion_lookup_uses_keras_cache_directory_and_refuses_mnist_in_regbench_data(tmp_path, monkeypatch):
    cache = tmp_path / "home" / ".keras" / "datasets" / "fashion-mnist"
    shutil.copytree(SMALL_FASHION, cache)
    with pytest.raises(UsageError, match="holds images of MNIST, not Fashion-MNIST"):
        load_images("fashion-mnist")  # $REGBENCH_DATA is the MNIST subset
    monkeypatch.delenv("REGBENCH_DATA")
    assert load_images("fashion-mnist").source == str(cache)


def test_broken_idx_files_are_clear_errors(tmp_path):
    directory = shutil.copytree(SMALL_FASHION, tmp_path / "fashion")
    labels = directory / IDX_FILES["y_test"]
    raw = gzip.decompress(labels.read_bytes())
    for content, message in [(raw[:-3], "holds 497 bytes after its header"), (b"\0\0\x09\x01" + raw[4:], "magic"),
                             (b"", "magic missing")]:
        labels.write_bytes(gzip.compress(content))
        with pytest.raises(UsageError, match=message):
            read_images(directory, "fashion-mnist")
    labels.write_text("not gzip")
    with pytest.raises(UsageError, match="not a readable gzip file"):
        read_images(directory, "fashion-mnist")


def test_unknown_dataset_lists_the_registered_ones():
    with pytest.raises(UsageError, match="unknown dataset 'cifar10'; choose from mnist, fashion-mnist"):
        get_dataset("cifar10")
    assert all(spec.image_shape == (28, 28) and spec.classes == 10 for spec in DATASETS.values())


@pytest.mark.parametrize("source", ["npz", "idx"])
def test_a_file_read_before_is_known_by_its_stat_and_read_only_when_its_arrays_are_used(tmp_path, monkeypatch,
                                                                                        source):
    from regbench import data

    if source == "npz":
        path, dataset = tmp_path / "mnist.npz", "mnist"
        shutil.copy(SMALL_MNIST, path)
    else:
        path, dataset = tmp_path / "fashion", "fashion-mnist"
        shutil.copytree(SMALL_FASHION, path)
    first = read_images(path, dataset)
    reads, read_arrays = [], data.read_arrays
    monkeypatch.setattr(data, "read_arrays", lambda where: reads.append(where) or read_arrays(where))
    again = read_images(path, dataset)
    assert (again.fingerprint, again.content, again.train_images) == (first.fingerprint, first.content, 3000)
    assert reads == []  # known: nothing read to plan, or to answer from stored runs
    np.testing.assert_array_equal(again.x_test, first.x_test)
    assert reads == [path]  # read when used, once
    assert again.y_train is again.y_train


def test_a_changed_file_is_read_again_and_one_changed_unseen_is_refused_when_used(tmp_path):
    path = _write(tmp_path / "data.npz")
    first = read_images(path)
    _write(path, y_test=np.arange(1, 21, dtype=np.uint8) % 10)  # the same size: only its times and content differ
    changed = read_images(path)
    assert changed.fingerprint != first.fingerprint and changed.y_test[0] == 1
    _write(path)  # back to the first content
    read_images(path)  # its record now says what the file holds; make it wrong, as if the stat missed a change:
    record = next((tmp_path / "home" / ".cache" / "regbench" / "images").glob("*.json"))
    record.write_text(json.dumps({**json.loads(record.read_text()), "fingerprint": changed.fingerprint}))
    unseen = read_images(path)
    assert unseen.fingerprint == changed.fingerprint
    with pytest.raises(UsageError, match=r"content changed since it was first read .*run the command again"):
        _ = unseen.arrays
    assert read_images(path).fingerprint == first.fingerprint  # the wrong record was dropped


def test_images_sent_to_a_worker_carry_their_arrays(tmp_path):
    import pickle

    path = tmp_path / "mnist.npz"
    shutil.copy(SMALL_MNIST, path)
    read_images(path)
    known = read_images(path)  # not read yet
    pickled = pickle.dumps(known)  # as the client scatters them
    path.unlink()  # a worker that cannot reach the file
    sent = pickle.loads(pickled)
    assert sent.fingerprint == known.fingerprint and sent.x_train.shape == (3000, 28, 28)


def test_a_dataset_keras_cannot_download_is_refused_naming_the_places_tried(monkeypatch):
    from dataclasses import replace

    from regbench import data

    monkeypatch.setitem(data.DATASETS, "mnist", replace(data.DATASETS["mnist"], keras_loader=None))
    monkeypatch.delenv("REGBENCH_DATA")
    monkeypatch.delenv("REGBENCH_OFFLINE")  # nothing would be downloaded: there is no loader to ask
    with pytest.raises(UsageError, match=r"MNIST not found; tried .*Keras' loader \(keras.datasets has none for it\)"):
        data.load_images("mnist")
