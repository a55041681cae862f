"""The Keras backend of this process, read without starting it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def keras_backend() -> str:
    """The Keras backend this process runs, read as Keras reads it, without starting one.

    Keras takes $KERAS_BACKEND, else the `backend` of keras.json in $KERAS_HOME (or
    ~/.keras), else TensorFlow. Once Keras is imported, it is asked directly.
    """
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    try:
        return str(json.loads((home / "keras.json").read_text())["backend"])
    except (OSError, ValueError, KeyError, TypeError):
        return "tensorflow"
