"""The bf16 verdict behind ``precision: auto``, fed the flags and timings of each CPU seen."""

from __future__ import annotations

import pytest
import torch

from lmforge import hardware
from lmforge.hardware import decide_native_bf16, resolve_precision

BASE = {"sse2", "avx", "avx2", "fma"}
AVX512 = BASE | {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"}
ZEN3_AVX2 = frozenset(BASE)  # AMD Zen 3: bf16 emulated, 10–100× slower than fp32
XEON_VNNI = frozenset(AVX512 | {"avx512_vnni"})  # oneDNN says "bf16 supported"; measured 0.35×
ZEN4_BF16 = frozenset(AVX512 | {"avx512_vnni", "avx512_bf16"})  # native: ~2× fp32
SAPPHIRE_AMX = frozenset(AVX512 | {"avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"})


def never_measured() -> float:
    raise AssertionError("a CPU whose flags show no bf16 instruction needs no measurement")


@pytest.mark.parametrize("flags", [ZEN3_AVX2, XEON_VNNI], ids=["avx2", "avx512-vnni"])
def test_cpus_without_bf16_instructions_train_in_fp32_without_measuring(
    flags: frozenset[str],
) -> None:
    assert decide_native_bf16(flags, never_measured) is False
    assert decide_native_bf16(flags, None) is False


@pytest.mark.parametrize("flags", [ZEN4_BF16, SAPPHIRE_AMX], ids=["avx512-bf16", "amx"])
def test_cpus_with_bf16_instructions_are_judged_by_measurement(flags: frozenset[str]) -> None:
    assert decide_native_bf16(flags, lambda: 0.5) is True
    # The flag alone is not enough: a VM or a throttled part where bf16 measured slower.
    assert decide_native_bf16(flags, lambda: 1.3) is False
    assert decide_native_bf16(flags, lambda: hardware.BF16_SPEEDUP_NEEDED) is False
    assert decide_native_bf16(flags, None) is True


def test_unknown_architectures_are_judged_by_measurement_alone() -> None:
    assert decide_native_bf16(frozenset(), lambda: 0.6) is True
    assert decide_native_bf16(frozenset({"fp", "asimd", "bf16"}), lambda: 2.0) is False
    assert decide_native_bf16(frozenset(), None) is False


def test_the_measurement_compares_like_with_like() -> None:
    ratio = hardware.bf16_time_ratio(rows=64, width=32, ffn=64, rounds=2)
    assert ratio > 0 and ratio != float("inf")


def test_auto_follows_the_one_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda native=native: native)
        assert resolve_precision("auto") == expected
    assert resolve_precision("fp32") == "fp32"
    assert resolve_precision("bf16") == "bf16"
