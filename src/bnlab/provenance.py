"""Where a result came from: git state and library versions, recorded with every run."""

from __future__ import annotations

import functools
import platform
import subprocess


def _git(cwd: str, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


@functools.cache
def git_tags(cwd: str) -> dict[str, str]:
    """The commit checked out in `cwd` and whether tracked files differ from it."""
    commit = _git(cwd, "rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    status = _git(cwd, "status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": str(bool(status)).lower()}


def library_tags() -> dict[str, str]:
    """Keras backend and the versions of the libraries that did the training."""
    from bnlab.identity import backend

    found = backend()
    return {
        "keras_backend": found["keras_backend"],
        "keras_version": found["keras_version"],
        f"{found['keras_backend']}_version": found["backend_version"],
        "python_version": platform.python_version(),
    }
