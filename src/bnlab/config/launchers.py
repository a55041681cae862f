"""Checks a sweep's launcher settings and that its cluster can be reached, before any
run is recorded.

The launchers themselves come from Hydra's plugins (`hydra-joblib-launcher`,
`hydra-ray-launcher`, `hydra-submitit-launcher`); left alone, `n_jobs=0`, a wrong Ray
address or a machine without Slurm fails only after the sweep's parent run is opened,
with a page of traceback.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
from typing import Any

from bnlab.config import ConfigError

CONNECT_SECONDS = 3.0
# How long Ray's CLI may take to say whether this node belongs to a cluster.
RAY_STATUS_SECONDS = 30.0
# The launchers this project knows, by the `_target_` their plugins register.
LAUNCHERS = {
    "hydra._internal.core_plugins.basic_launcher.BasicLauncher": "basic",
    "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher": "joblib",
    "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher": "ray",
    "hydra_plugins.hydra_ray_launcher.ray_aws_launcher.RayAWSLauncher": "ray_aws",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher": "slurm",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher": "submitit_local",
}
# Launchers whose jobs run in worker processes of this machine, which they kill when the
# launching process stops.
LOCAL_WORKERS = ("joblib",)
# Numeric launcher settings and the least value each may take (None: unset is fine).
_MINIMUMS = {
    "ray": {"ray.remote.num_cpus": 1, "ray.remote.num_gpus": 0},
    "slurm": {
        "cpus_per_task": 1,
        "mem_gb": 1,
        "timeout_min": 1,
        "nodes": 1,
        "tasks_per_node": 1,
        "gpus_per_node": 0,
    },
    "submitit_local": {"cpus_per_task": 1, "mem_gb": 1, "timeout_min": 1, "gpus_per_node": 0},
}


def kind(launcher: Any) -> str | None:
    """The launcher's kind (a LAUNCHERS value), or None for one this project doesn't know."""
    if launcher is None:
        return None
    return LAUNCHERS.get(str(launcher.get("_target_", "")))


def check_settings(launcher: Any, cpus: int) -> None:
    """Raises ConfigError, in one line naming the key, for a launcher setting out of range.

    Args:
        launcher: `hydra.launcher` of the sweep's config.
        cpus: CPUs of this machine, for joblib's negative `n_jobs` (-1: all of them).
    """
    found = kind(launcher)
    if found == "joblib":
        workers = launcher.get("n_jobs")
        key = "hydra.launcher.n_jobs"
        if not isinstance(workers, int) or isinstance(workers, bool):
            raise ConfigError(f"{key}: must be a whole number, got {workers!r}")
        if workers == 0 or (workers < 0 and cpus + 1 + workers < 1):
            raise ConfigError(
                f"{key}: must be >= 1, or -1 for every CPU, -2 for all but one, ... down to "
                f"-{cpus} on this machine; got {workers}"
            )
    for path, least in _MINIMUMS.get(found, {}).items():
        value: Any = launcher
        for part in path.split("."):
            value = value.get(part) if hasattr(value, "get") else None
        if value is None:
            continue
        number_ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number_ok or not math.isfinite(value):
            raise ConfigError(f"hydra.launcher.{path}: must be a number, got {value!r}")
        if value < least:
            raise ConfigError(f"hydra.launcher.{path}: must be >= {least}, got {value}")


def check_reachable(launcher: Any) -> None:
    """Raises ConfigError, in one line, when the launcher's cluster cannot be reached."""
    found = kind(launcher)
    if found == "ray":
        init = (launcher.get("ray") or {}).get("init") or {}
        _check_ray(init.get("address"))
    elif found == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError(
            "hydra/launcher: sbatch is not on PATH, so no Slurm cluster can be reached "
            "from here (use hydra/launcher=submitit_local or joblib on one machine)"
        )


def _check_ray_on_this_node(key: str) -> None:
    """`auto` joins the cluster this node belongs to: Ray's own CLI (`ray status`) says
    whether there is one, without reading Ray's internal files."""
    ray = shutil.which("ray")
    if ray is None:
        raise ConfigError(f"{key}: Ray is not installed here (pip install -e '.[cluster]')")
    try:
        status = subprocess.run(
            [ray, "status"], capture_output=True, text=True, timeout=RAY_STATUS_SECONDS
        )
    except subprocess.TimeoutExpired as error:
        raise ConfigError(
            f"{key}: `ray status` did not answer within {RAY_STATUS_SECONDS:g} s"
        ) from error
    if status.returncode != 0:
        raise ConfigError(
            f"{key}: no Ray cluster runs on this node (start one with `ray start --head`, "
            "or set RAY_ADDRESS=HOST:PORT)"
        )


def _check_ray(address: str | None) -> None:
    if address in (None, "", "local"):
        return  # ray.init starts a cluster of its own on this machine
    key = "hydra.launcher.ray.init.address"
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS")
        if not address:
            _check_ray_on_this_node(key)
            return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{key}: '{address}' is not HOST:PORT")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS):
            pass
    except OSError as error:
        raise ConfigError(
            f"{key}: no Ray cluster answers at {address} within {CONNECT_SECONDS:g} s "
            f"({type(error).__name__}: {error})"
        ) from error
