"""What this CPU can do fast, so recipes can say ``auto`` and get the right numeric path.

bf16 autocast is ~2× faster than fp32 on CPUs that compute bf16 natively (AVX-512 BF16 or AMX),
but slower where it is emulated: 10–100× on AVX2-only parts, ~3× on AVX-512 parts without
BF16 — and oneDNN's "bf16 supported" is true on plain AVX-512, where it only means emulated. So
the verdict comes from the CPU's flags and, where they allow bf16, from a measurement of what the
CPU really computes (a bf16 against an fp32 matmul of an encoder layer's shapes).
"""

from __future__ import annotations

import functools
import platform
import time
from collections.abc import Callable

import torch

# x86 flags of the instructions that compute bf16 dot products (a CPU without any of them
# converts bf16 to fp32 and back around every fp32 multiply).
BF16_COMPUTE_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "avx_ne_convert"})
# What bf16 must save against fp32 to be chosen: a measured time ratio under this.
BF16_SPEEDUP_NEEDED = 0.9


def decide_native_bf16(flags: frozenset[str], measure: Callable[[], float] | None) -> bool:
    """Whether bf16 is worth computing on a CPU with these flags: ``measure()`` returns bf16's
    time over fp32's for the same matmul (None: not measurable). An x86 CPU whose flags show no
    bf16 instruction is judged without measuring (it emulates); any other — bf16 flags, or
    flags this code does not know (another architecture) — by the measurement."""
    x86 = "sse2" in flags
    if x86 and not (BF16_COMPUTE_FLAGS & flags):
        return False
    if measure is None:
        return bool(BF16_COMPUTE_FLAGS & flags)
    return measure() < BF16_SPEEDUP_NEEDED


def bf16_time_ratio(rows: int = 512, width: int = 384, ffn: int = 1536, rounds: int = 5) -> float:
    """bf16 matmul time over fp32's, best of ``rounds`` each, interleaved, for an encoder FFN
    layer's shapes (MiniLM: 384 → 1536) at 512 rows (8 sequences of 64 tokens) — a few ms where
    bf16 is native. Stops after one round when bf16 is already 2× slower (emulated)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, width, generator=gen)
    w = torch.randn(ffn, width, generator=gen)
    xb, wb = x.to(torch.bfloat16), w.to(torch.bfloat16)

    def timed(a: torch.Tensor, b: torch.Tensor) -> float:
        start = time.perf_counter()
        torch.nn.functional.linear(a, b)
        return time.perf_counter() - start

    for a, b in ((x, w), (xb, wb)):  # warm-up: oneDNN builds its kernels on first use
        timed(a, b)
    fp32 = bf16 = float("inf")
    for _ in range(rounds):
        fp32 = min(fp32, timed(x, w))
        bf16 = min(bf16, timed(xb, wb))
        if bf16 > 2 * fp32:
            break
    return bf16 / fp32


@functools.cache
def cpu_has_native_bf16() -> bool:
    """The one verdict every precision choice uses (training's ``auto``, the compression formats
    tried, ``lmforge bench``). Measured once per process: a few milliseconds where bf16 is
    native, nothing where the flags already say it is emulated."""
    return decide_native_bf16(cpu_flags(), bf16_time_ratio)


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
