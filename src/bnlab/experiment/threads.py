"""How many CPU threads a job's backend may use, and pinning them before it starts.

A model this small trains faster on one thread than on many (thread hand-offs
cost more than they save), and parallel jobs on one machine fight over cores
when each backend starts a thread per core. So a job sized by a parallel
launcher gets the launcher's CPUs per job: a joblib worker gets its share of
this machine, a Ray task its `num_cpus`, a Slurm task its `cpus_per_task`.
The sequential launcher leaves the backend's defaults alone.

Backends read these settings once, when they start: `pin` must run before the
first `import keras` of the process, and the value holds for its later jobs.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from bnlab.config import launchers as cluster

# The variables each backend reads at start-up. TensorFlow's inter-op pool stays at
# one thread: a sequential CNN has no independent ops to run side by side.
_INTRA = ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS")
_INTER = "TF_NUM_INTEROP_THREADS"
# JAX's CPU backend runs single-threaded Eigen kernels with this XLA flag.
_XLA_SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false"


def cpus() -> int:
    """CPUs this process may run on (its affinity mask, which Slurm and cgroups set)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def per_job(launcher: Any, configured: int = 0) -> int | None:
    """Threads for each job of `launcher` (Hydra's launcher config), or None for defaults.

    Args:
        launcher: `hydra.launcher` of the job's config (any mapping with `_target_`).
        configured: `train.threads`; above 0 it wins.
    """
    if configured > 0:
        return configured
    if launcher is None:
        return None
    found = cluster.kind(launcher)
    if found == "joblib":
        workers = int(launcher.get("n_jobs") or -1)
        if workers < 0:  # joblib's convention: -1 is every CPU, -2 all but one, ...
            workers = max(1, cpus() + 1 + workers)
        return max(1, cpus() // workers)
    if found in ("ray", "ray_aws"):
        remote = (launcher.get("ray") or {}).get("remote") or {}
        value = remote.get("num_cpus")
        return int(value) if value else None
    if found in ("slurm", "submitit_local"):
        value = launcher.get("cpus_per_task")
        return int(value) if value else None
    return None


def pin(threads: int | None) -> bool:
    """Sets the backend's thread counts for this process, unless the user set them.

    Returns:
        True if the setting can still take effect (no backend imported yet).
    """
    if threads is None:
        return True
    for name in _INTRA:
        os.environ.setdefault(name, str(threads))
    os.environ.setdefault(_INTER, "1")
    if threads == 1 and _XLA_SINGLE_THREAD.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_XLA_SINGLE_THREAD}".strip()
    return not any(name in sys.modules for name in ("tensorflow", "jax", "torch"))
