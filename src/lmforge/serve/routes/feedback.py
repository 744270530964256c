"""Feedback: POST /v1/feedback stores one event (scope ``feedback``), committed before the 2xx.

The event's shapes and checks live in :mod:`lmforge.monitor.feedback`; this route maps its
errors to HTTP (404 unknown prediction, 422 unknown label or bad shape) and writes in a thread.
A prediction answered a moment ago may still be in the prediction log's buffer: on an unknown
id the buffer is flushed and the id looked up once more, so such feedback is never a 404.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time.
import asyncio
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from lmforge.monitor import (
    FeedbackError,
    FeedbackEvent,
    UnknownLabelError,
    UnknownPredictionError,
)
from lmforge.monitor.feedback import MAX_COMMENT
from lmforge.monitor.predlog import LogNotWritten
from lmforge.serve.deps import FeedbackKey, check_inputs, serve_state
from lmforge.serve.limits import ApiError
from lmforge.serve.schemas import RequestBody

router = APIRouter(tags=["feedback"])


class FeedbackRequest(RequestBody):
    """One of: ``{prediction_id, label}``, ``{prediction_id, correct}``, ``{text, label,
    model}``, ``{user_id, item_id, event, value}``; ``comment`` with any of them."""

    prediction_id: str | None = Field(None, max_length=64, description="from a /v1/predict answer")
    label: str | None = Field(None, max_length=128, description="the correct label")
    correct: bool | None = Field(None, description="whether the prediction was right")
    text: str | None = Field(None, description="a new labelled example's text (with model)")
    model: str | None = Field(None, max_length=128, description="NAME or NAME:VERSION")
    user_id: str | None = Field(None, max_length=128)
    item_id: str | None = Field(None, max_length=128)
    event: Literal["click", "rating"] | None = None
    value: float | None = Field(None, allow_inf_nan=False, description="a rating's value")
    comment: str | None = Field(None, max_length=MAX_COMMENT)


class FeedbackResponse(BaseModel):
    id: int
    kind: str = Field(description="label, correct, example or interaction")
    prediction_id: str | None
    model: str | None
    version: int | None
    predicted: str | None = Field(description="the label the model answered")
    label: str | None
    correct: bool | None
    created_at: str
    updated_at: str = Field(description="later than created_at when a repeat updated the row")


@router.post("/v1/feedback", response_model=FeedbackResponse)
async def feedback(body: FeedbackRequest, request: Request, key: FeedbackKey) -> FeedbackResponse:
    """Store one feedback event; answered only once the row is committed."""
    state = serve_state(request)
    if body.text is not None:
        check_inputs(state, [body.text])
    event = FeedbackEvent(**body.model_dump())
    key_name = key.name if key else None
    store = state.feedback
    try:
        try:
            stored = await asyncio.to_thread(store.record, event, key_name)
        except UnknownPredictionError:
            try:
                await state.log.flush()  # the id may still be waiting in the buffer
            except LogNotWritten as exc:
                raise ApiError(
                    503, f"the database is away: {exc} — retry shortly", "database_unavailable"
                ) from exc
            stored = await asyncio.to_thread(store.record, event, key_name)
    except UnknownPredictionError as exc:
        raise ApiError(404, exc.message, "prediction_not_found", param="prediction_id") from exc
    except UnknownLabelError as exc:
        raise ApiError(422, exc.message, "unknown_label", param="label") from exc
    except FeedbackError as exc:
        raise ApiError(422, exc.message, "invalid_feedback") from exc
    state.metrics.feedback.labels(stored.model or "", stored.kind).inc()
    data = stored.to_json()
    return FeedbackResponse(**{k: data[k] for k in FeedbackResponse.model_fields})
