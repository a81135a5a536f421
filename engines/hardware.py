"""What this machine is and which precisions it runs natively (for reports and ``auto``)."""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Hardware", "describe_device", "detect"]


@dataclass(frozen=True)
class Hardware:
    """The CPU (model and instruction-set flags) and the CUDA GPU, if any."""

    cpu_model: str
    cpu_flags: frozenset[str] = field(default_factory=frozenset)
    cpu_count: int = 1
    gpu: str | None = None
    gpu_capability: tuple[int, int] | None = None

    def native_precisions(self, device: str) -> set[str]:
        """Precisions that run in hardware, not emulated, on ``device`` (``cpu`` or ``cuda``)."""
        if device == "cuda":
            native = {"fp32", "fp16", "int8"}
            if self.gpu_capability and self.gpu_capability >= (8, 0):
                native.add("bf16")
            return native
        flags = self.cpu_flags
        native = {"fp32"}
        if flags & {"avx512_bf16", "amx_bf16"}:
            native.add("bf16")
        if flags & {"avx512_fp16", "amx_fp16"}:
            native.add("fp16")
        if flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
            native.add("int8")
        return native

    def summary(self) -> dict[str, Any]:
        """The fields an export report records."""
        wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16", "amx_int8")
        return {"cpu": self.cpu_model, "cpu_count": self.cpu_count, "torch_threads": torch.get_num_threads(),
                "cpu_flags": sorted(f for f in self.cpu_flags if f in wanted), "gpu": self.gpu,
                "native_cpu_precisions": sorted(self.native_precisions("cpu"))}


def _cpuinfo() -> tuple[str, frozenset[str]]:
    model, flags = platform.processor() or platform.machine(), frozenset()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = frozenset(value.split())
    except OSError:  # not Linux: no flags, so nothing beyond fp32 counts as native
        pass
    return model, flags


@functools.lru_cache(maxsize=1)
def detect() -> Hardware:
    """This machine (read once)."""
    model, flags = _cpuinfo()
    gpu = capability = None
    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
        capability = tuple(torch.cuda.get_device_capability(0))
    return Hardware(model, flags, os.cpu_count() or 1, gpu, capability)


def describe_device(device: torch.device) -> str:
    """Where a training runs, for its metrics: the GPU's name, or the CPU and its torch threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
