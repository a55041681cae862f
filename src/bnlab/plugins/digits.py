"""scikit-learn's 8x8 digits: 1,797 small images, installed with mlxtend, offline."""

from __future__ import annotations

from dataclasses import dataclass

from bnlab.config import DataConfig
from bnlab.experiment.data import Splits, fewest_train_images, split_pool

IMAGES = 1797
CLASSES = 10


@dataclass
class DigitsConfig(DataConfig):
    _target_: str = "bnlab.plugins.digits.load_digits"

    def train_images(self) -> int | None:
        return fewest_train_images(IMAGES, self.val_fraction + self.test_fraction, CLASSES)


def load_digits(
    val_fraction: float, test_fraction: float, split_seed: int, limit: int | None
) -> Splits:
    """The 8x8 digits as (8, 8, 1) images in [0, 1], split train/val/test by digit."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    # Pixel values run from 0 to 16.
    images = (digits.images / 16.0).astype("float32")[..., None]
    return split_pool(
        images,
        digits.target.astype("int64"),
        val_fraction,
        test_fraction,
        split_seed,
        limit,
        name="digits",
        source="sklearn.datasets.load_digits (1,797 8x8 digits shipped with scikit-learn)",
        classes=CLASSES,
    )
