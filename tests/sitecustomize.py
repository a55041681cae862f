"""Counts the processes that import TensorFlow, for the CI budget (`.ci/budget.py`).

Python imports this file at the start of every process whose path holds the tests'
folder (the tests put it on PYTHONPATH for every command they start). When
BNLAB_TF_IMPORT_LOG names a file, a process that imports TensorFlow appends its pid
to it once; tests/conftest.py counts the lines each test added.
"""

from __future__ import annotations

import os
import sys


class _TensorFlowImports:
    """A meta-path finder that finds nothing: it notes the first import of TensorFlow."""

    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow":
            sys.meta_path.remove(self)
            log = os.environ.get("BNLAB_TF_IMPORT_LOG")
            if log:
                try:
                    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                    os.write(fd, f"{os.getpid()}\n".encode())
                    os.close(fd)
                except OSError:
                    pass
        return None


if os.environ.get("BNLAB_TF_IMPORT_LOG"):
    sys.meta_path.insert(0, _TensorFlowImports())
