"""The command a study launches its sweeps with: this package's own `bnlab train`, so a
study runs the same from a wheel as from a clone."""

import sys

TRAIN_COMMAND = [sys.executable, "-m", "bnlab", "train"]
