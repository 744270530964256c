"""The HTTP/1.1 connection limits uvicorn lacks: header size and count, a deadline for a
request's head and one for its body, JSON answers for its concurrency cap and for requests cut
off by the graceful-shutdown timeout.

uvicorn's httptools protocol buffers a header line of any length (a 100 MB header was parsed,
unauthenticated, on ``/healthz``), and it has no timer between accepting a connection and the
end of a request's head, nor while a body trickles in: a client could hold a socket and its
buffers for as long as it liked. :class:`LimitedHttpProtocol` is that protocol with the limits
of ``ServeConfig.connections`` added; uvicorn takes the class as its ``http`` setting. It uses
a few of uvicorn's attributes (``parser``, ``cycle``, ``transport``, ``_start_asgi_task``), so
tests/serve/test_connections.py runs it over real sockets: an uvicorn release that changes
them fails there, not in production.
"""

from __future__ import annotations

import asyncio
import json
import logging
from asyncio import TimerHandle
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from lmforge.serve.config import ConnectionsConfig
from lmforge.serve.limits import error_body

logger = logging.getLogger("lmforge.serve")
RETRY_AFTER_S = 1  # what a client cut off by overload or shutdown is told to wait
# After a refusal, how long what the client still sends is read and dropped before the socket
# closes: closing with unread bytes makes the kernel send a reset, and a reset can destroy the
# refusal before the client reads it (nginx's "lingering close").
LINGER_S = 2.0


class _HeadTooLarge(Exception):
    """Raised in a parser callback to stop parsing; the parser re-raises it as its own error."""


def error_response(status: int, phrase: str, message: str, code: str, retry: bool = False) -> bytes:
    """A complete HTTP/1.1 response carrying the JSON error every route answers with, closing
    the connection (it is sent where the request cannot be read on)."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = json.dumps(error_body(message, code, kind), ensure_ascii=False).encode()
    head = [
        f"HTTP/1.1 {status} {phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    if retry:
        head.append(f"retry-after: {RETRY_AFTER_S}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _asgi_error(status: int, message: str, code: str) -> Any:
    """An ASGI app that answers every request with one JSON error and Retry-After."""
    body = json.dumps(error_body(message, code, "server_error"), ensure_ascii=False).encode()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(RETRY_AFTER_S).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


_OVERLOADED = _asgi_error(
    503,
    "the server holds its limit of connections (connections.max_concurrency) — retry after "
    "the Retry-After seconds",
    "overloaded",
)
_SHUTTING_DOWN = _asgi_error(
    503,
    "the server is shutting down and this request did not finish within graceful_timeout_s "
    "— retry on another replica",
    "shutting_down",
)


def protocol_class(limits: ConnectionsConfig) -> type[LimitedHttpProtocol]:
    """The protocol class to give uvicorn as ``http``, bound to these limits."""
    bound: type[LimitedHttpProtocol] = type(
        "BoundHttpProtocol", (LimitedHttpProtocol,), {"limits": limits}
    )
    return bound


class LimitedHttpProtocol(HttpToolsProtocol):
    limits: ConnectionsConfig = ConnectionsConfig()

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._reading_head = True  # between a request's first byte (or the accept) and its head
        self._head_bytes = 0  # bytes received while reading the head: all of them are buffered
        self._head_fields = 0
        self._parsed_head = 0
        self._rejection: bytes | None = None  # set by a callback that stops the parser
        self._head_timer: TimerHandle | None = None
        self._body_timer: TimerHandle | None = None
        self._lingering = False

    # --- the connection -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()  # a client that connects and sends nothing is a slow one too

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        if self._reading_head:
            self._head_bytes += len(data)
        super().data_received(data)
        # Still in the head after this chunk: everything so far was head, so count it all
        # (the parser holds an unfinished header line in memory until its end).
        if self._reading_head and self._head_bytes > self.limits.max_header_bytes:
            self._refuse_head("bytes")

    def send_400_response(self, msg: str) -> None:
        # A parser callback stopped the parser on a limit: answer that limit, not "invalid".
        if self._rejection is not None:
            self._close_with(self._rejection)
        else:
            super().send_400_response(msg)

    # --- the parser's callbacks -----------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head = True
        self._head_fields = self._parsed_head = 0
        if self._head_timer is None:  # the first request's timer runs from the accept
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_fields += 1
        if self._head_fields > self.limits.max_headers:
            self._stop_parser("fields")
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_bytes = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()
        if self.cycle is not None and self.cycle.more_body:
            self._body_timer = self.loop.call_later(
                self.limits.body_timeout_s, self._body_timed_out, self.cycle
            )

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        if app is service_unavailable:  # uvicorn's concurrency cap, in plain text: JSON instead
            app = _OVERLOADED
        super()._start_asgi_task(cycle, _answer_cancelled(app, cycle))

    # --- limits ---------------------------------------------------------------------------

    def _count_head(self, size: int) -> None:
        # The request line and fields as parsed: a head that arrived in one chunk with its body
        # is measured here, not by the bytes received.
        self._parsed_head += size
        if self._parsed_head > self.limits.max_header_bytes:
            self._stop_parser("bytes")

    def _stop_parser(self, what: str) -> None:
        self._rejection = self._head_refusal(what)
        raise _HeadTooLarge

    def _head_refusal(self, what: str) -> bytes:
        limit = (
            f"{self.limits.max_headers} header fields (connections.max_headers)"
            if what == "fields"
            else f"{self.limits.max_header_bytes} bytes of request line and headers "
            "(connections.max_header_bytes)"
        )
        return error_response(
            431,
            "Request Header Fields Too Large",
            f"the request's head is over the limit of {limit} — send fewer or shorter headers",
            "headers_too_large",
        )

    def _refuse_head(self, what: str) -> None:
        self._close_with(self._head_refusal(what))

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._reading_head:
            self._close_with(
                error_response(
                    408,
                    "Request Timeout",
                    f"the request's line and headers did not arrive within "
                    f"{self.limits.header_timeout_s:g} s (connections.header_timeout_s)",
                    "header_timeout",
                )
            )

    def _body_timed_out(self, cycle: RequestResponseCycle) -> None:
        self._body_timer = None
        if cycle is not self.cycle or not cycle.more_body:
            return
        if cycle.response_started:  # answered already (e.g. 401 before reading the body)
            self.transport.close()
            return
        cycle.disconnected = True  # the route reads a disconnect; what it sends is dropped
        cycle.message_event.set()
        self._close_with(
            error_response(
                408,
                "Request Timeout",
                f"the request's body did not arrive within {self.limits.body_timeout_s:g} s "
                "(connections.body_timeout_s)",
                "body_timeout",
            )
        )

    def _close_with(self, response: bytes) -> None:
        """Send a refusal, then stop: end our side of the stream, drop what still arrives, and
        close after ``LINGER_S`` (or when the client closes first)."""
        self._cancel_timers()
        if self._lingering or self.transport.is_closing():
            return
        self._lingering = True
        self.transport.write(response)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None


def _answer_cancelled(app: Any, cycle: RequestResponseCycle) -> Any:
    """``app``, answering 503 with Retry-After instead of uvicorn's plain-text 500 when its
    task is cancelled before it answered — uvicorn cancels request tasks only when
    ``graceful_timeout_s`` runs out at shutdown."""

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        try:
            await app(scope, receive, send)
        except asyncio.CancelledError:
            if cycle.response_started or cycle.disconnected:
                raise
            logger.warning(
                "%s %s cut off by the graceful-shutdown timeout: answered 503",
                scope.get("method"),
                scope.get("path"),
            )
            # The answer is the task's last act, so the cancellation is not passed on: uvicorn
            # would log it as an application error and close the connection before it is sent.
            await _SHUTTING_DOWN(scope, receive, send)

    return guarded
