"""The dynamic batcher on its own: batching, the idle fast path, backpressure, deadlines, drain."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
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
            with pytest.raises(QueueFull):  # a full queue refuses any size (no room to reserve)
                await batcher.submit([f"big{i}" for i in range(6)], 5)
            recorder.gate.set()
            assert await running == ["HELD"]
            assert [await q for q in queued] == [[f"Q{i}"] for i in range(4)]
            await batcher.close()

    run(main())


def test_a_large_request_is_admitted_before_later_small_ones() -> None:
    """max_queue 4 and a 6-row request (as max_queue 32 and 33-64 inputs): it used to be
    admitted only into an empty queue, so steady small traffic refused it for ever."""
    recorder = Recorder()
    recorder.gate.clear()

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher(recorder, pool, max_batch=2, max_wait_ms=0, max_queue=4)
            held = asyncio.ensure_future(batcher.submit(["held"], 5))
            await asyncio.sleep(0.05)
            small = [asyncio.ensure_future(batcher.submit([f"s{i}"], 5)) for i in range(3)]
            large = asyncio.ensure_future(batcher.submit([f"l{i}" for i in range(6)], 5))
            await asyncio.sleep(0)
            assert batcher.queued_rows == 3 and batcher.reserved_rows == 6
            with pytest.raises(QueueFull):  # would fit the room, but the large one was first
                await batcher.submit(["later"], 5)
            recorder.gate.set()
            await asyncio.gather(held, *small)
            assert await large == [f"L{i}" for i in range(6)]
            assert batcher.reserved_rows == 0
            # and once it is through, small requests are admitted again
            assert await batcher.submit(["after"], 5) == ["AFTER"]
            await batcher.close()

    run(main())
    flat = [row for batch in recorder.batches for row in batch]
    assert flat.index("l0") < flat.index("after")
    assert "later" not in flat


def test_a_reservation_past_its_deadline_frees_the_queue_for_others() -> None:
    recorder = Recorder()
    recorder.gate.clear()

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher(recorder, pool, max_batch=1, max_wait_ms=0, max_queue=2)
            held = asyncio.ensure_future(batcher.submit(["held"], 5))
            await asyncio.sleep(0.05)
            queued = asyncio.ensure_future(batcher.submit(["q"], 5))
            await asyncio.sleep(0)  # queued first
            with pytest.raises(DeadlineExceeded):
                await batcher.submit(["big1", "big2", "big3"], 0.1)
            assert batcher.reserved_rows == 0
            also = asyncio.ensure_future(batcher.submit(["also"], 5))  # fits: admitted
            recorder.gate.set()
            assert await asyncio.gather(held, queued, also) == [["HELD"], ["Q"], ["ALSO"]]
            await batcher.close()

    run(main())
    assert ["big1"] not in recorder.batches


def test_close_runs_the_request_waiting_for_room() -> None:
    recorder = Recorder()
    recorder.gate.clear()

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher(recorder, pool, max_batch=1, max_wait_ms=0, max_queue=2)
            held = asyncio.ensure_future(batcher.submit(["held"], 5))
            await asyncio.sleep(0.05)
            queued = asyncio.ensure_future(batcher.submit(["q"], 5))
            waiting = asyncio.ensure_future(batcher.submit(["w1", "w2"], 5))
            await asyncio.sleep(0)
            assert batcher.reserved_rows == 2
            closing = asyncio.ensure_future(batcher.close())
            await asyncio.sleep(0)
            recorder.gate.set()
            await closing
            assert await asyncio.gather(held, queued, waiting) == [["HELD"], ["Q"], ["W1", "W2"]]

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


def test_one_failing_request_fails_alone_and_its_batch_mates_succeed() -> None:
    """A poisoned text fails the whole batched call: the batch is split to find it, and only
    its own request gets the error."""
    recorder = Recorder()
    recorder.gate.clear()
    calls: list[list[str]] = []

    def poisoned(rows: list[str]) -> list[str]:
        calls.append(list(rows))
        if "poison" in rows:
            raise TypeError("cannot encode")
        return recorder(rows)

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher(poisoned, pool, max_batch=16, max_wait_ms=0, max_queue=64)
            first = asyncio.ensure_future(batcher.submit(["first"], 5))
            await asyncio.sleep(0.05)  # held at the gate: the next ones queue into one batch
            names = [["a"], ["b", "c"], ["poison", "d"], ["e"], ["f"], ["g", "h"]]
            jobs = [asyncio.ensure_future(batcher.submit(rows, 5)) for rows in names]
            await asyncio.sleep(0)
            recorder.gate.set()
            assert await first == ["FIRST"]
            results = await asyncio.gather(*jobs, return_exceptions=True)
            assert isinstance(results[2], TypeError)
            good = [r for i, r in enumerate(results) if i != 2]
            assert good == [[t.upper() for t in rows] for i, rows in enumerate(names) if i != 2]
            assert batcher.stats.failed_batches == 1
            # the worker goes on, and a clean batch is measured again
            assert await batcher.submit(["later"], 5) == ["LATER"]
            await batcher.close()

    run(main())
    together = [c for c in calls if len(c) > 2]
    assert together and "poison" in together[0]  # they did share a batch first


def test_an_executor_that_was_shut_down_fails_the_batch_instead_of_stopping_the_worker() -> None:
    async def main() -> None:
        pool = ThreadPoolExecutor(1)
        batcher = DynamicBatcher(Recorder(), pool, max_batch=4, max_wait_ms=0)
        pool.shutdown()
        with pytest.raises(RuntimeError, match="shutdown"):
            await batcher.submit(["a"], 5)
        with pytest.raises(RuntimeError, match="shutdown"):  # the worker is still there
            await batcher.submit(["b"], 5)
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


def _dearer_above(limit: int, clock: ModelClock) -> Callable[[list[str]], list[str]]:
    """A model whose rows cost twice as much in batches of more than ``limit`` rows (as where a
    batch's activations outgrow the cache), on the model's clock."""

    def run(rows: list[str]) -> list[str]:
        time.sleep(0.001)  # busy for real, so that requests queue behind it
        clock.now += (0.001 if len(rows) <= limit else 0.002) * len(rows)
        return rows

    return run


def _closed_loop(
    run: Callable[[list[str]], list[str]], clients: int, requests: int
) -> DynamicBatcher[str]:
    """``clients`` clients each sending ``requests`` one-row requests, one after the other, to a
    batcher with max_batch 32; the batcher once they are done."""

    async def main() -> DynamicBatcher[str]:
        with ThreadPoolExecutor(1) as pool:
            batcher: DynamicBatcher[str] = DynamicBatcher(
                run, pool, max_batch=32, max_wait_ms=20, max_queue=64
            )

            async def client(i: int) -> None:
                for j in range(requests):
                    await batcher.submit([f"{i}-{j}"], 5)

            await asyncio.gather(*(client(i) for i in range(clients)))
            await batcher.close()
            return batcher

    return run_coro(main())


def _assert_only_probes_above(batcher: DynamicBatcher[str], limit: int) -> None:
    """In the later half of the batches, those over ``limit`` rows are at most the probes."""
    sizes = list(batcher.stats.last_sizes)
    later = sizes[len(sizes) // 2 :]
    over = [size for size in later if size > limit]
    assert len(over) <= len(later) // batcher_module._PROBE_EVERY + 1, later


def test_the_batch_cap_stays_below_sizes_that_cost_more_per_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rows cost twice as much above 8 rows: after a few batches of each size, the cap keeps
    batches at 8 rows or fewer, except the probes that re-measure the larger sizes."""
    clock = ModelClock()
    monkeypatch.setattr(batcher_module, "time", clock)
    batcher = _closed_loop(_dearer_above(8, clock), clients=32, requests=20)
    assert batcher.batch_cap <= 8
    _assert_only_probes_above(batcher, 8)
    assert max(batcher.stats.last_sizes) > 8  # larger batches were tried before the cap fell


def test_the_batch_cap_is_max_batch_where_larger_batches_are_as_cheap_per_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = ModelClock()
    monkeypatch.setattr(batcher_module, "time", clock)

    def per_call_and_row(rows: list[str]) -> list[str]:
        time.sleep(0.001)
        clock.now += 0.004 + 0.001 * len(rows)
        return rows

    batcher = _busy_then_alone(per_call_and_row)
    assert batcher.batch_cap == batcher.max_batch
    assert batcher.waiting_pays


def test_a_load_that_never_fills_max_batch_still_gets_a_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """12 clients and max_batch 32: batches of 32 never form, yet the dearer sizes above 4 rows
    are measured and capped."""
    clock = ModelClock()
    monkeypatch.setattr(batcher_module, "time", clock)
    batcher = _closed_loop(_dearer_above(4, clock), clients=12, requests=30)
    assert 32 not in batcher._costs  # never built
    assert batcher.batch_cap <= 4
    _assert_only_probes_above(batcher, 4)
