"""Files written whole: a reader never sees a half-written report page or figure."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, content: str | bytes) -> None:
    """Writes `path` through a temporary file beside it, renamed into place when complete.

    A report killed while it writes leaves each file whole, old or new, never truncated.
    """
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        if isinstance(content, bytes):
            partial.write_bytes(content)
        else:
            partial.write_text(content)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
