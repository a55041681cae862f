"""bnlab: tracked sweeps that measure what Batch Normalization does to training."""

import os

# TensorFlow's C++ start-up chatter drowns the experiment's own log lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Offline means offline: MLflow (3.2+) sends usage telemetry unless told not to. Set
# before mlflow is imported, in every process that imports this package (entry points,
# pipelines, the sweeper plugin, and jobs on workers); child processes inherit it.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

__version__ = "0.1.0"
