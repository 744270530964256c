"""Classify and embed: POST /v1/predict and POST /v1/embed, batched with concurrent requests."""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time.
import json
import math
import time
from collections.abc import Sequence

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


class PredictionOut(BaseModel):
    prediction_id: str = Field(description="names this prediction in POST /v1/feedback")
    label: str
    score: float
    scores: dict[str, float]


class PredictResponse(BaseModel):
    model: str = Field(description="the version that answered, NAME:vN")
    backend: str
    predictions: list[PredictionOut]


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
    start = time.perf_counter()
    results = await run_batch(state, served.batcher, body.inputs)
    latency_ms = (time.perf_counter() - start) * 1000
    if not all(_finite_prediction(p) for p in results):
        raise non_finite_output(state, served)
    log = state.log
    key_name = key.name if key else None
    version = served.version or 0
    ids = [  # every answered prediction is recorded (the text only as configured)
        log.add(
            LoggedPrediction(
                served.name, version, p.label, p.score, latency_ms, key_name, text, None, p.scores
            )
        )
        for text, p in zip(body.inputs, results, strict=True)
    ]
    state.metrics.predictions_logged.inc(len(ids))
    # The hot path: built by hand (the shape of PredictResponse), not re-validated.
    answer = {
        "model": served.ref,
        "backend": served.backend,
        "predictions": [
            {"prediction_id": i, "label": p.label, "score": p.score, "scores": p.scores}
            for i, p in zip(ids, results, strict=True)
        ],
    }
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


def _finite(values: Sequence[float]) -> bool:
    # NaN and infinity carry through a sum (inf - inf is NaN), and these values are bounded
    # (probabilities, unit vectors), so one C-level sum checks a row without a Python loop
    return math.isfinite(sum(values))


def _finite_prediction(p: Prediction) -> bool:
    return math.isfinite(p.score) and _finite(list(p.scores.values()))
