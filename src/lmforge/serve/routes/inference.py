"""Classify and embed: POST /v1/predict and POST /v1/embed, batched with concurrent requests."""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time.
import json
import math
import time
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from lmforge.monitor import LoggedPrediction
from lmforge.runtime import Prediction
from lmforge.serve.deps import (
    PredictKey,
    check_inputs,
    load,
    non_finite_output,
    requester,
    run_batch,
    serve_state,
)
from lmforge.serve.limits import ApiError
from lmforge.serve.schemas import RequestBody

router = APIRouter(tags=["inference"])


class PredictRequest(RequestBody):
    model: str | None = Field(
        None,
        max_length=128,
        description="NAME (its production version, else its latest) or NAME:VERSION; may be "
        "left out when the server holds one model",
        examples=["sentiment-en"],
    )
    inputs: list[str] = Field(
        min_length=1, description="texts to classify (limits.max_inputs, limits.max_chars)"
    )
    task: str | None = Field(
        None,
        max_length=32,
        description="a multi-task model: the sub-task whose head answers (required for such a "
        "model unless tasks is given; refused for a single-task one)",
        examples=["english"],
    )
    tasks: list[Annotated[str, Field(max_length=32)]] | None = Field(
        None,
        min_length=1,
        max_length=32,
        description="a multi-task model: several sub-tasks answered from one encoder pass per "
        "text (the answer's tasks field instead of predictions)",
    )


class PredictionOut(BaseModel):
    prediction_id: str = Field(description="names this prediction in POST /v1/feedback")
    label: str
    score: float
    scores: dict[str, float]


class PredictResponse(BaseModel):
    model: str = Field(description="the version that answered, NAME:vN")
    backend: str
    predictions: list[PredictionOut] = Field(
        default=[], description="one per input (empty when the request named tasks)"
    )
    task: str | None = Field(None, description="the sub-task that answered (request's task)")
    tasks: dict[str, list[PredictionOut]] | None = Field(
        None, description="request's tasks: each sub-task's predictions, one per input"
    )


class EmbedRequest(RequestBody):
    model: str = Field(
        "minilm-l6",
        max_length=128,
        description="a catalogue encoder (minilm-l6, multilingual-e5-small) or a registered "
        "NAME[:VERSION]",
    )
    inputs: list[str] = Field(min_length=1)


class EmbedResponse(BaseModel):
    model: str
    dimensions: int
    embeddings: list[list[float]] = Field(description="L2-normalised, one per input")


@router.post("/v1/predict", response_model=PredictResponse)
async def predict(body: PredictRequest, request: Request, key: PredictKey) -> Response:
    """Classify texts with a registered model, batched with concurrent requests."""
    state = serve_state(request)
    check_inputs(state, body.inputs)
    served = await load(state.pool.classifier(body.model, requester(request, key)))
    asked = asked_tasks(body, served.ref, served.tasks)
    start = time.perf_counter()
    results = await run_batch(state, served.batcher, body.inputs)
    latency_ms = (time.perf_counter() - start) * 1000
    # a multi-task model answers every head from one encoder pass; the asked ones are kept
    per_task = {t: [r[t] for r in results] for t in asked} if asked else {"": results}
    if not all(_finite_prediction(p) for ps in per_task.values() for p in ps):
        raise non_finite_output(state, served)
    key_name = key.name if key else None
    answered = {
        t: _logged(state, served.name, served.version or 0, body.inputs, ps, latency_ms, key_name)
        for t, ps in per_task.items()
    }
    answer: dict[str, Any] = {"model": served.ref, "backend": served.backend}
    if body.tasks is not None:
        answer.update(predictions=[], tasks=answered)
    else:  # The hot path: built by hand (the shape of PredictResponse), not re-validated.
        answer["predictions"] = next(iter(answered.values()))
        if body.task is not None:
            answer["task"] = body.task
    # allow_nan=False: a non-finite number that got past the check above fails loudly rather
    # than leaving as "NaN", which strict JSON parsers refuse
    return Response(json.dumps(answer, allow_nan=False), media_type="application/json")


@router.post("/v1/embed", response_model=EmbedResponse)
async def embed(body: EmbedRequest, request: Request, key: PredictKey) -> EmbedResponse:
    """Mean-pooled, L2-normalised sentence embeddings from an encoder."""
    state = serve_state(request)
    check_inputs(state, body.inputs)
    served = await load(state.pool.embedder(body.model, requester(request, key)))
    vectors = await run_batch(state, served.batcher, body.inputs)
    if not all(_finite(v) for v in vectors):
        raise non_finite_output(state, served)
    return EmbedResponse(model=served.public_ref, dimensions=len(vectors[0]), embeddings=vectors)


def asked_tasks(body: PredictRequest, ref: str, tasks: Sequence[str]) -> list[str]:
    """The sub-tasks a request asks a model for: [] for a single-task model (which refuses
    task and tasks); a multi-task one needs one of them, naming its sub-tasks (422 otherwise)."""
    asked = [body.task] if body.task is not None else body.tasks
    if body.task is not None and body.tasks is not None:
        raise ApiError(422, "give task or tasks, not both", "invalid_task", param="task")
    if not tasks:
        if asked is not None:
            raise ApiError(
                422,
                f"{ref} is a single-task classifier: remove task/tasks from the request",
                "invalid_task",
                param="task",
            )
        return []
    names = ", ".join(tasks)
    if asked is None:
        raise ApiError(
            422,
            f"{ref} is a multi-task model: set task to one of {names} (or tasks to several)",
            "missing_task",
            param="task",
        )
    unknown = [t for t in asked if t not in tasks]
    if unknown:
        raise ApiError(
            422,
            f"{ref} has no sub-task {unknown[0]!r}: use one of {names}",
            "unknown_task",
            param="task",
        )
    return list(dict.fromkeys(asked))


def _logged(
    state: Any,
    name: str,
    version: int,
    texts: Sequence[str],
    predictions: Sequence[Prediction],
    latency_ms: float,
    key_name: str | None,
) -> list[dict[str, Any]]:
    """Every answered prediction recorded (the text only as configured), as the answer's rows."""
    log = state.log
    ids = [
        log.add(
            LoggedPrediction(
                name, version, p.label, p.score, latency_ms, key_name, text, None, p.scores
            )
        )
        for text, p in zip(texts, predictions, strict=True)
    ]
    state.metrics.predictions_logged.inc(len(ids))
    return [
        {"prediction_id": i, "label": p.label, "score": p.score, "scores": p.scores}
        for i, p in zip(ids, predictions, strict=True)
    ]


def _finite(values: Sequence[float]) -> bool:
    # NaN and infinity carry through a sum (inf - inf is NaN), and these values are bounded
    # (probabilities, unit vectors), so one C-level sum checks a row without a Python loop
    return math.isfinite(sum(values))


def _finite_prediction(p: Prediction) -> bool:
    return math.isfinite(p.score) and _finite(list(p.scores.values()))
