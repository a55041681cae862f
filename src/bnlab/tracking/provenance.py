"""Where a result came from: git state and library versions, recorded with every run."""

from __future__ import annotations

import functools
import getpass
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

from bnlab import backend

# MLflow's own system tags, which its UI shows as Source, Version and User columns.
SOURCE_NAME_TAG = "mlflow.source.name"
SOURCE_TYPE_TAG = "mlflow.source.type"
GIT_COMMIT_TAG = "mlflow.source.git.commit"
GIT_BRANCH_TAG = "mlflow.source.git.branch"
USER_TAG = "mlflow.user"


def _git(cwd: str, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


# The clone this package runs from (an editable install); git finds nothing in a
# wheel's site-packages, and the runs then carry no commit.
SOURCE_ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def git_tags() -> dict[str, str]:
    """Source, commit, branch and user, as MLflow sets them for its own runs.

    The commit is that of the code that ran (the clone holding this package),
    wherever the command was started; `git_dirty` says whether tracked files
    differ from it (MLflow has no tag for that).
    """
    cwd = str(SOURCE_ROOT)
    tags = {
        SOURCE_NAME_TAG: _source_name(),
        SOURCE_TYPE_TAG: "LOCAL",
        USER_TAG: user(),
    }
    commit = _git(cwd, "rev-parse", "HEAD")
    if commit is None:
        return tags | {"git_dirty": "unknown"}
    status = _git(cwd, "status", "--porcelain", "--untracked-files=no")
    tags |= {GIT_COMMIT_TAG: commit, "git_dirty": str(bool(status)).lower()}
    branch = _git(cwd, "rev-parse", "--abbrev-ref", "HEAD")
    if branch and branch != "HEAD":
        tags[GIT_BRANCH_TAG] = branch
    return tags


def _source_name() -> str:
    """The script that was started (src/train.py, pipelines/study.py, ...)."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    return str(script.resolve()) if script and script.suffix == ".py" else "bnlab"


def user() -> str:
    """The account a tracking server knows this process by, else the local login name."""
    account = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if account:
        return account
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "unknown"


def library_tags() -> dict[str, str]:
    """Keras backend and the versions of the libraries that did the training."""
    found = backend.versions()
    return {
        "keras_backend": found["keras_backend"],
        "keras_version": found["keras_version"],
        f"{found['keras_backend']}_version": found["backend_version"],
        "python_version": platform.python_version(),
    }


# Where a job ran: the node, and the scheduler's own job id, so a run found in the UI
# leads to its cluster logs (`sacct -j`, `scontrol show job`).
SCHEDULER_VARIABLES = {
    "slurm_job_id": "SLURM_JOB_ID",
    "slurm_array_job_id": "SLURM_ARRAY_JOB_ID",
    "slurm_array_task_id": "SLURM_ARRAY_TASK_ID",
}


def host_tags() -> dict[str, str]:
    """The host and process a job runs in and, under Slurm, its job ids."""
    tags = {"host": socket.gethostname(), "pid": str(os.getpid())}
    for tag, variable in SCHEDULER_VARIABLES.items():
        if os.environ.get(variable):
            tags[tag] = os.environ[variable]
    return tags
