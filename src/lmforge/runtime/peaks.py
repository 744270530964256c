"""The machine side of `lmforge bench`: the CPU's own fp32 and int8 matmul peaks (a short
microbenchmark on torch and ONNX Runtime), and what the report says about the machine.

Kept apart from :mod:`lmforge.runtime.bench` because it measures the hardware, not a model:
each backend's achieved GOP/s is reported as a share of these peaks.
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

PEAK_SIZE = 1024  # square matrices for the peak matmuls: large enough to keep every core busy
ISA_FLAGS = frozenset(
    {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8"}
)


@dataclass(frozen=True)
class Peaks:
    """The machine's own matmul rates, the ceiling a backend's GOP/s is measured against."""

    fp32_gflops: float
    int8_gops: float
    matrix_size: int


@dataclass(frozen=True)
class Machine:
    """The machine the numbers were measured on, as the report states it."""

    cpu: str
    isa: tuple[str, ...]
    native_bf16: bool
    int8_dot: bool
    threads: int
    versions: dict[str, str]
    peaks: Peaks


def _best_rate(call: Callable[[], object], ops: float, min_seconds: float) -> float:
    """Best ops/s over calls repeated for ``min_seconds`` (at least 5): the least-disturbed
    call is the closest to what the hardware can do on a shared machine."""
    call()
    call()  # warm-up: allocation, kernel choice, thread pool start
    best, calls, start = 0.0, 0, time.perf_counter()
    while calls < 5 or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        call()
        best = max(best, ops / (time.perf_counter() - t0))
        calls += 1
    return best


def measure_peaks(threads: int, *, size: int = PEAK_SIZE, min_seconds: float = 0.5) -> Peaks:
    """fp32 GFLOP/s of torch.mm and int8 GOP/s of ONNX Runtime's MatMulInteger (uint8 × int8 →
    int32, the kernel its dynamic int8 models run), both on ``threads`` threads."""
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper, numpy_helper

    ops = 2.0 * size**3
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen)
    b = torch.randn(size, size, generator=gen)
    fp32 = _best_rate(lambda: torch.mm(a, b), ops, min_seconds)

    rng = np.random.default_rng(0)
    weights = rng.integers(-128, 128, (size, size), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])],
        "int8_peak",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [size, size])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [size, size])],
        initializer=[numpy_helper.from_array(weights, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    feed = {"A": rng.integers(0, 256, (size, size), dtype=np.uint8)}
    int8 = _best_rate(lambda: session.run(None, feed), ops, min_seconds)
    return Peaks(fp32_gflops=fp32 / 1e9, int8_gops=int8 / 1e9, matrix_size=size)


def machine_info(threads: int, peaks: Peaks) -> Machine:
    # lmforge.hardware imports torch: deferred, so importing bench stays light.
    from lmforge.hardware import cpu_flags, cpu_has_int8_dot, cpu_has_native_bf16, cpu_name

    versions = {}
    for package in ("torch", "transformers", "onnxruntime"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return Machine(
        cpu=cpu_name(),
        isa=tuple(sorted(cpu_flags() & ISA_FLAGS)),
        native_bf16=cpu_has_native_bf16(),
        int8_dot=cpu_has_int8_dot(),
        threads=threads,
        versions=versions,
        peaks=peaks,
    )
