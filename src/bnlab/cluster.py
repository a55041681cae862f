"""Checks that a sweep's cluster can be reached, before any run is recorded.

The launchers themselves come from Hydra's plugins (`hydra-ray-launcher`,
`hydra-submitit-launcher`); left alone, a wrong Ray address or a machine without
Slurm fails only after the sweep's parent run is opened, with a page of traceback.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import Any

from bnlab.config import ConfigError

CONNECT_SECONDS = 3.0
# Where `ray start --head` records the address of the cluster this node belongs to.
RAY_CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")


def check_reachable(launcher: Any) -> None:
    """Raises ConfigError, in one line, when the launcher's cluster cannot be reached."""
    target = str(launcher.get("_target_", ""))
    if "hydra_ray_launcher" in target and "aws" not in target.lower():
        init = (launcher.get("ray") or {}).get("init") or {}
        _check_ray(init.get("address"))
    elif "SlurmLauncher" in target and shutil.which("sbatch") is None:
        raise ConfigError(
            "hydra/launcher: sbatch is not on PATH, so no Slurm cluster can be reached "
            "from here (use hydra/launcher=submitit_local or joblib on one machine)"
        )


def _check_ray(address: str | None) -> None:
    if address in (None, "", "local"):
        return  # ray.init starts a cluster of its own on this machine
    key = "hydra.launcher.ray.init.address"
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS") or (
            RAY_CURRENT_CLUSTER.read_text().strip() if RAY_CURRENT_CLUSTER.is_file() else None
        )
        if not address:
            raise ConfigError(
                f"{key}: no Ray cluster runs on this node (start one with `ray start --head`, "
                "or set RAY_ADDRESS=HOST:PORT)"
            )
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
