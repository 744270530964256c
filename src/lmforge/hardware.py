"""What this CPU can do fast, so recipes can say ``auto`` and get the right numeric path.

bf16 autocast is ~2× faster than fp32 on CPUs with native bf16 (AVX-512 BF16 or AMX), but
10–100× *slower* on CPUs without it (AVX2-only parts emulate it), so ``auto`` checks first.
"""

from __future__ import annotations

import functools
import platform

import torch


@functools.cache
def cpu_has_native_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str) -> str:
    """``auto`` → ``bf16`` where the CPU computes it natively, else ``fp32``."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


@functools.cache
def _cpuinfo(field: str) -> str | None:
    """The first ``field`` line of /proc/cpuinfo (Linux), or None."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="ignore") as info:
            for line in info:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags() -> frozenset[str]:
    return frozenset((_cpuinfo("flags") or "").split())


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what the platform module knows."""
    return _cpuinfo("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_has_int8_dot() -> bool:
    """VNNI (AVX-512 or AVX) accumulates u8×s8 products without 16-bit saturation; without it
    ONNX Runtime advises 7-bit weights (``reduce_range``) for int8."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())
