"""Alert notifications POSTed to a webhook URL, in the background.

:meth:`WebhookSender.send` only queues the JSON body, so nothing that fires an alert waits on
the receiver; one task POSTs them in order, each with a timeout and a few retries with
exponential backoff (on a connection error, a timeout, 429 or 5xx — a 4xx other than 429 is the
request's fault and is not retried). A delivery that fails for good is logged and counted
(``on_outcome("failed")``), never raised: the alert itself is already stored. A queue that is
full (the receiver has been away for long) drops new bodies (``on_outcome("dropped")``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import httpx

from lmforge.errors import first_line

logger = logging.getLogger("lmforge.monitor")

_MAX_QUEUE = 1000
OnOutcome = Callable[[str], None]  # "sent", "failed" or "dropped"


class WebhookSender:
    """POSTs queued JSON bodies to ``url``: ``timeout_s`` per try, ``retries`` more tries after
    the first, ``backoff_s`` × 2^n between them."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        on_outcome: OnOutcome | None = None,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._on_outcome = on_outcome
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(_MAX_QUEUE)
        self._task: asyncio.Task[None] | None = None
        self._current: dict[str, Any] | None = None  # the body being delivered
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._deliver_forever())

    def send(self, body: dict[str, Any]) -> None:
        """Queue a body to POST; returns at once."""
        try:
            self._queue.put_nowait(body)
        except asyncio.QueueFull:
            self.dropped += 1
            self._outcome("dropped")
            logger.error("alert webhook: %d bodies waiting, one dropped", _MAX_QUEUE)

    async def drain(self) -> None:
        """Wait until every queued body is delivered or given up on."""
        await self._queue.join()

    async def close(self, grace_s: float = 10.0) -> None:
        """Deliver what is queued, for at most ``grace_s`` (a receiver that is away must not
        hold up a shutdown), then stop; what is left is logged and counted as dropped."""
        task = self._task
        if task is None:
            return

        async def finish() -> None:
            await self._queue.put(None)  # after what is queued: each body gets its tries
            await task

        try:
            await asyncio.wait_for(finish(), grace_s)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            left = sum(1 for body in self._drain_queue() if body is not None)
            left += self._current is not None  # cut off mid-delivery
            if left:
                self.dropped += left
                for _ in range(left):
                    self._outcome("dropped")
                logger.error("alert webhook: %d bodies not delivered at shutdown", left)
        self._task = None

    def _drain_queue(self) -> list[dict[str, Any] | None]:
        left = []
        while not self._queue.empty():
            left.append(self._queue.get_nowait())
            self._queue.task_done()
        return left

    async def _deliver_forever(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as client:
            while True:
                body = await self._queue.get()
                try:
                    if body is None:
                        return
                    self._current = body
                    ok = await self._deliver(client, body)
                    self._current = None
                    if ok:
                        self.sent += 1
                    else:
                        self.failed += 1
                    self._outcome("sent" if ok else "failed")
                finally:
                    self._queue.task_done()

    async def _deliver(self, client: httpx.AsyncClient, body: dict[str, Any]) -> bool:
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = await client.post(self.url, json=body)
            except httpx.HTTPError as exc:  # refused, reset, timed out: worth another try
                problem = f"{type(exc).__name__}: {first_line(exc)}"
                continue
            if response.is_success:
                return True
            problem = f"HTTP {response.status_code}"
            if response.status_code < 500 and response.status_code != 429:
                break  # the receiver refuses this body: another try would be refused too
        logger.error(
            "alert webhook: %s not delivered to %s (%s)", _what(body), self.url, problem or "?"
        )
        return False

    def _outcome(self, outcome: str) -> None:
        if self._on_outcome is not None:
            self._on_outcome(outcome)


def _what(body: dict[str, Any]) -> str:
    alert = body.get("alert") or {}
    return f"{body.get('event', 'alert')} {alert.get('rule', '?')} on {alert.get('model', '?')}"
