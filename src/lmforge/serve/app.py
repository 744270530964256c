"""The HTTP API: a thin FastAPI layer that translates requests into library calls.

:func:`create_app` builds the server's state, its error handlers and middleware, and includes
one router per area (:mod:`lmforge.serve.routes`). Every error leaves as JSON in the OpenAI
API's shape (``{"error": {"message", "type", "param", "code"}}``) with a 4xx status naming the
problem and the fix; a 5xx means a bug or a model that cannot be used.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmforge.errors import LmforgeError, ModelNotFoundError, ModelUnavailableError
from lmforge.monitor import FeedbackStore, PredictionLog
from lmforge.monitor.alert_store import AlertStore
from lmforge.monitor.alerts import FiguresProvider
from lmforge.registry import Registry
from lmforge.serve.access_log import AccessLogMiddleware
from lmforge.serve.config import ServeConfig
from lmforge.serve.deps import ServeState
from lmforge.serve.docs import add_docs
from lmforge.serve.keys import KeyStore
from lmforge.serve.limits import ApiError, BodyLimitMiddleware, RateLimiter, error_body
from lmforge.serve.metrics import MetricsMiddleware, ServeMetrics
from lmforge.serve.models import ModelPool, background_priority
from lmforge.serve.monitoring import build_finance_monitor, build_monitor
from lmforge.serve.routes import ROUTERS, ui
from lmforge.serve.routes.explain import ExplainService
from lmforge.serve.schemas import ERROR_RESPONSES
from lmforge.settings import Settings, get_settings

logger = logging.getLogger("lmforge.serve")


def create_app(
    config: ServeConfig | None = None,
    settings: Settings | None = None,
    figures: FiguresProvider | None = None,
) -> FastAPI:
    """The server as an ASGI app: models load when it starts (its lifespan) and drain at stop.
    ``figures`` computes a model's monitoring figures for the ``monitor:`` section (default: the
    monitor report's, :func:`lmforge.monitor.report.figures_provider`)."""
    config = config or ServeConfig()
    settings = settings or get_settings()
    registry = Registry(settings)
    metrics = ServeMetrics()
    # One inference thread: each backend already uses every core, two at once would fight.
    executor = ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="lmforge-inference", initializer=background_priority
    )
    explainer = ExplainService(config.explain)  # worker processes start on first use
    state = ServeState(
        config=config,
        registry=registry,
        keys=KeyStore(registry.engine),
        pool=ModelPool(registry, settings, config, executor, metrics),
        log=PredictionLog(
            registry.engine, config.prediction_log, on_lost=metrics.count_lost_log_rows
        ),
        feedback=FeedbackStore(registry),
        limiter=RateLimiter(config.limits.rate_per_second, config.limits.burst),
        metrics=metrics,
        key_cache={},
        alerts=AlertStore(registry.engine),
    )
    state.monitor = build_monitor(
        config.monitor, figures, state.alerts, state.pool, metrics, settings
    )
    finance = build_finance_monitor(
        config.finance, config.monitor, state.alerts, metrics, settings, registry.engine
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not config.auth.enabled:
            logger.warning(
                "authentication is OFF (--no-auth): anyone who can reach %s:%s may call every "
                "route, admin ones included",
                config.host,
                config.port,
            )
        state.log.start()
        await state.pool.start()
        if state.monitor is not None:
            state.monitor.start()
        if finance is not None:
            finance[1].start()
        try:
            yield
        finally:
            if finance is not None:
                await finance[1].close()
            if state.monitor is not None:
                await state.monitor.close()
            await state.pool.close()  # queued requests finish first
            await state.log.close()
            executor.shutdown(wait=True)
            await asyncio.to_thread(explainer.close)

    app = FastAPI(
        title="lmforge",
        version="0.1.0",
        summary="Classify, embed, generate and manage registered models over HTTP.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
        docs_url=None,  # served from the package by add_docs, not from a CDN
        redoc_url=None,
    )
    app.state.lmforge = state
    app.state.explain = explainer
    app.state.finance = finance[0] if finance is not None else None  # routes/finance.py
    _document_auth(app)
    add_docs(app)
    _add_error_handlers(app, metrics)
    for router in ROUTERS:
        app.include_router(router)
    if config.ui:
        app.include_router(ui.router)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=config.limits.max_body_bytes,
        on_reject=lambda: metrics.rejected.labels("body_too_large").inc(),
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(AccessLogMiddleware, config=config.access_log)  # outermost: sees all
    return app


# --- errors ---------------------------------------------------------------------------------


def _error_response(
    status: int, message: str, code: str, headers: Any = None, param: str | None = None
) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = error_body(message, code, kind, param)
    return JSONResponse(body, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI, metrics: ServeMetrics) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        metrics.rejected.labels(exc.code).inc()
        return _error_response(exc.status, exc.message, exc.code, exc.headers, exc.param)

    @app.exception_handler(LmforgeError)
    async def _lmforge_error(_: Request, exc: LmforgeError) -> JSONResponse:
        if isinstance(exc, ModelNotFoundError):
            return _error_response(404, exc.message, "model_not_found")
        if isinstance(exc, ModelUnavailableError):  # exists but unusable: the server's fault
            metrics.rejected.labels("model_unavailable").inc()  # as when a load() raises it
            return _error_response(503, exc.message, "model_unavailable")
        return _error_response(422, exc.message, "invalid_request")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        status, message, code = _validation_message(exc)
        metrics.rejected.labels(code).inc()
        return _error_response(status, message, code, param=_validation_param(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        where = f"{request.method} {request.url.path}"[:200]
        if exc.status_code == 404:
            return _error_response(404, f"no route {where} — see /docs", "not_found")
        if exc.status_code == 405:
            message = f"method not allowed: {where} — see /docs"
            return _error_response(405, message, "method_not_allowed", exc.headers)
        return _error_response(exc.status_code, str(exc.detail), "http_error", exc.headers)


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str]:
    err = exc.errors()[0]
    if err["type"] == "json_invalid":
        return 400, "the body is not valid JSON — send a JSON object", "invalid_json"
    loc = [str(p) for p in err["loc"] if p != "body"]
    if not loc and err["type"] in ("model_attributes_type", "dict_type"):
        return (
            400,
            "the body must be a JSON object — send JSON with 'Content-Type: application/json'",
            "invalid_json",
        )
    where = ".".join(loc) or "body"
    if err["type"] == "extra_forbidden":
        return 422, f"unknown field '{where}' — remove it (see /docs)", "unknown_field"
    if err["type"] == "missing":
        return 422, f"required field '{where}' is missing — add it (see /docs)", "missing_field"
    return 422, f"{where}: {err['msg']} — fix the value (see /docs)", "invalid_field"


def _validation_param(exc: RequestValidationError) -> str | None:
    """The field at fault, dotted as in the message (``messages.0.role``); None for the body."""
    loc = [str(p) for p in exc.errors()[0]["loc"]]
    if loc and loc[0] in ("body", "query", "path", "header"):
        loc = loc[1:]
    return ".".join(loc) or None


# --- the OpenAPI document -------------------------------------------------------------------


def _document_auth(app: FastAPI) -> None:
    """Declare the bearer key in the OpenAPI document (the check itself is one plain dependency,
    which FastAPI would not document)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API key from `lmforge keys create`",
                }
            }
            for path, operations in schema["paths"].items():
                if path.startswith("/v1/"):
                    for operation in operations.values():
                        operation["security"] = [{"apiKey": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
