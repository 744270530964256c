"""Adaptive dynamic batching: many requests, one inference call, off the event loop.

Requests for one model wait in a bounded queue (counted in rows, i.e. texts). One worker task
takes up to ``max_batch`` rows at a time and runs them in the inference thread. It waits for a
batch to fill only while the model is busy: the expected batch size is a moving average of the
recent ones, so a lone request on an idle model runs at once (batch-1 latency stays the
backend's own), while under load the worker waits at most ``max_wait_ms`` for the rows the
clients in flight will send next.

Both the wait and the batch size follow the measured cost per row, kept per size class (1, 2,
4, … rows). The batch cap is the largest class whose cost per row is within 10 % of the
cheapest class's, so the worker never builds batches slower per row than smaller ones (on a
CPU whose caches or kernels favour mid-sized batches). Probe batches capped at ``max_batch``,
its half, its quarter, … 1 row keep every class measured: each once at first, then one of them
in turn every ``_PROBE_EVERY`` batches, so the cap follows the load. And the worker waits
only where waiting pays: once batches of the cap's size are known not to be cheaper per row
than small ones (as where int8 kernels gain nothing from batch size), it runs what is queued
at once instead.

A full queue refuses at once (:class:`QueueFull`, with how long to wait). Admission is fair to
large requests: one larger than the room left in a queue that is not full takes the one
*reservation* and joins as soon as the rows ahead of it have drained enough (or the queue is
empty); while it waits, later requests are refused as if the queue were full, so none overtakes
it. So whether a request is admitted does not depend on its size, and one that holds the
reservation is admitted within the time the model takes to run the rows ahead of it. A request
past its deadline is dropped (:class:`DeadlineExceeded`), and closing finishes what was queued
(the request waiting for room included).

One request's failure does not fail the others batched with it: when a batched call raises, the
batch is split in halves and each half run again, down to the single request that fails, which
alone gets the exception.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeAlias, TypeVar

R = TypeVar("R")
_Outcome: TypeAlias = "list[R] | Exception"  # one request's results, or why it failed

_EMA = 0.5  # weight of the newest batch in the expected batch size: adapts within a few batches
_COST_EMA = 0.2  # weight of the newest batch in the per-row costs (noisier, so slower)
_WORTH_WAITING = 0.8  # wait only if a large batch costs under 80 % per row of a small one
_CAP_TOLERANCE = 1.1  # a size class within 10 % of the cheapest per row stays under the cap
_PROBE_EVERY = 32  # batches between two probes (see _next_cap)


class QueueFull(Exception):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"queue full; retry after {retry_after_s:.2f} s")
        self.retry_after_s = retry_after_s


class DeadlineExceeded(Exception):
    pass


class BatcherClosed(Exception):
    pass


@dataclass
class _Job(Generic[R]):
    rows: list[str]
    future: asyncio.Future[list[R]]
    deadline: float
    abandoned: bool = False


@dataclass
class BatchStats:
    """What the metrics read after each batch."""

    batches: int = 0
    rows: int = 0
    seconds: float = 0.0
    last_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=256))
    failed_batches: int = 0  # batched calls that raised, so were split to find the failing rows

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


class DynamicBatcher(Generic[R]):
    def __init__(
        self,
        run: Callable[[list[str]], Sequence[R]],
        executor: Executor,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        max_queue: int = 64,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self._run = run
        self._executor = executor
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self._on_batch = on_batch
        self._queue: deque[_Job[R]] = deque()
        self.queued_rows = 0
        self._reserved: _Job[R] | None = None  # the request waiting for room (see submit)
        self._arrived = asyncio.Event()
        self._expected = 1.0
        self._costs: dict[int, float] = {}  # seconds per row, by size class (see _size_class)
        self._closing = False
        self.stats = BatchStats()
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def submit(self, rows: list[str], timeout_s: float) -> list[R]:
        """The results for ``rows``, in order, once a batch containing them has run."""
        if self._closing:
            raise BatcherClosed("the model is shutting down")
        loop = asyncio.get_running_loop()
        job: _Job[R] = _Job(rows, loop.create_future(), loop.time() + timeout_s)
        if self._reserved is None and self._fits(len(rows)):
            self._enqueue(job)
        elif self._reserved is None and self.queued_rows < self.max_queue:
            self._reserved = job  # queued by the worker once the rows ahead have drained
        else:  # full, or another request already waits for room
            raise QueueFull(self._retry_after())
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout_s)
        except TimeoutError:
            self._abandon(job)  # the worker skips it if it is still queued
            raise DeadlineExceeded(f"no result within {timeout_s:g} s") from None
        except asyncio.CancelledError:
            self._abandon(job)  # the client went away
            raise

    def _fits(self, rows: int) -> bool:
        # An empty queue takes any request (one larger than the queue still runs, alone).
        return self.queued_rows == 0 or self.queued_rows + rows <= self.max_queue

    def _enqueue(self, job: _Job[R]) -> None:
        self._queue.append(job)
        self.queued_rows += len(job.rows)
        self._arrived.set()

    def _abandon(self, job: _Job[R]) -> None:
        job.abandoned = True
        if self._reserved is job:
            self._reserved = None

    def _admit_reserved(self) -> None:
        """Queue the request holding the reservation once it fits (called as rows drain)."""
        job = self._reserved
        if job is not None and self._fits(len(job.rows)):
            self._reserved = None
            self._enqueue(job)

    @property
    def reserved_rows(self) -> int:
        """Rows of the request waiting for room (0 when none waits)."""
        return len(self._reserved.rows) if self._reserved is not None else 0

    def _retry_after(self) -> float:
        rate = self.stats.rows_per_second or 1.0
        return max(0.05, (self.queued_rows + self.reserved_rows) / rate)

    async def close(self) -> None:
        """Stop taking requests, finish the queued ones (and the one waiting for room), stop
        the worker."""
        self._closing = True
        self._arrived.set()
        await self._worker

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._reserved is not None:  # e.g. every queued request was abandoned
                    self._admit_reserved()
                    continue
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._fill(loop)
            jobs = self._take(loop)
            self._admit_reserved()  # rows drained: the waiting request may fit now
            if not jobs:
                continue
            start = time.perf_counter()
            outcomes: list[_Outcome[R]]
            try:
                outcomes, failed = await loop.run_in_executor(
                    self._executor, self._run_isolating, [job.rows for job in jobs]
                )
            except Exception as exc:  # the executor itself failed (shut down): the whole batch
                outcomes, failed = [exc] * len(jobs), True
            if failed:
                self.stats.failed_batches += 1
            else:  # a split batch's time says nothing about the cost of a batch of its size
                self._record(sum(len(job.rows) for job in jobs), time.perf_counter() - start)
            for job, outcome in zip(jobs, outcomes, strict=True):
                if job.future.done():
                    continue
                if isinstance(outcome, Exception):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result(outcome)

    def _run_isolating(self, groups: list[list[str]]) -> tuple[list[_Outcome[R]], bool]:
        """Each group's results (or the exception its rows alone raise), and whether the call
        on all of them together failed. Runs in the inference thread: the retries too."""
        try:
            results = self._run([row for group in groups for row in group])
        except Exception as exc:  # whichever request's rows failed is found below
            if len(groups) == 1:
                return [exc], True
            half = len(groups) // 2
            left, _ = self._run_isolating(groups[:half])
            right, _ = self._run_isolating(groups[half:])
            return left + right, True
        outcomes: list[_Outcome[R]] = []
        offset = 0
        for group in groups:
            outcomes.append(list(results[offset : offset + len(group)]))
            offset += len(group)
        return outcomes, False

    @property
    def batch_cap(self) -> int:
        """The most rows one batch may take: ``max_batch``, lowered to the largest size class
        whose measured cost per row is within ``_CAP_TOLERANCE`` of the cheapest class's (a
        class not yet measured does not lower it)."""
        if not self._costs:
            return self.max_batch
        cheapest = min(self._costs.values())
        cap = self.max_batch
        for size in sorted(self._costs, reverse=True):
            if self._costs[size] <= _CAP_TOLERANCE * cheapest:
                break
            cap = size - 1  # this class is dearer per row than a smaller one: stay below it
        return max(1, cap)

    def _next_cap(self) -> int:
        """The cap for the next batch. A batch of what is queued measures its own size class,
        so while that class is unmeasured nothing is held back. Then probes keep the smaller
        classes measured: max_batch, its half, its quarter, … 1, each once as soon as enough
        rows are queued to fill it, then one of them in turn every ``_PROBE_EVERY`` batches,
        as the load changes (a size the load never reaches is not waited for)."""
        if _size_class(min(self.queued_rows, self.max_batch)) not in self._costs:
            return self.max_batch
        probes = [self.max_batch >> i for i in range(self.max_batch.bit_length())]
        for size in probes:
            if _size_class(size) not in self._costs and self.queued_rows >= size:
                return size
        if self.stats.batches % _PROBE_EVERY == _PROBE_EVERY - 1:
            return probes[(self.stats.batches // _PROBE_EVERY) % len(probes)]
        return self.batch_cap

    @property
    def waiting_pays(self) -> bool:
        """Unknown until a small batch (≤ max_batch / 4 rows) and one of at least half the cap
        were measured; then whether the larger batches are cheaper per row."""
        cap = self.batch_cap
        small = [c for size, c in self._costs.items() if size * 4 <= self.max_batch]
        large = [c for size, c in self._costs.items() if size * 2 >= cap and size <= cap]
        if not small or not large:
            return True
        return min(large) < _WORTH_WAITING * max(small)

    async def _fill(self, loop: asyncio.AbstractEventLoop) -> None:
        """While busy, give the batch up to ``max_wait`` to reach the size recent load suggests."""
        if not self.waiting_pays:
            return
        target = min(self._next_cap(), math.floor(self._expected))
        deadline = loop.time() + self.max_wait
        while self.queued_rows < target and not self._closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _take(self, loop: asyncio.AbstractEventLoop) -> list[_Job[R]]:
        jobs: list[_Job[R]] = []
        rows = 0
        now = loop.time()
        cap = self._next_cap()
        while self._queue:
            job = self._queue[0]
            if jobs and rows + len(job.rows) > cap:
                break
            self._queue.popleft()
            self.queued_rows -= len(job.rows)
            if job.abandoned or job.future.done():
                continue
            if job.deadline <= now:
                job.future.set_exception(DeadlineExceeded("deadline passed while queued"))
                continue
            jobs.append(job)
            rows += len(job.rows)
        return jobs

    def _record(self, rows: int, seconds: float) -> None:
        self._expected = (1 - _EMA) * self._expected + _EMA * rows
        size = _size_class(rows)
        self._costs[size] = _ema(self._costs.get(size), seconds / rows)
        self.stats.batches += 1
        self.stats.rows += rows
        self.stats.seconds += seconds
        self.stats.last_sizes.append(rows)
        if self._on_batch is not None:
            self._on_batch(rows, seconds)


def _size_class(rows: int) -> int:
    """The power of two at or below ``rows``: batches of 5 to 7 rows cost about the same."""
    return 1 << (max(rows, 1).bit_length() - 1)


def _ema(old: float | None, new: float) -> float:
    return new if old is None else (1 - _COST_EMA) * old + _COST_EMA * new
