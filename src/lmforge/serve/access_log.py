"""The server's access log: one JSON line per HTTP request, and the request id that ties a
client's complaint to its line.

:class:`AccessLogMiddleware` is a pure ASGI middleware (Starlette's ``BaseHTTPMiddleware`` would
buffer streamed answers): it passes every message through as it comes, adds ``X-Request-ID`` to
the response (the client's own id when it is a short safe token, else a new one), and when the
response ends writes time, request id, method, route, path, model, status, latency and the API
key's *name* — never the key, and the request body only with ``access_log.include_body`` — to
the ``lmforge.access`` logger (probes and scrapes, ``access_log.skip_paths``, get the header but
no line). The routes and dependencies that learn the model or the key
report them with :func:`note_access`; a context variable carries them to the line.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import re
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lmforge.serve.config import AccessLogConfig

__all__ = ["REQUEST_ID_HEADER", "AccessLogMiddleware", "note_access"]

REQUEST_ID_HEADER = "X-Request-ID"
LOGGER = "lmforge.access"
# a client's id is echoed and logged as is, so only a short token of safe characters is kept
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_BODY_CHARS = 2000  # with include_body: at most this much of a body per line

_current: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "lmforge_access", default=None
)
_handlers: dict[str, logging.Handler] = {}  # one per destination, however many apps are built


def note_access(**fields: Any) -> None:
    """Add fields (``model``, ``key``) to the access-log line of the request being answered;
    a no-op outside a request or with the log off."""
    record = _current.get()
    if record is not None:
        record.update(fields)


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (a test runner swaps it)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass


def _logger(config: AccessLogConfig) -> logging.Logger:
    """A logger under ``lmforge.access`` for the configured destination (stderr by default, or
    the file), its handler attached once. One logger per destination, so an app that logs to a
    file never also writes to the stderr an earlier app in the same process chose; the lines
    do not go through the root logger's format."""
    where = str(Path(config.file).resolve()) if config.file else "stderr"
    suffix = (
        "stderr" if not config.file else "file-" + hashlib.sha1(where.encode()).hexdigest()[:12]
    )
    parent = logging.getLogger(LOGGER)  # a handler added here hears every destination's lines
    parent.setLevel(logging.INFO)
    parent.propagate = False
    logger = logging.getLogger(f"{LOGGER}.{suffix}")
    if where not in _handlers:
        if config.file:
            Path(where).parent.mkdir(parents=True, exist_ok=True)
            handler: logging.Handler = logging.FileHandler(where, encoding="utf-8")
        else:
            handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        _handlers[where] = handler
        logger.addHandler(handler)
    return logger


class AccessLogMiddleware:
    """One JSON line per HTTP request, and ``X-Request-ID`` on every response."""

    def __init__(self, app: ASGIApp, config: AccessLogConfig) -> None:
        self.app = app
        self.config = config
        self.logger = _logger(config) if config.enabled else None
        self.skip = frozenset(config.skip_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = _request_id(scope)
        record: dict[str, Any] = {}
        status = 500  # unless a response starts: an exception the server answers itself
        body = bytearray()

        async def receive_body() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) < _BODY_CHARS:
                body.extend(message.get("body", b"")[: _BODY_CHARS - len(body)])
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != b"x-request-id"
                ]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        token = _current.set(record if self.logger is not None else None)
        try:
            wanted = receive_body if self.config.include_body else receive
            await self.app(scope, wanted, send_with_id)
        finally:
            _current.reset(token)
            if self.logger is not None and scope.get("path") not in self.skip:
                line = {
                    "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                    "request_id": request_id,
                    "method": scope.get("method"),
                    "route": getattr(scope.get("route"), "path", None),
                    "path": scope.get("path"),
                    "model": record.get("model"),
                    "status": status,
                    "latency_ms": round((time.perf_counter() - start) * 1000, 2),
                    "key": record.get("key"),
                }
                if self.config.include_body:
                    line["body"] = body.decode("utf-8", errors="replace")
                self.logger.info(json.dumps(line, ensure_ascii=False))


def _request_id(scope: Scope) -> str:
    """The client's X-Request-ID when it is a short safe token, else a new random one."""
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            given = bytes(value).decode("latin-1")
            if _SAFE_ID.fullmatch(given):
                return given
            break
    return uuid.uuid4().hex
