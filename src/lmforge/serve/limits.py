"""Request limits (a token bucket per API key, the body-size cap as an ASGI middleware) and the
errors every route answers with."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_MAX_BUCKETS = 10_000  # identities remembered at once; full (idle) buckets are dropped first


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}
        self.param = param  # the request field at fault, when one is (OpenAI's error.param)


class RateLimiter:
    """``rate`` requests per second per identity, with bursts of up to ``burst``."""

    def __init__(self, rate: float | None, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def check(self, identity: str) -> float | None:
        """None if the request may go ahead (and takes a token), else seconds until it may."""
        if self.rate is None:
            return None
        now = time.monotonic()
        bucket = self._buckets.get(identity)
        if bucket is None:
            if len(self._buckets) >= _MAX_BUCKETS:
                self._forget_idle(now)
            bucket = self._buckets[identity] = _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        return (1 - bucket.tokens) / self.rate

    def _forget_idle(self, now: float) -> None:
        assert self.rate is not None
        rate = self.rate
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.stamp) * rate >= 1]
        for key in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[key]


class BodyTooLarge(Exception):
    pass


def error_body(
    message: str, code: str, kind: str = "invalid_request_error", param: str | None = None
) -> dict[str, Any]:
    """The JSON error every 4xx/5xx carries: the OpenAI API's error object (message, type,
    param — the field at fault or null — and code), so its clients read it."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class BodyLimitMiddleware:
    """413 for a body over ``max_bytes``, by its Content-Length or while it streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int, on_reject: Any = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._reject(send)
                    return
        received = 0
        too_large = False

        async def counted_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # The framework turns a failed body read into its own error response: replace it.
            if not too_large:
                await send(message)
            elif message["type"] == "http.response.start":
                await self._reject(send)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except BodyTooLarge:
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        if self.on_reject is not None:
            self.on_reject()
        body = json.dumps(
            error_body(
                f"request body larger than the limit of {self.max_bytes} bytes "
                "(limits.max_body_bytes) — send fewer or shorter inputs per request",
                "body_too_large",
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
