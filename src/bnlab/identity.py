"""A job's identity: what it trains, with which code, on which backend.

Two jobs with the same identity train the same thing, so a complete run of one
satisfies the other. The identity covers the trained values of the typed config
(never a shorthand and its group key separately), a fingerprint of the code
that builds, feeds and trains the model, and the Keras backend with the
versions of Keras and of that backend. Docs, the report and the tests are not
part of it, so changing them invalidates nothing.

    python pipelines/identity.py lr=0.05 bn=false      # show it without training
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from bnlab.config import Config, trained_values

# The modules whose code decides what a job trains: data, model (with its BN
# layer), training loop.
TRAINING_CODE = ("data.py", "model.py", "batchnorm.py", "training.py")
PACKAGE_DIR = Path(__file__).resolve().parent


def fingerprint(folder: Path) -> str:
    """A hash of the TRAINING_CODE files in `folder` (names and contents)."""
    digest = hashlib.sha256()
    for name in TRAINING_CODE:
        digest.update(name.encode())
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()[:16]


@functools.cache
def code_fingerprint() -> str:
    """The fingerprint of this installation's code that builds, feeds and trains the model."""
    return fingerprint(PACKAGE_DIR)


@functools.cache
def backend() -> dict[str, str]:
    """The Keras backend and the versions of Keras and of that backend."""
    import keras

    name = keras.backend.backend()
    if name == "tensorflow":
        import tensorflow

        version = tensorflow.__version__
    elif name == "jax":
        import jax

        version = jax.__version__
    elif name == "torch":
        import torch

        version = torch.__version__
    else:
        version = "unknown"
    return {"keras_backend": name, "keras_version": keras.__version__, "backend_version": version}


def describe(config: Config) -> dict[str, Any]:
    """Everything the identity hash covers, readable."""
    return {
        "trained": trained_values(config),
        "code": code_fingerprint(),
        **backend(),
    }


def identity_hash(config: Config) -> str:
    """A stable 16-hex-digit hash of `describe(config)`: same experiment, same hash."""
    payload = json.dumps(describe(config), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
