"""Parsed data kept on disk between processes, keyed by the content of their source."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

# Where parsed data are kept: $BNLAB_CACHE_DIR, else the user's cache folder.
CACHE_VARIABLE = "BNLAB_CACHE_DIR"


def folder() -> Path:
    """The cache folder (not created here)."""
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bnlab"


def arrays(
    name: str, source: Path, parse: Callable[[], tuple[np.ndarray, ...]]
) -> tuple[np.ndarray, ...]:
    """`parse()`'s arrays, read from the cache when `source`'s content is unchanged.

    A cache that cannot be read or written is skipped (the arrays are parsed again);
    a file is written whole, then renamed into place, so no reader sees half of it.
    """
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16] if source.is_file() else "none"
    path = folder() / f"{name}-{digest}.npz"
    try:
        with np.load(path) as stored:
            return tuple(stored[f"a{index}"] for index in range(len(stored.files)))
    except (OSError, ValueError, KeyError):
        pass
    parsed = parse()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial.npz")
        np.savez(partial, **{f"a{index}": array for index, array in enumerate(parsed)})
        os.replace(partial, path)
    except OSError:
        pass
    return parsed
