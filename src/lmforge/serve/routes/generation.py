"""OpenAI-compatible text generation: POST /v1/chat/completions and POST /v1/completions.

The bodies and answers follow the OpenAI API (the official client works unchanged), with two
extensions a small local model needs: ``top_k`` and ``repetition_penalty``, and
``truncate_prompt`` to keep the end of a prompt too long for the context instead of refusing
it. ``stream: true`` answers with server-sent events; a client that goes away mid-stream frees
its sequence slot before the next decoding step. ``logprobs`` (and chat's ``top_logprobs``)
add the generated tokens' log-probabilities in OpenAI's shapes (:mod:`lmforge.serve.logprobs`).
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time.
import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field

from lmforge.runtime.generation import (
    FinishReason,
    GenerationError,
    GenerationRequest,
    SamplingParams,
)
from lmforge.runtime.logprobs import MAX_TOP_LOGPROBS, TokenLogprob
from lmforge.serve.access_log import note_access
from lmforge.serve.config import ServeConfig
from lmforge.serve.deps import PredictKey, serve_state
from lmforge.serve.limits import ApiError, error_body
from lmforge.serve.logprobs import LegacyLogprobs, chat_logprobs, pieces_of
from lmforge.serve.metrics import ServeMetrics
from lmforge.serve.models import ServedDecoder
from lmforge.serve.schemas import RequestBody
from lmforge.serve.streaming import Events, collect, drain, public_reason, submit

router = APIRouter(tags=["generation"])


class TextPart(RequestBody):
    type: Literal["text"]
    text: str


class ChatMessage(RequestBody):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = Field(None, max_length=64)

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(RequestBody):
    include_usage: bool = False


class _Sampling(RequestBody):
    model: str = Field(
        min_length=1,
        max_length=256,
        description="a served decoder (see GET /v1/models); required, as in the OpenAI API",
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
    seed: int | None = Field(
        None,
        description="same seed and request, same text when run alone (docs/serving.md); "
        "a seeded prompt never comes from the prefix store",
    )
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
    logprobs: bool = Field(
        False,
        description="return each generated token's log-probability under the model "
        "(log-softmax of the raw logits, before temperature and penalties)",
    )
    top_logprobs: int | None = Field(
        None,
        ge=0,
        le=MAX_TOP_LOGPROBS,
        description="with logprobs: also the likeliest tokens at each position, 0 to 20",
    )


class CompletionRequest(_Sampling):
    prompt: str | list[str] = Field(
        min_length=1,
        description="a text, or a list of texts (one choice each, at most limits.max_inputs)",
    )
    logprobs: int | None = Field(
        None,
        ge=0,
        le=5,
        description="return each generated token's log-probability and those of the this many "
        "likeliest tokens (0 to 5)",
    )


# (choice index, text, finish reason, the entries of the text's tokens)
Chunk = Callable[[int, str, str | None, list[TokenLogprob]], dict[str, Any]]


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request, _: PredictKey) -> Any:
    """A chat answer from a served decoder (OpenAI-compatible; `stream: true` for SSE)."""
    state = serve_state(request)
    served = state.pool.decoder(body.model)
    note_access(model=served.name)
    if body.top_logprobs is not None and not body.logprobs:
        raise ApiError(
            422,
            "top_logprobs is only allowed when logprobs is true — set logprobs: true, or drop "
            "top_logprobs",
            "invalid_field",
            param="top_logprobs",
        )
    wanted = (body.top_logprobs or 0) if body.logprobs else None
    params = _sampling(state.config, body, body.max_completion_tokens or body.max_tokens, wanted)
    pieces = pieces_of(served.engine)
    messages = [
        {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
        for m in body.messages
    ]
    _check_chars(state.config, [m["content"] for m in messages])
    try:
        prompt = await asyncio.to_thread(served.engine.encode_chat, messages)
    except GenerationError as exc:
        raise ApiError(422, exc.message, "no_chat_template") from None
    seq, queue = submit(served, prompt, params, state.metrics, body.truncate_prompt)
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if body.stream:
        first = True

        def chunk(
            _index: int, delta: str, reason: str | None, entries: list[TokenLogprob]
        ) -> dict[str, Any]:
            nonlocal first
            content: dict[str, Any] = {"content": delta} if delta else {}
            if first:
                content, first = {"role": "assistant", **content}, False
            logprobs = chat_logprobs(pieces, entries) if body.logprobs else None
            return {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": served.name,
                "choices": [
                    {"index": 0, "delta": content, "logprobs": logprobs, "finish_reason": reason}
                ],
            }

        include = bool(body.stream_options and body.stream_options.include_usage)
        return _stream(served, [(seq, queue)], chunk, include, state.metrics)
    text, reason = await collect(request, seq, queue, state.config.generation.timeout_s)
    _finished(served, seq, state.metrics)
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
                    "logprobs": chat_logprobs(pieces, seq.logprobs) if body.logprobs else None,
                    "finish_reason": public_reason(reason),
                }
            ],
            "usage": _usage([seq]),
        }
    )


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request, _: PredictKey) -> Any:
    """A plain continuation of a prompt, or of each prompt of a list (OpenAI-compatible: one
    choice per prompt, in order; `stream: true` for SSE)."""
    state = serve_state(request)
    served = state.pool.decoder(body.model)
    note_access(model=served.name)
    params = _sampling(state.config, body, body.max_tokens, body.logprobs)
    texts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    # a list waits for slots like that many requests, so it is held to the waiting line too
    limit, key = min(
        (state.config.limits.max_inputs, "limits.max_inputs"),
        (state.config.generation.max_waiting, "generation.max_waiting"),
    )
    if len(texts) > limit:
        raise ApiError(
            422,
            f"{len(texts)} prompts exceed the limit of {limit} per request "
            f"({key}) — split them over several requests",
            "too_many_inputs",
            param="prompt",
        )
    if not all(texts):
        raise ApiError(422, "a prompt is empty — send some text", "invalid_field", param="prompt")
    _check_chars(state.config, texts)
    prompts = [await asyncio.to_thread(served.engine.encode, text) for text in texts]
    runs: list[tuple[GenerationRequest, Events]] = []
    try:
        for prompt in prompts:  # they join the running batch together
            runs.append(submit(served, prompt, params, state.metrics, body.truncate_prompt))
    except ApiError:
        for seq, _queue in runs:
            seq.cancel()
        raise
    ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    pieces = pieces_of(served.engine)
    offsets = [LegacyLogprobs(pieces, len(text)) for text in texts]  # one per choice

    def chunk(
        index: int, delta: str, reason: str | None, entries: list[TokenLogprob]
    ) -> dict[str, Any]:
        logprobs = offsets[index].chunk(entries) if body.logprobs is not None else None
        return {
            "id": ident,
            "object": "text_completion",
            "created": created,
            "model": served.name,
            "choices": [
                {"index": index, "text": delta, "logprobs": logprobs, "finish_reason": reason}
            ],
        }

    if body.stream:
        include = bool(body.stream_options and body.stream_options.include_usage)
        return _stream(served, runs, chunk, include, state.metrics)
    timeout_s = state.config.generation.timeout_s
    try:
        answers = await asyncio.gather(
            *(collect(request, seq, queue, timeout_s) for seq, queue in runs)
        )
    finally:
        for seq, _queue in runs:
            seq.cancel()  # a no-op once finished; frees the others' slots when one fails
    for seq, _queue in runs:
        _finished(served, seq, state.metrics)
    choices = [
        {
            "index": i,
            "text": text,
            "logprobs": offsets[i].chunk(seq.logprobs) if body.logprobs is not None else None,
            "finish_reason": public_reason(reason),
        }
        for i, ((text, reason), (seq, _)) in enumerate(zip(answers, runs, strict=True))
    ]
    return JSONResponse(
        {**chunk(0, "", None, []), "choices": choices, "usage": _usage([seq for seq, _ in runs])}
    )


def _sampling(
    config: ServeConfig, body: _Sampling, max_tokens: int | None, logprobs: int | None
) -> SamplingParams:
    """The engine's sampling for a body; `logprobs`: None, or how many likeliest tokens to
    report beside each chosen one."""
    generation = config.generation
    wanted = max_tokens or generation.default_max_tokens
    if wanted > generation.max_tokens:
        raise ApiError(
            422,
            f"max_tokens {wanted} exceeds the server's limit of {generation.max_tokens} "
            "(generation.max_tokens) — ask for fewer",
            "max_tokens_too_large",
            param="max_tokens",
        )
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stop) > 4 or any(not s or len(s) > 64 for s in stop):
        raise ApiError(
            422,
            "stop takes up to 4 non-empty strings of at most 64 characters",
            "bad_stop",
            param="stop",
        )
    return SamplingParams(
        max_tokens=wanted,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        repetition_penalty=body.repetition_penalty,
        stop=tuple(stop),
        seed=body.seed,
        fit_context=not max_tokens,
        logprobs=logprobs,
    )


def _check_chars(config: ServeConfig, texts: list[str]) -> None:
    total = sum(len(t) for t in texts)
    if total > config.limits.max_chars:
        raise ApiError(
            422,
            f"the prompt has {total} characters, over the limit of {config.limits.max_chars} "
            "(limits.max_chars) — shorten it",
            "input_too_long",
        )


def _usage(seqs: list[GenerationRequest]) -> dict[str, Any]:
    """The usage of a request's sequences together (one per prompt)."""
    prompt = sum(len(seq.prompt) for seq in seqs)
    completion = sum(len(seq.generated) for seq in seqs)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        # OpenAI's field for prompt caching: positions taken from the prefix store
        "prompt_tokens_details": {"cached_tokens": sum(seq.cached_tokens for seq in seqs)},
    }


def _finished(served: ServedDecoder, seq: GenerationRequest, metrics: ServeMetrics) -> None:
    metrics.count_tokens(served.name, len(seq.generated), seq.cached_tokens)
    if seq.first_token_s is not None:
        metrics.time_to_first_token.labels(served.name).observe(seq.first_token_s)


def _stream(
    served: ServedDecoder,
    runs: list[tuple[GenerationRequest, Events]],
    chunk: Chunk,
    include_usage: bool,
    metrics: ServeMetrics,
) -> StreamingResponse:
    """Server-sent events of the runs' text as it comes, each chunk naming its choice's index."""

    async def events() -> AsyncIterator[str]:
        merged: asyncio.Queue[tuple[int, str, FinishReason | None, list[TokenLogprob]]]
        merged = asyncio.Queue()

        async def forward(index: int, queue: Events) -> None:
            while True:
                delta, reason, entries = await drain(queue)
                await merged.put((index, delta, reason, entries))
                if reason is not None:
                    return

        readers = [asyncio.create_task(forward(i, q)) for i, (_, q) in enumerate(runs)]
        try:
            open_runs = len(runs)
            while open_runs:
                index, delta, reason, entries = await merged.get()
                if reason == "error":  # the openai client raises on an "error" event
                    failure = error_body(
                        "generation failed on the server — retry", "generation_failed"
                    )
                    yield f"data: {json.dumps(failure)}\n\n"
                    return
                if delta or reason is not None:
                    body = chunk(index, delta, public_reason(reason), entries)
                    yield f"data: {json.dumps(body, ensure_ascii=False)}\n\n"
                if reason is not None:
                    open_runs -= 1
            for seq, _ in runs:
                _finished(served, seq, metrics)
            if include_usage:
                seqs = [seq for seq, _ in runs]
                tail = {**chunk(0, "", None, []), "choices": [], "usage": _usage(seqs)}
                yield f"data: {json.dumps(tail)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            for task in readers:
                task.cancel()
            for seq, _ in runs:
                seq.cancel()  # the client went away (the generator is closed): free the slots

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
