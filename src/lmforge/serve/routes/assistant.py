"""The customer-service assistant: POST /v1/assistant/ask answers from the FAQ with a citation,
or refuses politely; with ``assistant.generate`` a decoder also writes an answer from the top
entries (retrieval-augmented), streamed with ``stream: true``."""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time.
import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from lmforge.assistant.assistant import Answer, grounded_request
from lmforge.monitor import LoggedPrediction
from lmforge.monitor.feedback import ASSISTANT
from lmforge.runtime.generation import FinishReason, GenerationRequest
from lmforge.serve.deps import PredictKey, ServeState, check_inputs, run_batch, serve_state
from lmforge.serve.keys import ApiKey
from lmforge.serve.limits import ApiError, error_body
from lmforge.serve.metrics import ServeMetrics
from lmforge.serve.models import ServedDecoder
from lmforge.serve.schemas import RequestBody
from lmforge.serve.streaming import Events, drain, public_reason, reply, submit

router = APIRouter(tags=["assistant"])


class AskRequest(RequestBody):
    question: str = Field(min_length=1, description="a customer's question, any language")
    stream: bool = Field(
        False,
        description="server-sent events: the retrieved answer at once (type 'answer'), then the "
        "written answer as it is generated (type 'delta'), then type 'done'",
    )
    explain: bool = Field(
        False,
        description="add 'explanation': the winning entry, its margin over the runner-up and "
        "the threshold, and the question's words it shares",
    )


class AskSource(BaseModel):
    question: str
    citation: str
    lang: str
    score: float = Field(
        description="the entry's score: the mean cosine similarity of the question with the "
        "entry's best passage and with the entry's question; the sources are ordered by it"
    )


class AskContender(BaseModel):
    question: str
    citation: str
    score: float


class AskExplanation(BaseModel):
    winner: AskContender | None = Field(description="the best entry (null: none was scored)")
    runner_up: AskContender | None = Field(description="the second best entry, if any")
    margin: float | None = Field(description="the winner's score minus the runner-up's")
    threshold: float = Field(description="the threshold of the question's language")
    over_threshold: float | None = Field(
        description="the winner's score minus the threshold (below 0: refused)"
    )
    answered: bool
    shared_words: list[str] = Field(
        description="the question's words the winning entry has, in the question's order (the "
        "scores are dense: an entry can win with none)"
    )
    word_matching: str = Field(description="how the words were matched, for this language")


class AskResponse(BaseModel):
    prediction_id: str = Field(
        description="names this answer in POST /v1/feedback, which takes only "
        "{prediction_id, correct: true|false} for it"
    )
    question: str
    answered: bool = Field(description="false: nothing in the FAQ is close enough; a refusal")
    answer: str = Field(
        description="the passage of the cited entry's answer closest to the question, or a "
        "polite refusal"
    )
    full_answer: str | None = Field(
        None, description="the cited entry's whole answer (null when refused)"
    )
    citation: str | None
    score: float | None = Field(
        description="the best source's score, the one compared with the threshold"
    )
    threshold: float = Field(description="the threshold of the question's language")
    language: str = Field("en", description="the question's language (en or zh)")
    sources: list[AskSource]
    generated_answer: str | None = Field(
        None,
        description="with assistant.generate: an answer written by the decoder from the top "
        "entries (answered questions in a language the decoder covers), else null",
    )
    explanation: AskExplanation | None = Field(
        None, description="with explain: true, why this entry won (else absent)"
    )


@router.post(
    "/v1/assistant/ask",
    response_model=AskResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def ask(body: AskRequest, request: Request, key: PredictKey) -> Response:
    """Answer from the FAQ with the entry and its citation, or refuse politely (`stream:
    true` sends the retrieved answer at once and the written one as it is generated)."""
    state = serve_state(request)
    served = state.pool.assistant
    if served is None:
        raise ApiError(
            404,
            "the assistant is not enabled on this server — add an 'assistant:' section "
            "with 'faq:' to the server config",
            "assistant_disabled",
        )
    check_inputs(state, [body.question])
    start = time.perf_counter()
    (answer,) = await run_batch(state, served.batcher, [body.question])
    latency_ms = (time.perf_counter() - start) * 1000
    prediction_id = log_answer(state, served.name, served.version, answer, latency_ms, key)
    assistant = state.config.assistant
    assert assistant is not None
    writes = assistant.generate and answer.answered  # no text is made up for a refusal
    decoder = state.pool.assistant_decoder(answer.language) if writes else None
    if body.stream:
        writing = None
        if decoder is not None:
            prompt, params = await asyncio.to_thread(
                grounded_request, decoder.engine, answer, assistant.generate_max_tokens
            )
            writing = (decoder, *submit(decoder, prompt, params, state.metrics, truncate=True))
        return StreamingResponse(
            ask_events(
                {"prediction_id": prediction_id, **answer.to_json(explain=body.explain)},
                writing,
                state.metrics,
            ),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    if decoder is not None:
        prompt, params = await asyncio.to_thread(
            grounded_request, decoder.engine, answer, assistant.generate_max_tokens
        )
        generated = await reply(
            decoder, prompt, params, state.metrics, state.config.generation.timeout_s
        )
        answer = dataclasses.replace(answer, generated=generated.strip())
    return JSONResponse({"prediction_id": prediction_id, **answer.to_json(explain=body.explain)})


#: The logged label of a refusal (an answered question's label is its entry's citation).
REFUSED = "(refused)"


def log_answer(
    state: ServeState,
    name: str,
    version: int | None,
    answer: Answer,
    latency_ms: float,
    key: ApiKey | None,
) -> str:
    """Record the answer in the prediction log (the cited entry as its label, the best score as
    its score) so that feedback can name it; its prediction id."""
    best = answer.hits[0] if answer.hits else None
    label = best.entry.citation if answer.answered and best is not None else REFUSED
    key_name = key.name if key else None
    row = LoggedPrediction(
        name,
        version or 0,
        label[:128],  # the log's label column holds 128 characters
        best.score if best is not None else 0.0,
        latency_ms,
        key_name,
        answer.question,
        kind=ASSISTANT,
    )
    prediction_id = state.log.add(row)
    state.metrics.predictions_logged.inc()
    return prediction_id


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
                delta, reason, _ = await drain(queue)
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
    finish = public_reason(reason)
    yield event({"type": "done", "generated_answer": written, "finish_reason": finish})
    yield "data: [DONE]\n\n"
