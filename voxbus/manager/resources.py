"""Memory readings: process RSS and machine RAM through psutil, GPUs through NVML (pynvml).

A GPU is optional: without the NVIDIA driver, NVML fails to initialise and this reports no
GPUs, so everything runs on the CPU.
"""

from __future__ import annotations

import logging
import os
import psutil

from voxbus.messages.admin import GpuStats

log = logging.getLogger(__name__)

try:
    import pynvml
except ImportError:  # nvidia-ml-py is a dependency, but tolerate its absence
    pynvml = None


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

    def gpu_process_bytes(self, pid: int | None = None) -> int:
        """GPU memory of one process (a model's worker; default: this one), summed over GPUs, per
        NVML's per-process accounting. 0 without a GPU, or where NVML cannot tell."""
        if not self._nvml:
            return 0
        pid = pid or os.getpid()
        total = 0
        for h in self._handles:
            try:
                procs = pynvml.nvmlDeviceGetComputeRunningProcesses(h)
            except Exception as exc:
                log.debug("NVML process list unavailable: %s", exc)
                continue
            total += sum((p.usedGpuMemory or 0) for p in procs if p.pid == pid)
        return total

    def close(self) -> None:
        if self._nvml:
            try:
                pynvml.nvmlShutdown()
            except Exception:
                pass
            self._nvml = False
