"""Measuring a backend: batch-1 latency and fixed-shape batch throughput, and the timers under them.

Used by `lmforge compress` (to rank variants), `lmforge bench` (to compare backends) and the
scripts in ``benchmarks/``, so that a p50 or a p99 means the same everywhere: `percentile` is
the one definition. Inputs are real texts; for throughput they are packed to an exact token
length so every backend sees the same shapes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Forward = Callable[[np.ndarray, np.ndarray], object]


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p99_ms: float
    runs: int


@dataclass(frozen=True)
class Throughput:
    sequences_per_second: float
    batch_size: int
    length: int
    batches: int


def packed_rows(rows: Sequence[Sequence[int]], length: int, count: int) -> np.ndarray:
    """``count`` rows of exactly ``length`` tokens, cut from the concatenated bodies of real
    tokenised rows and wrapped in their special tokens ([CLS] … [SEP]): exact shapes, real text."""
    cls_id, sep_id = rows[0][0], rows[0][-1]
    body = [t for r in rows for t in r[1:-1]]
    if not body:
        raise ValueError("no tokens to pack")
    need = count * (length - 2)
    stream = np.resize(np.asarray(body, dtype=np.int64), need).reshape(count, length - 2)
    out = np.empty((count, length), dtype=np.int64)
    out[:, 0] = cls_id
    out[:, 1:-1] = stream
    out[:, -1] = sep_id
    return out


def measure_latency(
    forward: Forward, rows: Sequence[Sequence[int]], *, runs: int = 50, warmup: int = 5
) -> Latency:
    """Batch-1 latency over ``runs`` real rows at their own lengths."""
    singles = [np.asarray([row], dtype=np.int64) for row in rows[: warmup + runs]]
    masks = [np.ones_like(row) for row in singles]
    return time_latency(
        lambda i: forward(singles[i % len(singles)], masks[i % len(singles)]),
        runs=runs,
        warmup=warmup,
    )


def measure_throughput(
    forward: Forward, packed: np.ndarray, *, batch_size: int = 32, min_seconds: float = 1.0
) -> Throughput:
    """Sequences per second on fixed-shape batches; runs at least ``min_seconds`` and 3 batches."""
    mask = np.ones((batch_size, packed.shape[1]), dtype=np.int64)
    batches = [
        packed[i : i + batch_size] for i in range(0, len(packed) - batch_size + 1, batch_size)
    ]
    return time_throughput(
        lambda i: forward(batches[i % len(batches)], mask),
        batch_size=batch_size,
        length=int(packed.shape[1]),
        min_seconds=min_seconds,
    )


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) of ``samples``, interpolating linearly between the two
    nearest ranks (numpy's default; ``q=50`` is the median): the p50 and p99 of lmforge and of
    its benchmarks."""
    if not samples:
        raise ValueError("no samples")
    return float(np.percentile(samples, q))


def time_calls(call: Callable[[int], object], *, runs: int, warmup: int = 0) -> list[float]:
    """Seconds taken by each of ``call(warmup)`` … ``call(warmup + runs - 1)``, after ``warmup``
    untimed calls ``call(0)`` … ``call(warmup - 1)``."""
    samples = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        call(i)
        if i >= warmup:
            samples.append(time.perf_counter() - start)
    return samples


def repeat_for(
    call: Callable[[int], object], *, min_seconds: float, min_calls: int = 3
) -> tuple[int, float]:
    """Calls ``call(0)``, ``call(1)``, … until at least ``min_seconds`` have passed and
    ``min_calls`` calls were made; returns (calls, seconds)."""
    done, start = 0, time.perf_counter()
    while done < min_calls or time.perf_counter() - start < min_seconds:
        call(done)
        done += 1
    return done, time.perf_counter() - start


def time_latency(call: Callable[[int], object], *, runs: int = 50, warmup: int = 5) -> Latency:
    """p50/p99 of ``call(i)`` for i = 0, 1, … after ``warmup`` untimed calls (any input: token
    rows, or texts for transformers' pipeline)."""
    samples = [s * 1000 for s in time_calls(call, runs=runs, warmup=warmup)]
    return Latency(p50_ms=percentile(samples, 50), p99_ms=percentile(samples, 99), runs=runs)


def time_throughput(
    call: Callable[[int], object], *, batch_size: int, length: int, min_seconds: float = 1.0
) -> Throughput:
    """Throughput of ``call(i)``, each call one batch of ``batch_size`` sequences, after one
    untimed warm-up call (first calls allocate and pick kernels); at least ``min_seconds`` and
    3 batches."""
    call(0)
    done, seconds = repeat_for(call, min_seconds=min_seconds, min_calls=3)
    return Throughput(
        sequences_per_second=done * batch_size / seconds,
        batch_size=batch_size,
        length=length,
        batches=done,
    )
