"""The dynamic batcher on its own: batching, the idle fast path, backpressure, deadlines, drain."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from lmforge.serve import batcher as batcher_module
from lmforge.serve.batcher import BatcherClosed, DeadlineExceeded, DynamicBatcher, QueueFull


class Recorder:
    """An inference function that records its batches and can be held at a gate."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.batches: list[list[str]] = []
        self.seconds = seconds
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, rows: list[str]) -> list[str]:
        self.gate.wait(10)
        time.sleep(self.seconds)
        self.batches.append(list(rows))
        return [r.upper() for r in rows]


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_a_lone_request_on_an_idle_model_runs_at_once() -> None:
    async def main() -> float:
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher(Recorder(), pool, max_batch=8, max_wait_ms=500)
            start = time.perf_counter()
            assert await batcher.submit(["a"], 5) == ["A"]
            elapsed = time.perf_counter() - start
            await batcher.close()
            return elapsed

    # Far below max_wait_ms: an idle model does not wait for company.
    assert run(main()) < 0.25


def test_concurrent_requests_share_batches_and_keep_their_order() -> None:
    recorder = Recorder(seconds=0.05)

    async def main() -> list[list[str]]:
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher(recorder, pool, max_batch=8, max_wait_ms=20, max_queue=64)
            jobs = [batcher.submit([f"t{i}a", f"t{i}b"], 5) for i in range(12)]
            results = await asyncio.gather(*jobs)
            await batcher.close()
            return results

    results = run(main())
    assert results == [[f"T{i}A", f"T{i}B"] for i in range(12)]
    assert max(len(b) for b in recorder.batches) == 8  # requests were combined, up to max_batch
    assert all(len(b) <= 8 for b in recorder.batches)
    assert len(recorder.batches) < 12


def test_a_full_queue_refuses_at_once_with_a_retry_hint() -> None:
    recorder = Recorder()
    recorder.gate.clear()

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher(recorder, pool, max_batch=2, max_wait_ms=0, max_queue=4)
            running = asyncio.ensure_future(batcher.submit(["held"], 5))
            await asyncio.sleep(0.05)  # the worker took it and is blocked at the gate
            queued = [asyncio.ensure_future(batcher.submit([f"q{i}"], 5)) for i in range(4)]
            await asyncio.sleep(0)
            start = time.perf_counter()
            with pytest.raises(QueueFull) as info:
                await batcher.submit(["one too many"], 5)
            assert time.perf_counter() - start < 0.05
            assert info.value.retry_after_s > 0
            with pytest.raises(QueueFull):  # larger than the queue: refused while it is busy
                await batcher.submit([f"big{i}" for i in range(6)], 5)
            recorder.gate.set()
            assert await running == ["HELD"]
            assert [await q for q in queued] == [[f"Q{i}"] for i in range(4)]
            await batcher.close()

    run(main())


def test_a_request_larger_than_the_queue_runs_when_the_queue_is_empty() -> None:
    async def main() -> list[str]:
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher(Recorder(), pool, max_batch=2, max_wait_ms=0, max_queue=2)
            result = await batcher.submit([f"r{i}" for i in range(5)], 5)
            await batcher.close()
            return result

    assert run(main()) == [f"R{i}" for i in range(5)]


def test_a_request_past_its_deadline_fails_and_is_dropped_from_the_queue() -> None:
    recorder = Recorder()
    recorder.gate.clear()

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher(recorder, pool, max_batch=1, max_wait_ms=0, max_queue=8)
            first = asyncio.ensure_future(batcher.submit(["first"], 5))
            await asyncio.sleep(0.05)
            with pytest.raises(DeadlineExceeded):
                await batcher.submit(["late"], 0.1)
            recorder.gate.set()
            assert await first == ["FIRST"]
            await batcher.close()

    run(main())
    assert ["late"] not in recorder.batches  # never computed for nobody


def test_a_failing_batch_fails_its_requests_and_the_worker_goes_on() -> None:
    calls = []

    def flaky(rows: list[str]) -> list[str]:
        calls.append(rows)
        if rows == ["boom"]:
            raise RuntimeError("backend failed")
        return rows

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher(flaky, pool, max_batch=1, max_wait_ms=0)
            with pytest.raises(RuntimeError, match="backend failed"):
                await batcher.submit(["boom"], 5)
            assert await batcher.submit(["fine"], 5) == ["fine"]
            await batcher.close()

    run(main())


def test_close_finishes_queued_requests_then_refuses_new_ones() -> None:
    recorder = Recorder(seconds=0.02)

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher(recorder, pool, max_batch=2, max_wait_ms=0, max_queue=32)
            queued = [asyncio.ensure_future(batcher.submit([f"r{i}"], 5)) for i in range(10)]
            await asyncio.sleep(0)
            await batcher.close()
            assert await asyncio.gather(*queued) == [[f"R{i}"] for i in range(10)]
            with pytest.raises(BatcherClosed):
                await batcher.submit(["after"], 5)

    run(main())


def test_batches_grow_under_load_and_shrink_back_when_it_stops() -> None:
    recorder = Recorder(seconds=0.01)

    async def main() -> list[int]:
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher(recorder, pool, max_batch=16, max_wait_ms=30, max_queue=64)

            async def client(i: int) -> None:
                for j in range(6):
                    await batcher.submit([f"{i}-{j}"], 5)

            await asyncio.gather(*(client(i) for i in range(16)))
            busy = list(batcher.stats.last_sizes)
            for _ in range(6):  # one client: the expected size decays back to one
                await batcher.submit(["alone"], 5)
            await batcher.close()
            return [*busy, -1, *list(batcher.stats.last_sizes)[len(busy) :]]

    sizes = run(main())
    busy, after = sizes[: sizes.index(-1)], sizes[sizes.index(-1) + 1 :]
    assert max(busy) >= 8  # closed-loop clients were gathered into large batches
    assert after[-1] == 1


def _busy_then_alone(run: object, max_batch: int = 16) -> DynamicBatcher[str]:
    async def main() -> DynamicBatcher[str]:
        with ThreadPoolExecutor(1) as pool:
            batcher: DynamicBatcher[str] = DynamicBatcher(
                run,  # type: ignore[arg-type]
                pool,
                max_batch=max_batch,
                max_wait_ms=20,
                max_queue=64,
            )

            async def client(i: int) -> None:
                for j in range(6):
                    await batcher.submit([f"{i}-{j}"], 5)

            await asyncio.gather(*(client(i) for i in range(16)))  # large batches
            for _ in range(8):
                await batcher.submit(["alone"], 5)  # small ones
            await batcher.close()
            return batcher

    return run_coro(main())


def run_coro(coro: object) -> DynamicBatcher[str]:
    return asyncio.run(coro)  # type: ignore[arg-type,no-any-return]


class ModelClock:
    """The batcher's clock, advanced only by the fake model: its costs are exact, not slept.

    A loaded machine adds milliseconds of thread wake-up to every call, which really does make
    large batches cheaper per row; the cost rule is tested here on the model's own costs.
    """

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def test_waiting_stops_where_large_batches_are_not_cheaper_per_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = ModelClock()
    monkeypatch.setattr(batcher_module, "time", clock)

    def per_row(rows: list[str]) -> list[str]:  # like int8 on this CPU: cost grows with rows
        time.sleep(0.001)  # busy for real, so that requests queue behind it
        clock.now += 0.002 * len(rows)
        return rows

    assert not _busy_then_alone(per_row).waiting_pays


def test_waiting_goes_on_where_large_batches_are_cheaper_per_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = ModelClock()
    monkeypatch.setattr(batcher_module, "time", clock)

    def per_call(rows: list[str]) -> list[str]:  # like a GPU: one call costs the same
        time.sleep(0.001)
        clock.now += 0.01
        return rows

    assert _busy_then_alone(per_call).waiting_pays
