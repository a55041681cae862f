"""bnlab: tracked sweeps that measure what Batch Normalization does to training."""

import os

# TensorFlow's C++ start-up chatter drowns the experiment's own log lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Offline means offline: MLflow (3.2+) sends usage telemetry unless told not to. Set
# before mlflow is imported, in every process that imports this package (entry points,
# pipelines, the sweeper plugin, and jobs on workers); child processes inherit it.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Outages are bounded by this project's own retries (`bnlab.tracking.retries`, with the deadlines
# `tracking.connect_seconds` and `tracking.deadline_seconds`), not by MLflow's HTTP client,
# which would retry each call for minutes and log a warning per attempt.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
# MLflow prints a "View run ... at: <tracking URI>" line whenever a run ends on a server:
# one line per job, an extra request each, and the URI's password when it has one. The
# project prints its own links, without credentials (`bnlab.tracking.links`).
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

__version__ = "0.1.0"

# Passwords in URIs never reach a log line, in any process that imports this package.
from bnlab.redaction import install_log_redaction  # noqa: E402

install_log_redaction()
