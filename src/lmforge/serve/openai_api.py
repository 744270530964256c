"""OpenAI-compatible text generation: POST /v1/chat/completions and POST /v1/completions.

The bodies and answers follow the OpenAI API (the official client works unchanged), with two
extensions a small local model needs: ``top_k`` and ``repetition_penalty``, and
``truncate_prompt`` to keep the end of a prompt too long for the context instead of refusing
it. ``stream: true`` answers with server-sent events; a client that goes away mid-stream frees
its sequence slot before the next decoding step.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time.
import asyncio
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from lmforge.runtime.generation import (
    EngineClosed,
    EngineFull,
    FinishReason,
    GenerationError,
    GenerationRequest,
    SamplingParams,
)
from lmforge.serve.config import ServeConfig
from lmforge.serve.keys import ApiKey
from lmforge.serve.limits import ApiError, error_body
from lmforge.serve.metrics import ServeMetrics
from lmforge.serve.models import ModelPool, ServedDecoder

__all__ = ["add_generation_routes", "collect", "reply", "submit"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = Field(None, max_length=64)

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(_Body):
    include_usage: bool = False


class _Sampling(_Body):
    model: str | None = Field(
        None, max_length=256, description="a served decoder (see GET /v1/models)"
    )
    max_tokens: int | None = Field(
        None, ge=1, description="tokens to generate at most (generation.max_tokens caps it)"
    )
    temperature: float = Field(1.0, ge=0, le=2, description="0 is greedy")
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="extension: keep the k likeliest tokens (0: off)")
    repetition_penalty: float = Field(
        1.0, gt=0, le=10, description="extension: >1 discourages tokens already present"
    )
    stop: str | list[str] | None = Field(None, description="up to 4 strings that end the text")
    seed: int | None = Field(None, description="same seed and request, same text")
    n: int = Field(1, ge=1, le=1, description="only 1 choice per request")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)
    truncate_prompt: bool = Field(
        False, description="extension: keep the end of a prompt too long for the context"
    )
    frequency_penalty: float = Field(0.0, ge=0, le=0, description="not supported (0 only)")
    presence_penalty: float = Field(0.0, ge=0, le=0, description="not supported (0 only)")


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="alias of max_tokens")


class CompletionRequest(_Sampling):
    prompt: str = Field(min_length=1)


def _usage(seq: GenerationRequest) -> dict[str, Any]:
    prompt, completion = len(seq.prompt), len(seq.generated)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        # OpenAI's field for prompt caching: positions taken from the prefix store
        "prompt_tokens_details": {"cached_tokens": seq.cached_tokens},
    }


Events = asyncio.Queue[tuple[str, FinishReason | None]]


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

    def on_text(delta: str, reason: FinishReason | None) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (delta, reason))

    try:
        seq = served.engine.submit(prompt, params, on_text, truncate=truncate)
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


async def drain(queue: Events) -> tuple[str, FinishReason | None]:
    """The next text, joined with whatever else is already waiting: when the event loop falls
    behind the decoder (many streams on few cores), one event carries several tokens instead
    of the loop writing one event per token."""
    delta, reason = await queue.get()
    while reason is None and not queue.empty():
        more, reason = queue.get_nowait()
        delta += more
    return delta, reason


async def collect(
    request: Request | None, seq: GenerationRequest, queue: Events, timeout_s: float
) -> tuple[str, FinishReason]:
    """The whole text; gives up (and frees the slot) on disconnect or the deadline."""
    deadline = time.monotonic() + timeout_s
    parts: list[str] = []
    try:
        while True:
            try:
                delta, reason = await asyncio.wait_for(queue.get(), 1.0)
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


async def ask_events(
    answer: dict[str, Any],
    writing: tuple[ServedDecoder, GenerationRequest, Events] | None,
    metrics: ServeMetrics,
) -> AsyncIterator[str]:
    """The assistant's stream: the retrieved answer, the written answer's deltas (when one is
    being written), then the end with the whole written text."""

    def event(body: dict[str, Any]) -> str:
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield event({"type": "answer", **answer})
    parts: list[str] = []
    reason: FinishReason | None = None
    if writing is not None:
        served, seq, queue = writing
        try:
            while reason is None:
                delta, reason = await drain(queue)
                if reason == "error":
                    failure = error_body(
                        "generation failed on the server — retry", "generation_failed"
                    )
                    yield event(failure)
                    return
                if delta:
                    parts.append(delta)
                    yield event({"type": "delta", "text": delta})
        finally:
            seq.cancel()  # the client went away: free the slot
        metrics.count_tokens(served.name, len(seq.generated), seq.cached_tokens)
    written = "".join(parts).strip() if writing is not None else None
    finish = _public_reason(reason)
    yield event({"type": "done", "generated_answer": written, "finish_reason": finish})
    yield "data: [DONE]\n\n"


def add_generation_routes(
    app: FastAPI,
    pool: ModelPool,
    config: ServeConfig,
    metrics: ServeMetrics,
    scoped: Callable[[str], Any],
) -> None:
    generation = config.generation

    def sampling(body: _Sampling, max_tokens: int | None) -> SamplingParams:
        wanted = max_tokens or generation.default_max_tokens
        if wanted > generation.max_tokens:
            raise ApiError(
                422,
                f"max_tokens {wanted} exceeds the server's limit of {generation.max_tokens} "
                "(generation.max_tokens) — ask for fewer",
                "max_tokens_too_large",
            )
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stop) > 4 or any(not s or len(s) > 64 for s in stop):
            raise ApiError(
                422, "stop takes up to 4 non-empty strings of at most 64 characters", "bad_stop"
            )
        return SamplingParams(
            max_tokens=wanted,
            temperature=body.temperature,
            top_p=body.top_p,
            top_k=body.top_k,
            repetition_penalty=body.repetition_penalty,
            stop=tuple(stop),
            seed=body.seed,
        )

    def check_chars(texts: list[str]) -> None:
        total = sum(len(t) for t in texts)
        if total > config.limits.max_chars:
            raise ApiError(
                422,
                f"the prompt has {total} characters, over the limit of {config.limits.max_chars} "
                "(limits.max_chars) — shorten it",
                "input_too_long",
            )

    def finished(served: ServedDecoder, seq: GenerationRequest) -> None:
        metrics.count_tokens(served.name, len(seq.generated), seq.cached_tokens)
        if seq.first_token_s is not None:
            metrics.time_to_first_token.labels(served.name).observe(seq.first_token_s)

    def stream(
        served: ServedDecoder,
        seq: GenerationRequest,
        queue: Events,
        chunk: Callable[[str, str | None], dict[str, Any]],
        include_usage: bool,
    ) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            try:
                while True:
                    delta, reason = await drain(queue)
                    if reason == "error":  # the openai client raises on an "error" event
                        failure = error_body(
                            "generation failed on the server — retry", "generation_failed"
                        )
                        yield f"data: {json.dumps(failure)}\n\n"
                        return
                    if delta or reason is not None:
                        body = chunk(delta, _public_reason(reason))
                        yield f"data: {json.dumps(body, ensure_ascii=False)}\n\n"
                    if reason is not None:
                        break
                finished(served, seq)
                if include_usage:
                    tail = {**chunk("", None), "choices": [], "usage": _usage(seq)}
                    yield f"data: {json.dumps(tail)}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                seq.cancel()  # the client went away (the generator is closed): free the slot

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.post("/v1/chat/completions", tags=["generation"])
    async def chat_completions(
        body: ChatCompletionRequest,
        request: Request,
        _: Annotated[ApiKey | None, scoped("predict")],
    ) -> Any:
        """A chat answer from a served decoder (OpenAI-compatible; `stream: true` for SSE)."""
        served = pool.decoder(body.model)
        params = sampling(body, body.max_completion_tokens or body.max_tokens)
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in body.messages
        ]
        check_chars([m["content"] for m in messages])
        try:
            prompt = await asyncio.to_thread(served.engine.encode_chat, messages)
        except GenerationError as exc:
            raise ApiError(422, exc.message, "no_chat_template") from None
        seq, queue = submit(served, prompt, params, metrics, body.truncate_prompt)
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            first = True

            def chunk(delta: str, reason: str | None) -> dict[str, Any]:
                nonlocal first
                content: dict[str, Any] = {"content": delta} if delta else {}
                if first:
                    content, first = {"role": "assistant", **content}, False
                return {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": served.name,
                    "choices": [
                        {"index": 0, "delta": content, "logprobs": None, "finish_reason": reason}
                    ],
                }

            include = bool(body.stream_options and body.stream_options.include_usage)
            return stream(served, seq, queue, chunk, include)
        text, reason = await collect(request, seq, queue, generation.timeout_s)
        finished(served, seq)
        return JSONResponse(
            {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": served.name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": None,
                        "finish_reason": _public_reason(reason),
                    }
                ],
                "usage": _usage(seq),
            }
        )

    @app.post("/v1/completions", tags=["generation"])
    async def completions(
        body: CompletionRequest,
        request: Request,
        _: Annotated[ApiKey | None, scoped("predict")],
    ) -> Any:
        """A plain continuation of a prompt (OpenAI-compatible; `stream: true` for SSE)."""
        served = pool.decoder(body.model)
        params = sampling(body, body.max_tokens)
        check_chars([body.prompt])
        prompt = await asyncio.to_thread(served.engine.encode, body.prompt)
        seq, queue = submit(served, prompt, params, metrics, body.truncate_prompt)
        ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(delta: str, reason: str | None) -> dict[str, Any]:
            return {
                "id": ident,
                "object": "text_completion",
                "created": created,
                "model": served.name,
                "choices": [{"index": 0, "text": delta, "logprobs": None, "finish_reason": reason}],
            }

        if body.stream:
            include = bool(body.stream_options and body.stream_options.include_usage)
            return stream(served, seq, queue, chunk, include)
        text, reason = await collect(request, seq, queue, generation.timeout_s)
        finished(served, seq)
        return JSONResponse({**chunk(text, _public_reason(reason)), "usage": _usage(seq)})


def _public_reason(reason: FinishReason | None) -> str | None:
    """OpenAI's finish reasons are stop and length; an engine error ends the text as stop."""
    if reason is None:
        return None
    return "length" if reason == "length" else "stop"
