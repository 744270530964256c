"""The finance monitor over HTTP (on with ``lmforge serve --finance MODEL``), scope ``predict``:

- ``POST /v1/finance/headlines`` scores a batch of ``{text, time, id?}`` through the served
  model's batcher, stores the headlines (an id already stored is not stored twice) and logs
  each prediction, so an analyst corrects a label with ``POST /v1/feedback {prediction_id,
  label}``; answered once the rows are committed;
- ``GET /v1/finance/timeline`` the days (with the surge rule's window share, baseline and
  threshold), hours where there is the volume, entities and alerts, as the console draws them;
- ``GET /v1/finance/alerts`` the surge alerts, with their window, figures and headlines;
- ``GET /v1/finance/headlines`` the stored headlines of a span (a day the console clicks), in
  time order or most negative first.

The shapes are in docs/finance.md and docs/serving.md. Without ``--finance`` the routes answer
404 ``finance_off``.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time.
import asyncio
import math
import time
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field, field_validator

from lmforge.errors import LmforgeError
from lmforge.finance import FinanceMonitor
from lmforge.finance.ingest import MAX_ID_CHARS, MAX_TEXT_CHARS, headline_from, parse_time
from lmforge.finance.scoring import scored_headlines
from lmforge.monitor import LoggedPrediction
from lmforge.serve.deps import (
    PredictKey,
    load,
    non_finite_output,
    requester,
    run_batch,
    serve_state,
)
from lmforge.serve.limits import ApiError
from lmforge.serve.schemas import RequestBody

router = APIRouter(tags=["finance"])


class HeadlineIn(RequestBody):
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS, description="the headline")
    time: str = Field(
        min_length=1, max_length=64, description="ISO 8601 date or time; without a zone, UTC"
    )
    id: str | int | None = Field(None, description="stable id (default: from time and text)")

    @field_validator("text")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("is blank — send the headline's text")
        return text

    @field_validator("time")
    @classmethod
    def _a_time(cls, value: str) -> str:
        try:
            parse_time(value, "time")
        except LmforgeError:
            raise ValueError(f"'{value[:40]}' is not an ISO 8601 date or time") from None
        return value

    @field_validator("id")
    @classmethod
    def _short_id(cls, value: str | int | None) -> str | int | None:
        if isinstance(value, str) and len(value) > MAX_ID_CHARS:
            raise ValueError(f"is over {MAX_ID_CHARS} characters")
        return value


class HeadlineBatch(RequestBody):
    headlines: list[HeadlineIn] = Field(
        min_length=1, description="the batch (at most finance.max_headlines)"
    )


class ScoredOut(BaseModel):
    id: str
    time: str
    label: str
    score: float
    scores: dict[str, float]
    entities: list[dict[str, str]] = Field(description='[{"name", "kind"}], kind: company, ...')
    prediction_id: str = Field(description="correct the label with POST /v1/feedback")


class HeadlinesResponse(BaseModel):
    model: str = Field(description="the version that scored them, NAME:vN")
    stored: int = Field(description="headlines newly stored (a known id is not stored again)")
    headlines: list[ScoredOut]


def finance_monitor(request: Request) -> FinanceMonitor:
    found: FinanceMonitor | None = getattr(request.app.state, "finance", None)
    if found is None:
        raise ApiError(
            404,
            "the finance monitor is off — start the server with --finance MODEL",
            "finance_off",
        )
    return found


@router.post("/v1/finance/headlines", response_model=HeadlinesResponse)
async def ingest(body: HeadlineBatch, request: Request, key: PredictKey) -> HeadlinesResponse:
    """Score, store and log a batch of headlines."""
    state = serve_state(request)
    monitor = finance_monitor(request)
    limit = state.config.finance.max_headlines if state.config.finance else 0
    if len(body.headlines) > limit:
        raise ApiError(
            422,
            f"{len(body.headlines)} headlines exceed the limit of {limit} per request "
            "(finance.max_headlines) — split them over several requests",
            "too_many_inputs",
            param="headlines",
        )
    rows = [headline_from(h.model_dump(), f"headlines.{i}") for i, h in enumerate(body.headlines)]
    served = await load(state.pool.classifier(monitor.model, requester(request, key)))
    start = time.perf_counter()
    results = await run_batch(state, served.batcher, [h.text for h in rows])
    latency_ms = (time.perf_counter() - start) * 1000
    if not all(all(map(_finite, p.scores.values())) for p in results):
        raise non_finite_output(state, served)
    scored = scored_headlines(rows, results, monitor.model, served.version)
    stored = await asyncio.to_thread(monitor.store, scored)
    key_name = key.name if key else None
    ids = [
        state.log.add(
            LoggedPrediction(
                served.name,
                served.version or 0,
                p.label,
                p.score,
                latency_ms,
                key_name,
                h.text,
                None,
                p.scores,
            )
        )
        for h, p in zip(rows, results, strict=True)
    ]
    state.metrics.predictions_logged.inc(len(ids))
    return HeadlinesResponse(
        model=served.public_ref,
        stored=stored,
        headlines=[_out(s.to_json(), i) for s, i in zip(scored, ids, strict=True)],
    )


def _out(row: dict[str, Any], prediction_id: str) -> ScoredOut:
    fields = ("id", "time", "label", "score", "scores", "entities")
    return ScoredOut(**{k: row[k] for k in fields}, prediction_id=prediction_id)


def _finite(value: float) -> bool:
    return math.isfinite(value)


Since = Annotated[datetime | None, Query(description="ISO 8601; from this time on")]
Until = Annotated[datetime | None, Query(description="ISO 8601; before this time")]


@router.get("/v1/finance/timeline")
async def timeline(
    request: Request,
    key: PredictKey,
    since: Since = None,
    until: Until = None,
    entities: Annotated[int, Query(ge=0, le=200)] = 20,
) -> dict[str, Any]:
    """Per day, hour and entity, with the surge rule's figures and the alerts."""
    monitor = finance_monitor(request)
    found, _ = await asyncio.to_thread(monitor.timeline, since, until, entities)
    return found.to_json()


class AlertsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]] = Field(description="alerts as GET /v1/alerts gives them")


@router.get("/v1/finance/alerts", response_model=AlertsResponse)
async def alerts(
    request: Request,
    key: PredictKey,
    state: Annotated[Literal["firing", "resolved", "all"], Query()] = "all",
    since: Since = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AlertsResponse:
    """The surge alerts, newest first, each with its window, figures and top headlines."""
    monitor = finance_monitor(request)
    found = await asyncio.to_thread(
        monitor.alerts.list,
        state=state,
        model=monitor.model,
        rule=monitor.rule.name,
        since=since,
        limit=limit,
    )
    return AlertsResponse(data=[a.to_json() for a in found])


class StoredHeadlinesResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]] = Field(
        description="stored headlines: id, time, text, label, score, scores, tone, model, "
        "version, entities"
    )


@router.get("/v1/finance/headlines", response_model=StoredHeadlinesResponse)
async def stored_headlines(
    request: Request,
    key: PredictKey,
    since: Since = None,
    until: Until = None,
    order: Annotated[Literal["time", "most_negative"], Query()] = "time",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> StoredHeadlinesResponse:
    """The stored headlines of ``[since, until)``: by time, or the most negative first."""
    monitor = finance_monitor(request)
    found = await asyncio.to_thread(
        monitor.headlines.headlines,
        monitor.model,
        since,
        until,
        most_negative=order == "most_negative",
        limit=limit,
    )
    return StoredHeadlinesResponse(data=[h.to_json() for h in found])
