"""The bodies every router shares: the strict request base and the error answer.

Each router keeps its own request and response models; only these are common to all of them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class RequestBody(BaseModel):
    """A request body: unknown fields are refused (422 ``unknown_field``), never ignored."""

    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None  # the request field at fault, when one is
    code: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


# Documented on every route (the app's default responses), in the OpenAI error shape.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "malformed request",
        401: "missing, invalid or revoked API key",
        403: "the key lacks the scope",
        404: "unknown model or version",
        413: "body over limits.max_body_bytes",
        422: "invalid field, too many or too long inputs",
        429: "over the rate limit, or the model's queue is full (see Retry-After)",
        503: "the model cannot be loaded, or the server is shutting down",
        504: "no result within batching.timeout_s",
    }.items()
}
