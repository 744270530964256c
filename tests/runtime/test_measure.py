"""The runtime's timers (`lmforge.runtime.measure`): the one percentile definition, and which
calls are timed. Nothing here asserts a duration: only counts, indices and the arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from lmforge.runtime.measure import (
    percentile,
    repeat_for,
    time_calls,
    time_latency,
    time_throughput,
)


def test_percentile_interpolates_between_the_nearest_ranks() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5  # the median of an even count
    assert percentile([1.0, 2.0, 3.0], 50) == 2.0
    hundred = [float(v) for v in range(1, 101)]
    assert percentile(hundred, 99) == pytest.approx(99.01)
    assert percentile(hundred, 0) == 1.0 and percentile(hundred, 100) == 100.0
    assert percentile(hundred, 99) == float(np.percentile(hundred, 99))


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)


def test_time_calls_times_only_the_calls_after_the_warm_up() -> None:
    seen: list[int] = []
    samples = time_calls(seen.append, runs=4, warmup=2)
    assert seen == [0, 1, 2, 3, 4, 5]
    assert len(samples) == 4 and all(s >= 0 for s in samples)


def test_repeat_for_makes_at_least_min_calls() -> None:
    seen: list[int] = []
    calls, seconds = repeat_for(seen.append, min_seconds=0, min_calls=3)
    assert (calls, seen) == (3, [0, 1, 2]) and seconds >= 0


def test_latency_and_throughput_count_their_runs_and_batches() -> None:
    seen: list[int] = []
    latency = time_latency(seen.append, runs=7, warmup=1)
    assert latency.runs == 7 and len(seen) == 8
    assert 0 <= latency.p50_ms <= latency.p99_ms

    seen.clear()
    throughput = time_throughput(seen.append, batch_size=4, length=16, min_seconds=0)
    assert seen == [0, 0, 1, 2]  # one untimed warm-up call, then the 3 timed batches
    assert (throughput.batches, throughput.batch_size, throughput.length) == (3, 4, 16)
    assert throughput.sequences_per_second > 0
