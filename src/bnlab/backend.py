"""The Keras backend of this process, read without starting it."""

from __future__ import annotations

import functools
import json
import os
import sys
from importlib import metadata
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


# The distributions that carry each backend's code (TensorFlow's CPU build has its own).
BACKEND_DISTRIBUTIONS = {
    "tensorflow": ("tensorflow", "tensorflow-cpu"),
    "jax": ("jax",),
    "torch": ("torch",),
}


# What to install for each backend: this project's extra, else the backend's own package.
BACKEND_INSTALL = {
    "tensorflow": "pip install tensorflow",
    "jax": "pip install 'bnlab[jax]'",
    "torch": "pip install torch",
}


def missing_backend() -> str | None:
    """One line when the backend Keras would start is not installed, else None.

    Read from the installed packages, without importing the backend.
    """
    name = keras_backend()
    distributions = BACKEND_DISTRIBUTIONS.get(name)
    source = "KERAS_BACKEND" if os.environ.get("KERAS_BACKEND") else "the keras.json backend"
    if distributions is None:
        known = ", ".join(sorted(BACKEND_DISTRIBUTIONS))
        return f"{source}: unknown Keras backend '{name}' (this project runs on {known})"
    if _installed(distributions):
        return None
    return f"{source}={name}: that backend is not installed ({BACKEND_INSTALL[name]})"


@functools.cache
def _installed(distributions: tuple[str, ...]) -> bool:
    """Whether any of `distributions` is installed (read once per process: every job of a
    grid is validated, and the answer does not change while it runs)."""
    for distribution in distributions:
        try:
            metadata.version(distribution)
            return True
        except metadata.PackageNotFoundError:
            continue
    return False


@functools.cache
def versions() -> dict[str, str]:
    """The Keras backend and the versions of Keras and of that backend, read from the
    installed packages' metadata: no backend is started (a relaunch that skips every
    job never imports TensorFlow)."""
    name = keras_backend()
    version = "unknown"
    for distribution in BACKEND_DISTRIBUTIONS.get(name, ()):
        try:
            version = metadata.version(distribution)
            break
        except metadata.PackageNotFoundError:
            continue
    try:
        keras_version = metadata.version("keras")
    except metadata.PackageNotFoundError:
        keras_version = "unknown"
    return {"keras_backend": name, "keras_version": keras_version, "backend_version": version}
