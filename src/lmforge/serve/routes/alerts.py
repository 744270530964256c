"""Alerts: GET /v1/alerts lists the alerts the monitor fired (scope ``predict``, as the other
read-only listings: an alert holds a rule's name and figures, never a request's text).

The alerts are read from the registry's database, so every replica lists what any replica
fired; filters ``state`` (firing, resolved or all), ``model``, ``since`` and ``limit``.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time.
import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from lmforge.serve.deps import PredictKey, serve_state

router = APIRouter(tags=["alerts"])


class AlertOut(BaseModel):
    id: int | None
    rule: str
    model: str
    state: str = Field(description="firing or resolved")
    metric: str
    comparison: str = Field(description="above or below")
    value: float = Field(description="the figure when the alert fired")
    threshold: float = Field(description="the value at which it fires (baseline rules: derived)")
    window_s: float = Field(description="the rule's window, in seconds")
    severity: str
    fired_at: str
    resolved_at: str | None
    details: dict[str, Any] = Field(description="the rule's kind; a baseline rule's baseline")


class AlertList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AlertOut]


@router.get("/v1/alerts", response_model=AlertList)
async def list_alerts(
    request: Request,
    key: PredictKey,
    state: Annotated[Literal["firing", "resolved", "all"], Query()] = "all",
    model: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    since: Annotated[
        datetime | None, Query(description="ISO 8601; alerts fired at or after it")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AlertList:
    """The alerts, newest first."""
    store = serve_state(request).alerts
    alerts = await asyncio.to_thread(store.list, state=state, model=model, since=since, limit=limit)
    return AlertList(data=[AlertOut(**a.to_json()) for a in alerts])
