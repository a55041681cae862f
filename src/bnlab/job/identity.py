"""A job's identity: what it trains, with which code, on which backend.

Two jobs with the same identity train the same thing, so a complete run of one
satisfies the other. The identity covers the trained values of the typed config
(never a shorthand and its group key separately), a fingerprint of all the
first-party code a job runs (the module of every instantiated `_target_`, the
training loop, and every module they import, transitively, that is not an installed
versioned package: this project's own and the user's), and the Keras backend with the
versions of Keras and of that backend, read without starting it. Docs, the report and
the tests are not part of it, so changing them invalidates nothing.

    bnlab identity lr=0.05 bn=false      # show it without training
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from bnlab import backend, metrics
from bnlab.config import Config
from bnlab.config.keys import trained_values

# The scheme of the identity itself. Runs recorded under another scheme are never
# reused, and the report lists them apart instead of mixing them in. Scheme 3: the code
# fingerprint follows imports from each `_target_` and the training loop to every
# first-party module (scheme 2 hashed each `_target_`'s own module and a fixed list).
SCHEME = 3
# The training loop and what it feeds every model with, whatever the plug-ins.
TRAINING_LOOP = ("bnlab.experiment.training", "bnlab.experiment.model", "bnlab.experiment.data")
# This project's own top-level package: always first-party, from a clone or a wheel.
OWN_PACKAGE = "bnlab"


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
    """The first-party modules whose source decides what `config` trains: the training
    loop, each `_target_`'s module, and what they import, transitively."""
    roots = set(TRAINING_LOOP)
    for target in targets(config):
        module = target.rpartition(".")[0]
        if is_first_party(module):
            roots.add(module)
    return sorted(_closure(frozenset(roots)))


@functools.cache
def _closure(roots: frozenset[str]) -> set[str]:
    found: set[str] = set()
    pending = list(roots)
    while pending:
        module = pending.pop()
        if module in found:
            continue
        found.add(module)
        pending += [name for name in imported_modules(module) if name not in found]
    return found


@functools.cache
def is_first_party(module: str) -> bool:
    """Whether `module` is this project's or the user's own code: not the standard
    library, and not an installed package (whose version covers its code)."""
    top = module.split(".")[0]
    if top == OWN_PACKAGE:
        return True
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return False
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    if spec is None or spec.origin in (None, "built-in", "frozen"):
        return False
    origin = Path(spec.origin).resolve()
    return not any(part in ("site-packages", "dist-packages") for part in origin.parts)


@functools.cache
def imported_modules(module: str) -> tuple[str, ...]:
    """The first-party modules `module`'s source imports (at any depth of its code),
    read without running it."""
    tree = ast.parse(module_source(module).read_bytes())
    package = module if module_source(module).name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            # `from package import module` imports a module, not only a name.
            names.update(_submodules(base, [alias.name for alias in node.names]))
    # First-party is decided from the top-level package alone, so no third-party package is
    # imported to find out.
    kept = (name for name in names if name and is_first_party(name) and _is_module(name))
    return tuple(sorted(kept))


def _submodules(package: str, names: list[str]) -> list[str]:
    """Those of `names` that are modules of `package`, found on disk without importing
    `package` itself (importing it may start the backend)."""
    if not package or not is_first_party(package) or not _is_module(package):
        return []
    spec = importlib.util.find_spec(package)
    folders = list(spec.submodule_search_locations or []) if spec else []
    return [
        f"{package}.{name}"
        for name in names
        for folder in folders
        if (Path(folder) / f"{name}.py").is_file()
        or (Path(folder) / name / "__init__.py").is_file()
    ]


@functools.cache
def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError, AttributeError):
        return False


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


def describe(config: Config) -> dict[str, Any]:
    """Everything the identity hash covers, readable."""
    modules = code_modules(config)
    return {
        "scheme": SCHEME,
        "trained": trained_values(config),
        "code_modules": modules,
        "code": fingerprint(modules),
        **backend.versions(),
    }


def identity_hash(config: Config) -> str:
    """A stable 16-hex-digit hash of `describe(config)`: same experiment, same hash."""
    payload = json.dumps(describe(config), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def required_metrics(config: Config) -> tuple[str, ...]:
    """The metrics a complete run with this identity must hold to be reused: a job that
    measures the mechanism trains again where the run with its identity did not measure it."""
    return (metrics.MECHANISM_SECONDS,) if config.train.mechanism else ()
