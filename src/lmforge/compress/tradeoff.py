"""The trade-off of the compress stage: every variant evaluated on the test split and timed
through the runtime backends the server uses, the fastest within the accuracy budget chosen,
and the table and chart written."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lmforge.compress.variants import REFERENCE, TokenisedSplit, Variant
from lmforge.errors import LmforgeError
from lmforge.evaluate.metrics import classification_metrics
from lmforge.progress import ProgressReporter
from lmforge.recipe.schema import CompressConfig
from lmforge.runtime.backends import Backend, OnnxBackend, TorchBackend, cpu_threads
from lmforge.runtime.measure import measure_latency, measure_throughput, packed_rows
from lmforge.runtime.predictor import length_buckets


def _backend(variant: Variant) -> Backend:
    threads = cpu_threads()
    if variant.onnx_file is not None:
        return OnnxBackend(variant.onnx_file, name=variant.format, threads=threads)
    return TorchBackend(variant.folder, name=variant.format, threads=threads)


def evaluate_variant(
    variant: Variant, config: CompressConfig, split: TokenisedSplit
) -> Backend | None:
    """Test-split metrics of one variant; its loaded backend, or None (error recorded)."""
    try:
        backend = _backend(variant)
    except LmforgeError as exc:
        variant.error = exc.message
        return None
    variant.size_mb = round(backend.size_mb(), 2)
    logits = np.zeros((len(split.test_rows), len(split.labels)), dtype=np.float32)
    for idx, ids, mask in length_buckets(split.test_rows, config.bench_batch_size, split.pad_id):
        logits[idx] = backend(ids, mask)
    variant.metrics = classification_metrics(split.test_labels, logits, split.labels)
    variant.accuracy = variant.metrics["accuracy"]
    variant.macro_f1 = variant.metrics["macro_f1"]
    return backend


TIMING_ROUNDS = 3


def time_variants(
    variants: Sequence[Variant],
    backends: dict[str, Backend],
    config: CompressConfig,
    split: TokenisedSplit,
    progress: ProgressReporter,
) -> None:
    """Latency and throughput of every variant, interleaved over a few rounds and reduced by
    the median, so a noisy neighbour on a shared machine slows them all alike."""
    packed = packed_rows(split.test_rows, config.bench_length, 4 * config.bench_batch_size)
    timed = [v for v in variants if v.name in backends]
    p50: dict[str, list[float]] = {v.name: [] for v in timed}
    p99: dict[str, list[float]] = {v.name: [] for v in timed}
    speed: dict[str, list[float]] = {v.name: [] for v in timed}
    runs = max(1, config.latency_runs // TIMING_ROUNDS)
    progress.start("timing variants", total=TIMING_ROUNDS * len(timed))
    for _ in range(TIMING_ROUNDS):
        for v in timed:
            backend = backends[v.name]
            latency = measure_latency(backend, split.test_rows, runs=runs)
            p50[v.name].append(latency.p50_ms)
            p99[v.name].append(latency.p99_ms)
            throughput = measure_throughput(
                backend,
                packed,
                batch_size=config.bench_batch_size,
                min_seconds=config.bench_seconds / TIMING_ROUNDS,
            )
            speed[v.name].append(throughput.sequences_per_second)
            progress.advance(1)
    progress.stop()
    for v in timed:
        v.p50_ms = round(float(np.median(p50[v.name])), 3)
        v.p99_ms = round(float(np.median(p99[v.name])), 3)
        v.sequences_per_second = round(float(np.median(speed[v.name])), 1)


def choose_variant(variants: list[Variant], reference: Variant, max_drop: float) -> Variant | None:
    assert reference.accuracy is not None and reference.sequences_per_second is not None
    for v in variants:
        if v.accuracy is None or v.sequences_per_second is None:
            continue
        v.delta_points = round(100 * (v.accuracy - reference.accuracy), 2)
        v.speedup = round(v.sequences_per_second / reference.sequences_per_second, 2)
        # Compare in points with a little slack for float noise in the subtraction above.
        v.within_budget = v.delta_points >= -max_drop - 1e-9
    candidates = [
        v for v in variants if v.within_budget and v is not reference and (v.speedup or 0) > 1.0
    ]
    # Measured speed alone decides, whatever the backend or format (torch int8 beats ONNX
    # Runtime's where it is faster); equal throughput goes to the lower batch-1 latency.
    return max(
        candidates,
        key=lambda v: (v.sequences_per_second or 0.0, -(v.p50_ms or float("inf"))),
        default=None,
    )


def tradeoff_markdown(
    variants: Sequence[Variant], chosen: Variant | None, max_drop: float, source: str
) -> str:
    lines = [
        f"# Compression of {source}",
        "",
        f"Accuracy budget: at most {max_drop:g} points below {REFERENCE} (measured in this run). "
        "Throughput: batch-32 sequences/s at a fixed length; latency: batch 1, real test texts.",
        "",
        "| variant | size MB | batch-1 p50 ms | batch-32 seq/s | × ref | accuracy | Δ points "
        "| within budget |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for v in variants:
        mark = " **(chosen)**" if v is chosen else ""
        if v.error is not None:
            lines.append(f"| {v.name} | – | – | – | – | – | – | failed: {v.error} |")
            continue
        lines.append(
            f"| {v.name}{mark} | {v.size_mb:.1f} | {v.p50_ms:.2f} | "
            f"{v.sequences_per_second:.1f} | {v.speedup:.2f} | {100 * (v.accuracy or 0):.2f} | "
            f"{v.delta_points:+.2f} | {'yes' if v.within_budget else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def write_tradeoff(
    folder: Path, variants: Sequence[Variant], chosen: Variant | None, max_drop: float, ref: str
) -> None:
    from lmforge.evaluate.plots import plot_tradeoff

    rows = [v.to_json() for v in variants]
    (folder / "tradeoff.json").write_text(json.dumps({"variants": rows}, indent=1))
    (folder / "tradeoff.md").write_text(tradeoff_markdown(variants, chosen, max_drop, ref))
    plot_tradeoff(
        [row for row in rows if row["error"] is None],
        chosen.name if chosen else None,
        max_drop,
        folder / "tradeoff.png",
    )
