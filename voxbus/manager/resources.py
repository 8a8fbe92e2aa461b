"""Memory readings: process RSS and machine RAM through psutil, GPUs through NVML (pynvml).

A GPU is optional: without the NVIDIA driver, NVML fails to initialise and this reports no
GPUs, so everything runs on the CPU.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import psutil

from voxbus.messages.admin import GpuStats

log = logging.getLogger(__name__)

try:
    import pynvml
except ImportError:  # nvidia-ml-py is a dependency, but tolerate its absence
    pynvml = None


@dataclass(frozen=True)
class MemoryReading:
    rss_bytes: int
    gpu_process_bytes: int  # this process's memory on GPU 0 (0 without a GPU)


class Resources:
    def __init__(self) -> None:
        self._proc = psutil.Process(os.getpid())
        self._nvml = False
        self._handles: list = []
        if pynvml is not None:
            try:
                pynvml.nvmlInit()
                self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
                self._nvml = True
            except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded...
                log.info("no NVIDIA GPU available (%s): running on CPU", exc)

    @property
    def has_gpu(self) -> bool:
        return bool(self._handles)

    def rss(self) -> int:
        return self._proc.memory_info().rss

    def ram_total(self) -> int:
        return psutil.virtual_memory().total

    def ram_available(self) -> int:
        return psutil.virtual_memory().available

    def gpus(self) -> list[GpuStats]:
        out = []
        for i, h in enumerate(self._handles):
            try:
                mem = pynvml.nvmlDeviceGetMemoryInfo(h)
                name = pynvml.nvmlDeviceGetName(h)
                try:
                    util = float(pynvml.nvmlDeviceGetUtilizationRates(h).gpu)
                except Exception:
                    util = None
                out.append(GpuStats(index=i, name=name if isinstance(name, str) else name.decode(),
                                    total_bytes=mem.total, used_bytes=mem.used, free_bytes=mem.free, utilization=util))
            except Exception as exc:
                log.warning("NVML reading of GPU %d failed: %s", i, exc)
        return out

    def vram_total(self) -> int:
        return sum(g.total_bytes for g in self.gpus())

    def gpu_process_bytes(self) -> int:
        """This process's GPU memory, per NVML's process list (falls back to device used)."""
        total = 0
        pid = os.getpid()
        for h in self._handles:
            try:
                procs = pynvml.nvmlDeviceGetComputeRunningProcesses(h)
                total += sum((p.usedGpuMemory or 0) for p in procs if p.pid == pid)
            except Exception:
                total += pynvml.nvmlDeviceGetMemoryInfo(h).used
        return total

    def reading(self) -> MemoryReading:
        return MemoryReading(self.rss(), self.gpu_process_bytes() if self._nvml else 0)

    def close(self) -> None:
        if self._nvml:
            try:
                pynvml.nvmlShutdown()
            except Exception:
                pass
            self._nvml = False
