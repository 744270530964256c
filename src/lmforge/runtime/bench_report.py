"""What `lmforge bench` reports: one result per backend or baseline, the report that compares
them (GOP/s, share of the machine's peak, speed-up over torch eager) and its ``--json``
document, and the FLOP count of one encoder forward those rates are computed from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.runtime.measure import Latency, Throughput
from lmforge.runtime.peaks import Machine

TORCH_EAGER = "torch-eager"


@dataclass
class BenchResult:
    """One backend or baseline; ``error`` is set (and the numbers partial) when it failed."""

    backend: str
    kind: str  # "backend" or "baseline"
    peak: str  # which machine peak its GOP/s is compared with: "fp32" or "int8"
    size_mb: float | None = None
    latency: Latency | None = None
    throughput: dict[int, Throughput] = field(default_factory=dict)
    single: dict[int, Throughput] = field(default_factory=dict)  # batch 1 at the same lengths
    error: str | None = None


@dataclass
class BenchReport:
    model: str
    path: Path
    machine: Machine
    lengths: tuple[int, ...]
    batch_size: int
    latency_runs: int
    min_seconds: float
    baselines: bool
    rounds: int
    texts_source: str
    texts_count: int
    flops: dict[int, float] | None  # per sequence at each length; None for unknown configs
    results: list[BenchResult]
    # The baselines run the uncompressed parent of a compressed version (see bench_model).
    baseline_model: str = ""
    baseline_flops: dict[int, float] | None = None

    def result(self, backend: str) -> BenchResult | None:
        return next((r for r in self.results if r.backend == backend), None)

    def gops(self, result: BenchResult, length: int) -> float | None:
        run = result.throughput.get(length)
        flops = self.baseline_flops if result.kind == "baseline" else self.flops
        if run is None or flops is None:
            return None
        return flops[length] * run.sequences_per_second / 1e9

    def share_of_peak(self, result: BenchResult, length: int) -> float | None:
        gops = self.gops(result, length)
        peaks = self.machine.peaks
        peak = peaks.int8_gops if result.peak == "int8" else peaks.fp32_gflops
        return None if gops is None else gops / peak

    def speedup(self, result: BenchResult, length: int) -> float | None:
        """Throughput over torch-eager's at the same length (the issue's ≥ 6× target)."""
        eager = self.result(TORCH_EAGER)
        ours = result.throughput.get(length)
        theirs = eager.throughput.get(length) if eager else None
        if ours is None or theirs is None:
            return None
        return ours.sequences_per_second / theirs.sequences_per_second

    def row_cost_vs_batch1(self, result: BenchResult, length: int) -> float | None:
        """Seconds per row at the batch size over seconds per row at batch 1, same length: above
        1 means batching makes each row dearer (the issue's "≤ 1 for every backend")."""
        batch, single = result.throughput.get(length), result.single.get(length)
        if batch is None or single is None:
            return None
        return single.sequences_per_second / batch.sequences_per_second

    def latency_speedup(self, result: BenchResult) -> float | None:
        """torch-eager's batch-1 p50 over this one's: how many times faster one request is."""
        eager = self.result(TORCH_EAGER)
        if result.latency is None or eager is None or eager.latency is None:
            return None
        return eager.latency.p50_ms / result.latency.p50_ms

    def to_json(self) -> dict[str, Any]:
        """The stable ``bench --json`` document (every key is described in docs/cli.md)."""
        m = self.machine
        return {
            "model": self.model,
            "path": str(self.path),
            "machine": {
                "cpu": m.cpu,
                "isa": list(m.isa),
                "native_bf16": m.native_bf16,
                "int8_dot": m.int8_dot,
                "threads": m.threads,
                **m.versions,
                "peaks": {
                    "fp32_gflops": _round(m.peaks.fp32_gflops),
                    "int8_gops": _round(m.peaks.int8_gops),
                    "matrix_size": m.peaks.matrix_size,
                },
            },
            "settings": {
                "lengths": list(self.lengths),
                "batch_size": self.batch_size,
                "latency_runs": self.latency_runs,
                "min_seconds": self.min_seconds,
                "baselines": self.baselines,
                "rounds": self.rounds,
            },
            "texts": {"source": self.texts_source, "count": self.texts_count},
            "gflop_per_sequence": None
            if self.flops is None
            else {str(n): _round(f / 1e9) for n, f in self.flops.items()},
            "baseline_model": self.baseline_model,
            "baseline_gflop_per_sequence": None
            if self.baseline_flops is None
            else {str(n): _round(f / 1e9) for n, f in self.baseline_flops.items()},
            "results": [self._result_json(r) for r in self.results],
        }

    def _result_json(self, r: BenchResult) -> dict[str, Any]:
        latency = None
        if r.latency is not None:
            latency = {
                "p50_ms": _round(r.latency.p50_ms),
                "p99_ms": _round(r.latency.p99_ms),
                "runs": r.latency.runs,
            }
        return {
            "backend": r.backend,
            "kind": r.kind,
            "peak": r.peak,
            "size_mb": _round(r.size_mb),
            "latency": latency,
            "latency_speedup_vs_torch_eager": _round(self.latency_speedup(r)),
            "throughput": {
                str(n): {
                    "sequences_per_second": _round(t.sequences_per_second),
                    "batches": t.batches,
                    "gops": _round(self.gops(r, n)),
                    "share_of_peak": _round(self.share_of_peak(r, n)),
                    "speedup_vs_torch_eager": _round(self.speedup(r, n)),
                    "batch1_sequences_per_second": _round(
                        r.single[n].sequences_per_second if n in r.single else None
                    ),
                    "row_cost_vs_batch1": _round(self.row_cost_vs_batch1(r, n)),
                }
                for n, t in r.throughput.items()
            },
            "error": r.error,
        }


def _round(value: float | None, digits: int = 4) -> float | None:
    """To ``digits`` significant digits: timings on a shared CPU carry no more."""
    return None if value is None else float(f"{value:.{digits}g}")


def flops_per_sequence(config: dict[str, Any], length: int) -> float | None:
    """Floating-point operations (2 per multiply-add) of one encoder forward at ``length`` tokens.

    Per layer, with hidden size H, attention width A = heads × (H // heads) (= H for every
    common model), feed-forward size I and length L: Q/K/V projections 2·L·H·3A, attention
    scores and weighted sum 2·2·L²·A, output projection 2·L·A·H, feed-forward 2·2·L·H·I.
    Embeddings, layer norms, softmax, pooler and head are left out (well under 1 %). None when
    the config does not name these sizes (BERT-style and DistilBERT-style keys are read).
    """
    layers = config_size(config, "num_hidden_layers", "n_layers", "num_layers")
    hidden = config_size(config, "hidden_size", "dim", "d_model")
    inner = config_size(config, "intermediate_size", "hidden_dim", "ffn_dim")
    heads = config_size(config, "num_attention_heads", "n_heads") or 1
    if not (layers and hidden and inner):
        return None
    width = heads * (hidden // heads)
    per_layer = (
        2 * length * hidden * 3 * width
        + 4 * length * length * width
        + 2 * length * width * hidden
        + 4 * length * hidden * inner
    )
    return float(layers * per_layer)


def config_size(config: dict[str, Any], *keys: str) -> int | None:
    """The first of ``keys`` that ``config`` sets to a positive integer."""
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None
