"""A generation on a served decoder as an asyncio stream of text, for the routes that write.

The engine decodes on its own thread and calls back with each piece of text; :func:`submit`
puts those pieces on an asyncio queue, :func:`drain` and :func:`collect` read them back, and
the engine's refusals become the HTTP errors every route answers with (``ApiError``). With
log-probabilities asked for, each piece of text carries the entries of the tokens it completes
(a token that ends in half a character, or could begin a stop string, sends its entry with the
text that follows it).
"""

from __future__ import annotations

import asyncio
import math
import time

from fastapi import Request

from lmforge.runtime.generation import (
    EngineClosed,
    EngineFull,
    FinishReason,
    GenerationError,
    GenerationRequest,
    SamplingParams,
)
from lmforge.runtime.logprobs import TokenLogprob
from lmforge.serve.limits import ApiError
from lmforge.serve.metrics import ServeMetrics
from lmforge.serve.models import ServedDecoder

__all__ = ["Events", "collect", "drain", "public_reason", "reply", "submit"]

Events = asyncio.Queue[tuple[str, FinishReason | None, list[TokenLogprob]]]


def submit(
    served: ServedDecoder,
    prompt: list[int],
    params: SamplingParams,
    metrics: ServeMetrics,
    truncate: bool = False,
) -> tuple[GenerationRequest, Events]:
    """Queue a generation on the served decoder; its text arrives on the returned queue."""
    loop = asyncio.get_running_loop()
    queue: Events = asyncio.Queue()
    # Both callbacks run on the engine thread, entries first: the text takes those waiting.
    pending: list[TokenLogprob] = []

    def on_text(delta: str, reason: FinishReason | None) -> None:
        entries = pending[:]
        pending.clear()
        loop.call_soon_threadsafe(queue.put_nowait, (delta, reason, entries))

    on_logprobs = pending.append if params.logprobs is not None else None
    try:
        seq = served.engine.submit(
            prompt, params, on_text, truncate=truncate, on_logprobs=on_logprobs
        )
    except GenerationError as exc:
        raise ApiError(422, exc.message, "invalid_generation_request") from None
    except EngineFull as exc:
        raise ApiError(
            429,
            "every generation slot is busy and the waiting line is full — retry after the "
            "Retry-After seconds",
            "queue_full",
            {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))},
        ) from None
    except EngineClosed:
        raise ApiError(
            503, "the server is shutting down — retry on another replica", "shutting_down"
        ) from None
    metrics.prompt_tokens.labels(served.name).inc(len(seq.prompt))
    return seq, queue


async def drain(queue: Events) -> tuple[str, FinishReason | None, list[TokenLogprob]]:
    """The next text (and its tokens' entries), joined with whatever else is already waiting:
    when the event loop falls behind the decoder (many streams on few cores), one event carries
    several tokens instead of the loop writing one event per token."""
    delta, reason, entries = await queue.get()
    while reason is None and not queue.empty():
        more, reason, also = queue.get_nowait()
        delta += more
        entries = [*entries, *also]
    return delta, reason, entries


async def collect(
    request: Request | None, seq: GenerationRequest, queue: Events, timeout_s: float
) -> tuple[str, FinishReason]:
    """The whole text; gives up (and frees the slot) on disconnect or the deadline."""
    deadline = time.monotonic() + timeout_s
    parts: list[str] = []
    try:
        while True:
            try:
                delta, reason, _ = await asyncio.wait_for(queue.get(), 1.0)
            except TimeoutError:
                if request is not None and await request.is_disconnected():
                    raise ApiError(499, "client went away", "client_closed") from None
                if time.monotonic() > deadline:
                    raise ApiError(
                        504,
                        f"no complete answer within {timeout_s:g} s (generation.timeout_s) — "
                        "ask for fewer tokens or stream",
                        "deadline_exceeded",
                    ) from None
                continue
            parts.append(delta)
            if reason is not None:
                break
    finally:
        seq.cancel()  # a no-op once finished; frees the slot on any early exit
    if reason == "error":
        raise ApiError(503, "generation failed on the server — retry", "generation_failed")
    return "".join(parts), reason


async def reply(
    served: ServedDecoder,
    prompt: list[int],
    params: SamplingParams,
    metrics: ServeMetrics,
    timeout_s: float,
) -> str:
    """A whole answer to a prompt (the assistant's retrieval-augmented answers use it)."""
    seq, queue = submit(served, prompt, params, metrics, truncate=True)
    text, _ = await collect(None, seq, queue, timeout_s)
    metrics.count_tokens(served.name, len(seq.generated), seq.cached_tokens)
    return text


def public_reason(reason: FinishReason | None) -> str | None:
    """OpenAI's finish reasons are stop and length; an engine error ends the text as stop."""
    if reason is None:
        return None
    return "length" if reason == "length" else "stop"
