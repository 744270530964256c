"""What this CPU can do fast, so recipes can say ``auto`` and get the right numeric path.

bf16 autocast is ~2× faster than fp32 on CPUs with native bf16 (AVX-512 BF16 or AMX), but
10–100× *slower* on CPUs without it (AVX2-only parts emulate it), so ``auto`` checks first.
"""

from __future__ import annotations

import functools

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
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_int8_dot() -> bool:
    """VNNI (AVX-512 or AVX) accumulates u8×s8 products without 16-bit saturation; without it
    ONNX Runtime advises 7-bit weights (``reduce_range``) for int8."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())
