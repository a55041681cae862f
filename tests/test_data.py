"""The data plug-ins (embedded and full MNIST, 8x8 digits) load, scale and split
deterministically, and tell the model their input shape and class count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bnlab.experiment.data import DataError, load_data
from bnlab.plugins.digits import DigitsConfig
from bnlab.plugins.mnist import MnistConfig, MnistSmallConfig, check_mnist_npz


def test_embedded_split_is_stratified_scaled_and_deterministic() -> None:
    splits = load_data(MnistSmallConfig())
    assert splits.x_train.shape == (4000, 28, 28, 1)
    assert splits.x_val.shape == (500, 28, 28, 1)
    assert splits.x_test.shape == (500, 28, 28, 1)
    assert splits.x_train.dtype == np.float32
    assert splits.x_train.min() >= 0.0 and splits.x_train.max() <= 1.0
    # Ten classes of 500 digits: every split keeps the balance.
    assert (np.bincount(splits.y_val) == 50).all()
    assert (np.bincount(splits.y_test) == 50).all()
    again = load_data(MnistSmallConfig())
    assert np.array_equal(splits.x_val, again.x_val)
    assert np.array_equal(splits.y_train, again.y_train)
    assert splits.input_shape == (28, 28, 1) and splits.num_classes == 10
    other = load_data(MnistSmallConfig(split_seed=1))
    assert not np.array_equal(splits.y_train, other.y_train)


def test_splits_do_not_overlap() -> None:
    splits = load_data(MnistSmallConfig())
    seen = {image.tobytes() for image in splits.x_train}
    assert not any(image.tobytes() in seen for image in splits.x_test)


def test_limit_keeps_the_first_training_images() -> None:
    full = load_data(MnistSmallConfig())
    limited = load_data(MnistSmallConfig(limit=100))
    assert limited.x_train.shape[0] == 100
    assert np.array_equal(limited.x_train, full.x_train[:100])
    assert np.array_equal(limited.x_val, full.x_val)


def write_mnist_like(path: Path, train: int = 200, test: int = 50) -> None:
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (train, 28, 28), dtype=np.uint8),
        y_train=np.arange(train) % 10,
        x_test=rng.integers(0, 256, (test, 28, 28), dtype=np.uint8),
        y_test=np.arange(test) % 10,
    )


def test_full_mnist_from_a_local_file(tmp_path: Path) -> None:
    path = tmp_path / "mnist.npz"
    write_mnist_like(path)
    splits = load_data(MnistConfig(path=str(path)))
    assert splits.x_train.shape == (180, 28, 28, 1)
    assert splits.x_val.shape == (20, 28, 28, 1)
    assert splits.x_test.shape == (50, 28, 28, 1)
    assert splits.x_test.max() <= 1.0


def test_full_mnist_from_the_keras_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "datasets").mkdir()
    write_mnist_like(tmp_path / "datasets" / "mnist.npz", train=100)
    assert load_data(MnistConfig()).x_train.shape[0] == 90


def test_missing_full_mnist_says_how_to_provide_it(tmp_path: Path, monkeypatch) -> None:
    import keras

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(DataError, match="data.path=") as raised:
        load_data(MnistConfig())
    assert len(str(raised.value).splitlines()) == 1


def test_a_file_that_is_not_mnist_is_rejected(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, images=np.zeros((3, 28, 28)))
    with pytest.raises(DataError, match="not an MNIST"):
        check_mnist_npz(wrong)


def test_the_8x8_digits_split_by_digit_with_their_own_shape() -> None:
    splits = load_data(DigitsConfig())
    assert splits.input_shape == (8, 8, 1) and splits.num_classes == 10
    assert len(splits.y_train) + len(splits.y_val) + len(splits.y_test) == 1797
    assert len(splits.y_train) >= DigitsConfig().train_images()
    assert splits.x_train.min() >= 0.0 and splits.x_train.max() <= 1.0
    assert set(np.unique(splits.y_val)) == set(range(10))
    again = load_data(DigitsConfig())
    assert np.array_equal(splits.y_train, again.y_train)


def test_parsed_data_are_cached_on_disk_keyed_by_their_source(tmp_path, monkeypatch) -> None:
    import numpy as np

    from bnlab import cache

    monkeypatch.setenv(cache.CACHE_VARIABLE, str(tmp_path / "cache"))
    source = tmp_path / "digits.csv"
    source.write_text("1,2,3\n")
    calls = []

    def parse():
        calls.append(1)
        return np.arange(3.0), np.array([1, 2])

    first = cache.arrays("digits", source, parse)
    second = cache.arrays("digits", source, parse)
    assert len(calls) == 1 and all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    # A changed source is parsed again; a damaged cache file is parsed again, not trusted.
    source.write_text("4,5,6\n")
    cache.arrays("digits", source, parse)
    assert len(calls) == 2
    for stored in (tmp_path / "cache").glob("*.npz"):
        stored.write_bytes(b"not an npz")
    assert np.array_equal(cache.arrays("digits", source, parse)[1], np.array([1, 2]))
    assert len(calls) == 3
