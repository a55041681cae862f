"""A job's identity: what it trains, with which code, on which backend.

Two jobs with the same identity train the same thing, so a complete run of one
satisfies the other. The identity covers the trained values of the typed config
(never a shorthand and its group key separately), a fingerprint of the code
that trained (the modules every instantiated `_target_` comes from, and the
training loop), and the Keras backend with the versions of Keras and of that
backend. Docs, the report and the tests are not part of it, so changing them
invalidates nothing.

    python pipelines/identity.py lr=0.05 bn=false      # show it without training
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

from bnlab.config import Config
from bnlab.keys import trained_values

# The scheme of the identity itself. Runs recorded under another scheme are never
# reused, and the report lists them apart instead of mixing them in. Scheme 2: the
# code fingerprint covers every `_target_`'s module (scheme 1 hashed four fixed files).
SCHEME = 2
# The training loop and what it feeds every model with, whatever the plug-ins.
TRAINING_LOOP = ("bnlab.training", "bnlab.model", "bnlab.data", "bnlab.batchnorm")
# Packages whose code is covered by their version, which the identity records.
VERSIONED_PACKAGES = ("keras", "tensorflow", "jax", "torch")


def targets(config: Config) -> list[str]:
    """The `_target_` of every group of `config` that is instantiated."""
    return sorted(
        {
            getattr(getattr(config, group), "_target_", None)
            for group in ("model", "data", "optimizer")
        }
        - {None}
    )


def code_modules(config: Config) -> list[str]:
    """The modules whose source decides what `config` trains: the training loop, and
    the module of every `_target_` outside the versioned packages."""
    modules = set(TRAINING_LOOP)
    for target in targets(config):
        module = target.rpartition(".")[0]
        if module.split(".")[0] not in VERSIONED_PACKAGES:
            modules.add(module)
    return sorted(modules)


@functools.cache
def module_source(module: str) -> Path:
    """The file of `module`'s source, found without running it when it is not loaded."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ValueError(f"_target_: cannot find the source of module {module}")
    return Path(spec.origin)


def fingerprint(modules: list[str]) -> str:
    """A hash of the names and sources of `modules`."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(module.encode())
        digest.update(module_source(module).read_bytes())
    return digest.hexdigest()[:16]


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
    modules = code_modules(config)
    return {
        "scheme": SCHEME,
        "trained": trained_values(config),
        "code_modules": modules,
        "code": fingerprint(modules),
        **backend(),
    }


def identity_hash(config: Config) -> str:
    """A stable 16-hex-digit hash of `describe(config)`: same experiment, same hash."""
    payload = json.dumps(describe(config), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
