"""What the web console (``/ui``) reads that the other routes do not give: who the caller is and
what the server offers (``/v1/console/session``), one version's details — model card, baselines,
compression trade-off — (``/v1/console/models/...``), and a served model's monitor figures
window by window and its drift (``/v1/console/monitor/...``).

Each route is a thin call into the library (the registry, :func:`lmforge.monitor.report.
monitor_model` and :func:`~lmforge.monitor.report.summarize_window`); the figures are the ones
``lmforge monitor`` and the alert engine compute, so the console never shows a number of its own.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time.
import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from lmforge.errors import ModelNotFoundError
from lmforge.monitor.report import monitor_model, summarize_window
from lmforge.recipe.schema import MODEL_NAME
from lmforge.registry import ModelVersion
from lmforge.serve.deps import PredictKey, ServeState, serve_state, verify_key
from lmforge.serve.limits import ApiError

router = APIRouter(tags=["console"])

#: What the console tells a user whose registry holds no key (docs/console.md).
CREATE_KEY = "lmforge keys create --name me --scope admin --scope predict --scope feedback"
#: A model card larger than this is cut (a card is a page of Markdown, not a file server).
MAX_CARD_CHARS = 100_000

ModelName = Annotated[str, Path(max_length=64)]
VersionNumber = Annotated[int, Path(ge=1, le=1_000_000)]


@router.get("/v1/console/session")
async def session(request: Request) -> dict[str, Any]:
    """Whether keys are needed, whether any exists (so the console can say how to make one),
    the caller's key name and scopes when a valid one is sent (401 for an invalid one), and
    what this server offers to that key: the assistant, decoders, explanations, the models it
    serves, the finance monitor (none of it without a key while auth is on)."""
    state = serve_state(request)
    auth = state.config.auth.enabled
    key_json = None
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if auth and header:
        key = await verify_key(state, secret.strip()) if scheme.lower() == "bearer" else None
        if key is None:
            raise ApiError(
                401,
                "invalid or revoked API key — check it, or create a new one with "
                "`lmforge keys create`",
                "invalid_key",
                {"WWW-Authenticate": "Bearer"},
            )
        key_json = {"name": key.name, "scopes": list(key.scopes)}
    keys_exist = True
    if auth:
        keys_exist = any(k.active for k in await asyncio.to_thread(state.keys.all))
    # what the server serves is told only to a caller with a key (or to all with auth off)
    known = key_json is not None or not auth
    return {
        "auth": auth,
        "keys_exist": keys_exist,
        "create_key": CREATE_KEY,
        "key": key_json,
        # with auth off every route is open, as if the caller held every scope
        "scopes": key_json["scopes"] if key_json else ([] if auth else ["admin"]),
        "assistant": known and state.pool.assistant is not None,
        "decoders": sorted(state.pool.decoders) if known else [],
        "explain": known and state.config.explain.enabled,
        "served": dict(state.pool.aliases) if known else {},
        # the finance view is shown only where the /v1/finance/ routes answer
        "finance": known and getattr(request.app.state, "finance", None) is not None,
    }


@router.get("/v1/console/models/{name}/versions/{version}")
async def version_details(
    name: ModelName, version: VersionNumber, request: Request, _: PredictKey
) -> dict[str, Any]:
    """One version as the registry holds it (no server path), its model card (Markdown, as
    text), its baselines' metrics, and the compression trade-off rows when it was compressed."""
    state = serve_state(request)
    found = await asyncio.to_thread(_find_version, state, name, version)
    data = found.to_json()
    data.pop("path")  # where the server keeps its files is none of a client's business
    data["card"] = await asyncio.to_thread(_read_text, found, "README.md")
    tradeoff = await asyncio.to_thread(_read_text, found, "tradeoff.json")
    data["tradeoff"] = _variants(tradeoff)
    return data


@router.get("/v1/console/monitor/{name}")
async def monitor_figures(
    name: ModelName,
    request: Request,
    _: PredictKey,
    period: Annotated[int, Query(ge=60, le=7 * 86_400, description="seconds back from now")] = 3600,
    window: Annotated[int, Query(ge=10, le=86_400, description="seconds per window")] = 60,
) -> dict[str, Any]:
    """A model's traffic over the last ``period`` seconds in windows of ``window`` seconds
    (volume, requests/s, latency p50/p99, label shares, confidence, live accuracy — drift is
    ``/drift``), and the server's alert rules that apply to it, with their thresholds."""
    if not MODEL_NAME.fullmatch(name):
        raise ModelNotFoundError(f"{name!r} is not a model name", "see GET /v1/models")
    if period // window > 500:
        raise ApiError(
            422,
            f"{period // window} windows of {window} s over {period} s — at most 500; widen "
            "the window or shorten the period",
            "too_many_windows",
            param="window",
        )
    state = serve_state(request)
    until = datetime.now(UTC)  # one instant for both ends: exactly period // window windows
    # an unknown name or version is a ModelNotFoundError: 404
    report = await asyncio.to_thread(
        monitor_model,
        name,
        since=until - timedelta(seconds=period),
        until=until,
        window=timedelta(seconds=window),
        settings=state.pool.settings,
        with_drift=False,
    )
    windows = []
    for w in report.windows:
        row = w.to_dict()
        seconds = (w.end - w.start).total_seconds()
        row["requests_per_s"] = round(w.volume / seconds, 4) if seconds > 0 else None
        for unused in ("drift", "drift_version", "drift_skipped", "model"):
            row.pop(unused)
        windows.append(row)
    return {
        "model": name,
        "window_seconds": window,
        "generated_at": report.generated_at.isoformat(),
        "windows": windows,
        "rules": _rules(state, name),
    }


@router.get("/v1/console/monitor/{name}/drift")
async def monitor_drift(
    name: ModelName,
    request: Request,
    _: PredictKey,
    window: Annotated[int, Query(ge=60, le=7 * 86_400, description="seconds back from now")] = 900,
) -> dict[str, Any]:
    """Drift of the last ``window`` seconds against the answering version's validation split:
    each detector's statistic, p-value and threshold, or why it was skipped. The first call for
    a version builds its reference (the model runs over its validation split), later ones read
    the cache."""
    if not MODEL_NAME.fullmatch(name):
        raise ModelNotFoundError(f"{name!r} is not a model name", "see GET /v1/models")
    state = serve_state(request)
    end = datetime.now(UTC)
    summary = await asyncio.to_thread(
        summarize_window,
        name,
        start=end - timedelta(seconds=window),
        end=end,
        settings=state.pool.settings,
        with_drift=True,
    )
    return {
        "model": name,
        "start": summary.start.isoformat(),
        "end": summary.end.isoformat(),
        "volume": summary.volume,
        "drift": summary.drift.to_dict() if summary.drift is not None else None,
        "drift_version": summary.drift_version,
        "drift_skipped": summary.drift_skipped,
    }


def _find_version(state: ServeState, name: str, version: int) -> ModelVersion:
    if not MODEL_NAME.fullmatch(name):
        raise ModelNotFoundError(f"{name!r} is not a model name", "see GET /v1/models")
    for found in state.registry.list(name):
        if found.version == version:
            return found
    raise ModelNotFoundError(f"no version {name}:v{version}", "see GET /v1/models/" + name)


def _read_text(version: ModelVersion, filename: str) -> str | None:
    path = version.path / filename
    if not path.is_file():
        return None
    with path.open(encoding="utf-8", errors="replace") as file:
        return file.read(MAX_CARD_CHARS)


def _variants(text: str | None) -> list[dict[str, Any]] | None:
    """The trade-off rows of ``tradeoff.json`` (None when the version has none or it is cut)."""
    if text is None:
        return None
    try:
        rows = json.loads(text).get("variants")
    except (ValueError, AttributeError):
        return None
    return rows if isinstance(rows, list) else None


def _rules(state: ServeState, name: str) -> list[dict[str, Any]]:
    monitor = state.config.monitor
    if monitor is None:
        return []
    return [
        {
            "name": rule.name,
            "kind": rule.kind,
            "metric": rule.metric,
            "comparison": rule.comparison,
            "threshold": rule.threshold,
            "window_s": rule.window.total_seconds(),
        }
        for rule in monitor.rules
        if rule.model in ("*", name)
    ]
