"""What every router shares: the server's state, the caller's key (auth, scope, rate limit),
the input limits, and running a batch or loading a model with their errors mapped to HTTP.

Plain module-level functions reading the app's state from ``request.app.state``: a route takes
the caller's key as a dependency (``PredictKey``, ``AdminKey``) and the rest as calls.
"""

# No `from __future__ import annotations`: FastAPI reads the dependencies' annotations at run
# time.
import asyncio
import logging
import math
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request

from lmforge.errors import LmforgeError, ModelNotFoundError
from lmforge.monitor import FeedbackStore, PredictionLog
from lmforge.monitor.alert_loop import MonitorLoop
from lmforge.monitor.alert_store import AlertStore
from lmforge.registry import Registry
from lmforge.serve.access_log import note_access
from lmforge.serve.batcher import BatcherClosed, DeadlineExceeded, DynamicBatcher, QueueFull
from lmforge.serve.config import ServeConfig
from lmforge.serve.keys import ApiKey, KeyStore, hash_key
from lmforge.serve.limits import ApiError, RateLimiter
from lmforge.serve.metrics import ServeMetrics
from lmforge.serve.models import ModelChoiceError, ModelPool, ServedModel

T = TypeVar("T")
logger = logging.getLogger("lmforge.serve")


@dataclass
class ServeState:
    """Everything a request may need, built once by ``create_app`` (``app.state.lmforge``)."""

    config: ServeConfig
    registry: Registry
    keys: KeyStore
    pool: ModelPool
    log: PredictionLog
    feedback: FeedbackStore
    limiter: RateLimiter
    metrics: ServeMetrics
    key_cache: dict[str, tuple[float, ApiKey | None]]  # by the secret's hash, never the secret
    alerts: AlertStore
    monitor: MonitorLoop | None = None  # with a monitor: section in the config


def serve_state(request: Request) -> ServeState:
    """The state of the app answering this request (a plain call: no dependency to solve)."""
    state: ServeState = request.app.state.lmforge
    return state


# --- the caller: key, scope, rate limit -----------------------------------------------------


async def caller(request: Request, scope: str) -> ApiKey | None:
    """The key the request carries (None with auth off), its scope, then the rate limit."""
    state = serve_state(request)
    config = state.config
    if not config.auth.enabled:
        key = None
    else:
        scheme, _, secret = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secret:
            raise ApiError(
                401,
                "missing API key — send 'Authorization: Bearer <key>' "
                "(create one with `lmforge keys create`)",
                "missing_key",
                {"WWW-Authenticate": "Bearer"},
            )
        key = await verify_key(state, secret.strip())
        if key is not None:
            note_access(key=key.name)  # the name, never the secret
        if key is None:
            raise ApiError(
                401,
                "invalid or revoked API key — check it, or create a new one with "
                "`lmforge keys create`",
                "invalid_key",
                {"WWW-Authenticate": "Bearer"},
            )
        if not key.allows(scope):
            raise ApiError(
                403,
                f"the key '{key.name}' lacks the '{scope}' scope — use a key created with "
                f"--scope {scope}",
                "missing_scope",
            )
    wait = state.limiter.check(requester(request, key))
    if wait is not None:
        raise ApiError(
            429,
            f"rate limit of {config.limits.rate_per_second:g} requests/s "
            f"(burst {config.limits.burst}) exceeded — retry after {wait:.2f} s",
            "rate_limited",
            {"Retry-After": str(max(1, math.ceil(wait)))},
        )
    return key


def requester(request: Request, key: ApiKey | None) -> str:
    """Who the per-caller limits count: the key, or the client's address with auth off."""
    if key is not None:
        return f"key:{key.id}"
    return request.client.host if request.client else "local"


def scoped(scope: str) -> Any:
    """A dependency: the caller's key, which must hold ``scope``."""

    # One plain dependency (not a chain of them): it runs on every request.
    async def check(request: Request) -> ApiKey | None:
        return await caller(request, scope)

    return Depends(check)


PredictKey = Annotated[ApiKey | None, scoped("predict")]
FeedbackKey = Annotated[ApiKey | None, scoped("feedback")]
AdminKey = Annotated[ApiKey | None, scoped("admin")]


async def verify_key(state: ServeState, secret: str) -> ApiKey | None:
    """The key for a secret, trusting a verified answer for ``auth.cache_seconds``."""
    ttl = state.config.auth.cache_seconds
    now = time.monotonic()
    digest = hash_key(secret)
    cached = state.key_cache.get(digest)
    if cached is not None and now - cached[0] < ttl:
        return cached[1]
    key = await asyncio.to_thread(state.keys.verify, secret)
    if ttl > 0:
        if len(state.key_cache) > 10_000:
            state.key_cache.clear()
        state.key_cache[digest] = (now, key)
    return key


# --- inputs, batches, models ----------------------------------------------------------------


def check_inputs(state: ServeState, inputs: list[str]) -> None:
    """Refuse more texts, or longer ones, than ``limits`` allows, and text that is not valid
    Unicode (422) — before it joins a batch with other clients' texts."""
    limits = state.config.limits
    if len(inputs) > limits.max_inputs:
        raise ApiError(
            422,
            f"{len(inputs)} inputs exceed the limit of {limits.max_inputs} per request "
            "(limits.max_inputs) — split them over several requests",
            "too_many_inputs",
        )
    for i, text in enumerate(inputs):
        if len(text) > limits.max_chars:
            raise ApiError(
                422,
                f"inputs[{i}] has {len(text)} characters, over the limit of "
                f"{limits.max_chars} (limits.max_chars) — shorten it",
                "input_too_long",
            )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate ("\ud800"): no tokenizer takes it
            raise ApiError(
                422,
                f"inputs[{i}] is not valid Unicode: character {exc.start} is a lone surrogate "
                f"(U+{ord(text[exc.start]):04X}) — send text that encodes as UTF-8",
                "invalid_text",
            ) from None


async def run_batch(
    state: ServeState, batcher: DynamicBatcher[Any], inputs: list[str]
) -> list[Any]:
    """The batcher's results for the inputs; a full queue, the deadline, shutdown or a failure
    on this request's own inputs as HTTP."""
    timeout_s = state.config.batching.timeout_s
    try:
        return await batcher.submit(inputs, timeout_s)
    except QueueFull as exc:
        raise ApiError(
            429,
            "the model's queue is full — retry after the Retry-After seconds",
            "queue_full",
            {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))},
        ) from None
    except DeadlineExceeded:
        raise ApiError(
            504,
            f"no result within {timeout_s:g} s (batching.timeout_s) — the server is "
            "overloaded; retry later",
            "deadline_exceeded",
        ) from None
    except BatcherClosed:
        raise ApiError(
            503, "the server is shutting down — retry on another replica", "shutting_down"
        ) from None
    except LmforgeError:
        raise  # a failure the library already describes (e.g. a model found damaged: 503)
    except Exception as exc:  # this request's own rows failed (its batch mates were re-run)
        logger.error("inference failed on one request: %r", exc, exc_info=exc)
        raise ApiError(
            500,
            f"the model failed on this request's inputs ({type(exc).__name__}) — the server "
            "log has the details; other requests are not affected",
            "inference_failed",
        ) from None


def non_finite_output(state: ServeState, served: ServedModel) -> ApiError:
    """The error for a model that computed NaN or infinity (500, counted per version): never
    sent as a score, and never logged."""
    state.metrics.non_finite_outputs.labels(served.public_ref).inc()
    logger.error("%s computed a non-finite output (NaN or infinity)", served.public_ref)
    which = f"model {served.name}"
    if served.version is not None:
        which += f" version {served.version} ({served.public_ref})"
    return ApiError(
        500,
        f"{which} computed a non-finite output (NaN or infinity) for this request — the "
        "version is likely damaged; use or promote another one",
        "non_finite_output",
    )


async def load(coro: Awaitable[T]) -> T:
    """A model from the pool: an unknown one stays the request's fault (404, or 422 when the
    request must name one); any other failure to load it is the server's (503)."""
    try:
        served = await coro
    except (ModelNotFoundError, ModelChoiceError):
        raise
    except LmforgeError as exc:  # unsupported, corrupt version, missing weights
        raise ApiError(503, exc.message, "model_unavailable") from None
    note_access(model=getattr(served, "public_ref", None))
    return served
