"""What every dataset plug-in returns, and the split every one of them uses.

A data plug-in's `_target_` returns `Splits`; the model is then built for the splits'
input shape and class count, so no module knows the images' size.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from bnlab.config.errors import DataError


@dataclass
class Splits:
    """Inputs scaled for training, with integer labels, and where they came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    # The dataset's name and source, as a run records them.
    name: str = "data"
    source: str = ""
    # The number of classes; 0 counts the labels.
    classes: int = 0

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input, which the model is built for."""
        return tuple(int(size) for size in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        """The number of classes, which the model's output layer has."""
        if self.classes:
            return self.classes
        labels = np.concatenate([self.y_train, self.y_val, self.y_test])
        return int(labels.max()) + 1


def stratified_indices(
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


def split_pool(
    inputs: np.ndarray,
    labels: np.ndarray,
    val_fraction: float,
    test_fraction: float,
    split_seed: int,
    limit: int | None,
    **described,
) -> Splits:
    """Splits one labelled pool into train, validation and test, stratified by label.

    The split depends only on `split_seed`; `limit` keeps the first training inputs.
    `described` fills the name, source and classes of the `Splits`.
    """
    val, test, train = stratified_indices(labels, (val_fraction, test_fraction), split_seed)
    return Splits(
        x_train=inputs[train[:limit]],
        y_train=labels[train[:limit]],
        x_val=inputs[val],
        y_val=labels[val],
        x_test=inputs[test],
        y_test=labels[test],
        **described,
    )


def fewest_train_images(pool: int, held_out: float, classes: int) -> int:
    """The fewest inputs a stratified training split of `pool` can hold: its share,
    less one per class for the rounding of each class's held-out counts."""
    return int(pool * (1 - held_out)) - classes


@dataclass
class DatasetInfo:
    """What a run records about its data: MLflow's dataset input fields."""

    name: str
    digest: str
    source: str
    profile: str


def dataset_info(splits: Splits, split_seed: int) -> DatasetInfo:
    """Name, content digest, source and split sizes of the data a run trained on.

    The digest hashes the split arrays themselves, so two runs show the same
    digest exactly when they saw the same inputs in the same splits.
    """
    digest = hashlib.sha256()
    for array in (splits.x_train, splits.y_train, splits.x_val, splits.y_val, splits.y_test):
        digest.update(np.ascontiguousarray(array).tobytes())
    profile = {
        "train": len(splits.y_train),
        "val": len(splits.y_val),
        "test": len(splits.y_test),
        "split_seed": split_seed,
        "input_shape": list(splits.input_shape),
        "classes": splits.num_classes,
    }
    return DatasetInfo(splits.name, digest.hexdigest()[:12], splits.source, json.dumps(profile))


SPLITS = ("train", "val", "test")


def check_splits(splits: object, target: str = "") -> Splits:
    """Returns `splits` once it is what training needs; else one line naming `data`.

    Each split's inputs and labels have one row per example, the labels are whole
    numbers within the classes, the inputs are finite numbers, and no split is empty.
    """
    if not isinstance(splits, Splits):
        raise DataError(
            f"data._target_: {target or 'the builder'} returned {type(splits).__name__}, "
            "not a bnlab.experiment.data.Splits"
        )
    classes = splits.classes
    for split in SPLITS:
        x, y = getattr(splits, f"x_{split}"), getattr(splits, f"y_{split}")
        if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
            raise DataError(f"data: x_{split} and y_{split} must be numpy arrays")
        if len(x) != len(y):
            raise DataError(
                f"data: x_{split} holds {len(x)} examples but y_{split} {len(y)} labels"
            )
        if len(x) == 0:
            raise DataError(f"data: the {split} split is empty")
        if y.ndim != 1 or not (
            np.issubdtype(y.dtype, np.integer)
            or (np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0))
        ):
            raise DataError(f"data: y_{split} must hold one whole-number label per example")
        if y.min() < 0 or (classes and y.max() >= classes):
            bound = f"0 to {classes - 1}" if classes else "0 or more"
            raise DataError(
                f"data: y_{split} holds label {int(y.min() if y.min() < 0 else y.max())}, "
                f"outside the classes ({bound})"
            )
        if not np.issubdtype(x.dtype, np.number):
            raise DataError(f"data: x_{split} must hold numbers, got {x.dtype}")
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        if bad:
            raise DataError(
                f"data: x_{split} holds {bad} NaN or infinite value(s); training would diverge"
            )
    shapes = {getattr(splits, f"x_{split}").shape[1:] for split in SPLITS}
    if len(shapes) != 1:
        raise DataError(f"data: the splits' inputs differ in shape ({sorted(shapes)})")
    return splits


def load_data(config) -> Splits:
    """Calls the data config's `_target_` with its settings (a `DataConfig` subclass),
    and checks what it returned (`check_splits`)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        splits = instantiate(config)
    except InstantiationException as error:
        # Hydra wraps what the plug-in raised; a DataError is the plug-in's own message.
        if isinstance(error.__cause__, DataError):
            raise error.__cause__ from None
        raise
    return check_splits(splits, str(getattr(config, "_target_", "")))
