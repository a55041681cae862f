"""CPU, memory, disk, network and GPU use of a job, sampled as `system/*` metrics.

Written through the run's own writer (`tracking.RunLogger.log_metrics`), so the samples
share its retries, its buffer and, when the store stops taking writes, its offline
journal. The names are MLflow's, so the UI's system-metrics charts show them.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable

import psutil

log = logging.getLogger(__name__)

MEGABYTE = 1024 * 1024


class SystemSampler:
    """Returns one sample of the machine's use per call, as MLflow names it."""

    def __init__(self) -> None:
        self._network = psutil.net_io_counters()
        self._gpus = _gpu_handles()
        # The first cpu_percent call starts its interval; later ones measure since the last.
        psutil.cpu_percent(interval=None)

    def sample(self) -> dict[str, float]:
        memory = psutil.virtual_memory()
        disk = shutil.disk_usage("/")
        network = psutil.net_io_counters()
        values = {
            "system/cpu_utilization_percentage": psutil.cpu_percent(interval=None),
            "system/system_memory_usage_megabytes": (memory.total - memory.available) / MEGABYTE,
            "system/system_memory_usage_percentage": memory.percent,
            "system/disk_usage_percentage": 100.0 * disk.used / disk.total,
            "system/disk_usage_megabytes": disk.used / MEGABYTE,
            "system/disk_available_megabytes": disk.free / MEGABYTE,
            "system/network_receive_megabytes": (network.bytes_recv - self._network.bytes_recv)
            / MEGABYTE,
            "system/network_transmit_megabytes": (network.bytes_sent - self._network.bytes_sent)
            / MEGABYTE,
        }
        for index, handle in enumerate(self._gpus):
            values.update(_gpu_sample(index, handle))
        return values


def _gpu_handles() -> list:
    """NVIDIA GPUs through NVML (nvidia-ml-py), or none where there is no driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # no NVIDIA driver or library: no GPU metrics
        return []


def _gpu_sample(index: int, handle) -> dict[str, float]:
    import pynvml

    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    return {
        f"system/gpu_{index}_utilization_percentage": float(
            pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
        ),
        f"system/gpu_{index}_memory_usage_megabytes": memory.used / MEGABYTE,
        f"system/gpu_{index}_memory_usage_percentage": 100.0 * memory.used / memory.total,
    }


def sampling(log_metrics: Callable[[dict[str, float], int], None]) -> Callable[[], None]:
    """A beat for `heartbeat.Heartbeat`: each call logs one sample at the next step."""
    sampler = SystemSampler()
    step = iter(range(10**9))

    def beat() -> None:
        log_metrics(sampler.sample(), next(step))

    return beat
