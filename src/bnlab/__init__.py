"""bnlab: tracked sweeps that measure what Batch Normalization does to training."""

import os

# TensorFlow's C++ start-up chatter drowns the experiment's own log lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
