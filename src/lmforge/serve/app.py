"""The HTTP API: a thin FastAPI layer that translates requests into library calls.

Every error leaves as JSON in the OpenAI API's shape (``{"error": {"message", "type",
"code"}}``) with a 4xx status naming the problem and the fix; a 5xx means a bug or a model that
cannot load.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time,
# and the dependencies they name are closures over the app's state.
import asyncio
import dataclasses
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmforge.assistant.assistant import grounded_request
from lmforge.errors import LmforgeError, ModelNotFoundError
from lmforge.monitor import LoggedPrediction, PredictionLog
from lmforge.registry import Registry
from lmforge.serve.batcher import BatcherClosed, DeadlineExceeded, DynamicBatcher, QueueFull
from lmforge.serve.config import ServeConfig
from lmforge.serve.keys import ApiKey, KeyStore, hash_key
from lmforge.serve.limits import ApiError, BodyLimitMiddleware, RateLimiter, error_body
from lmforge.serve.metrics import MetricsMiddleware, ServeMetrics
from lmforge.serve.models import ModelChoiceError, ModelPool, background_priority
from lmforge.serve.openai_api import add_generation_routes, ask_events, reply, submit
from lmforge.settings import Settings, get_settings

logger = logging.getLogger("lmforge.serve")
T = TypeVar("T")


# --- request and response bodies ----------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(_Body):
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
    label: str
    score: float
    scores: dict[str, float]


class PredictResponse(BaseModel):
    model: str = Field(description="the version that answered, NAME:vN")
    backend: str
    predictions: list[PredictionOut]


class EmbedRequest(_Body):
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


class AskRequest(_Body):
    question: str = Field(min_length=1, description="a customer's question, any language")
    stream: bool = Field(
        False,
        description="server-sent events: the retrieved answer at once (type 'answer'), then the "
        "written answer as it is generated (type 'delta'), then type 'done'",
    )


class AskSource(BaseModel):
    question: str
    citation: str
    lang: str
    score: float


class AskResponse(BaseModel):
    question: str
    answered: bool = Field(description="false: nothing in the FAQ is close enough; a refusal")
    answer: str = Field(description="the cited entry's answer, or a polite refusal")
    citation: str | None
    score: float | None = Field(description="cosine similarity of the best entry")
    threshold: float
    sources: list[AskSource]
    generated_answer: str | None = Field(
        None,
        description="with assistant.generate: an answer written by the decoder from the top "
        "entries (answered questions in a language the decoder covers), else null",
    )


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


# --- errors ---------------------------------------------------------------------------------


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "malformed request",
        401: "missing, invalid or revoked API key",
        403: "the key lacks the scope",
        404: "unknown model or version",
        413: "body over limits.max_body_bytes",
        422: "invalid field, too many or too long inputs",
        429: "over the rate limit, or the model's queue is full (see Retry-After)",
        503: "the model cannot be loaded, or the server is shutting down",
        504: "no result within batching.timeout_s",
    }.items()
}


def _error_response(status: int, message: str, code: str, headers: Any = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse(error_body(message, code, kind), status_code=status, headers=headers)


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


# --- the application ------------------------------------------------------------------------


@dataclass
class ServeState:
    config: ServeConfig
    registry: Registry
    keys: KeyStore
    pool: ModelPool
    log: PredictionLog
    limiter: RateLimiter
    metrics: ServeMetrics
    key_cache: dict[str, tuple[float, ApiKey | None]]  # by the secret's hash, never the secret


def create_app(config: ServeConfig | None = None, settings: Settings | None = None) -> FastAPI:
    """The server as an ASGI app: models load when it starts (its lifespan) and drain at stop."""
    config = config or ServeConfig()
    settings = settings or get_settings()
    registry = Registry(settings)
    metrics = ServeMetrics()
    # One inference thread: each backend already uses every core, two at once would fight.
    executor = ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="lmforge-inference", initializer=background_priority
    )
    state = ServeState(
        config=config,
        registry=registry,
        keys=KeyStore(registry.engine),
        pool=ModelPool(registry, settings, config, executor, metrics),
        log=PredictionLog(registry.engine, config.prediction_log),
        limiter=RateLimiter(config.limits.rate_per_second, config.limits.burst),
        metrics=metrics,
        key_cache={},
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
        try:
            yield
        finally:
            await state.pool.close()  # queued requests finish first
            await state.log.close()
            executor.shutdown(wait=True)

    app = FastAPI(
        title="lmforge",
        version="0.1.0",
        summary="Classify, embed, generate and manage registered models over HTTP.",
        lifespan=lifespan,
        responses=_ERRORS,
    )
    app.state.lmforge = state
    _document_auth(app)
    _add_error_handlers(app, metrics)
    _add_routes(app, state)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=config.limits.max_body_bytes,
        on_reject=lambda: metrics.rejected.labels("body_too_large").inc(),
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _add_error_handlers(app: FastAPI, metrics: ServeMetrics) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        metrics.rejected.labels(exc.code).inc()
        return _error_response(exc.status, exc.message, exc.code, exc.headers)

    @app.exception_handler(LmforgeError)
    async def _lmforge_error(_: Request, exc: LmforgeError) -> JSONResponse:
        if isinstance(exc, ModelNotFoundError):
            return _error_response(404, exc.message, "model_not_found")
        return _error_response(422, exc.message, "invalid_request")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        status, message, code = _validation_message(exc)
        metrics.rejected.labels(code).inc()
        return _error_response(status, message, code)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        where = f"{request.method} {request.url.path}"[:200]
        if exc.status_code == 404:
            return _error_response(404, f"no route {where} — see /docs", "not_found")
        if exc.status_code == 405:
            message = f"method not allowed: {where} — see /docs"
            return _error_response(405, message, "method_not_allowed", exc.headers)
        return _error_response(exc.status_code, str(exc.detail), "http_error", exc.headers)


def _add_routes(app: FastAPI, state: ServeState) -> None:
    config = state.config

    async def caller(request: Request, scope: str) -> ApiKey | None:
        """The key the request carries (None with auth off), its scope, then the rate limit."""
        if not config.auth.enabled:
            identity = request.client.host if request.client else "local"
            key = None
        else:
            scheme, _, secret = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not secret:
                raise ApiError(
                    401,
                    "missing API key — send 'Authorization: Bearer <key>' "
                    "(create one with `lmforge keys create`)",
                    "missing_key",
                    {"WWW-Authenticate": "Bearer"},
                )
            key = await _verify(state, secret.strip())
            if key is None:
                raise ApiError(
                    401,
                    "invalid or revoked API key — check it, or create a new one with "
                    "`lmforge keys create`",
                    "invalid_key",
                    {"WWW-Authenticate": "Bearer"},
                )
            if not key.allows(scope):
                raise ApiError(
                    403,
                    f"the key '{key.name}' lacks the '{scope}' scope — use a key created with "
                    f"--scope {scope}",
                    "missing_scope",
                )
            identity = f"key:{key.id}"
        wait = state.limiter.check(identity)
        if wait is not None:
            raise ApiError(
                429,
                f"rate limit of {config.limits.rate_per_second:g} requests/s "
                f"(burst {config.limits.burst}) exceeded — retry after {wait:.2f} s",
                "rate_limited",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
        return key

    def scoped(scope: str) -> Any:
        # One plain dependency (not a chain of them): it runs on every request.
        async def check(request: Request) -> ApiKey | None:
            return await caller(request, scope)

        return Depends(check)

    add_generation_routes(app, state.pool, config, state.metrics, scoped)

    def check_inputs(inputs: list[str]) -> None:
        limits = config.limits
        if len(inputs) > limits.max_inputs:
            raise ApiError(
                422,
                f"{len(inputs)} inputs exceed the limit of {limits.max_inputs} per request "
                "(limits.max_inputs) — split them over several requests",
                "too_many_inputs",
            )
        for i, text in enumerate(inputs):
            if len(text) > limits.max_chars:
                raise ApiError(
                    422,
                    f"inputs[{i}] has {len(text)} characters, over the limit of "
                    f"{limits.max_chars} (limits.max_chars) — shorten it",
                    "input_too_long",
                )

    async def run_batch(batcher: DynamicBatcher[Any], inputs: list[str]) -> list[Any]:
        try:
            return await batcher.submit(inputs, config.batching.timeout_s)
        except QueueFull as exc:
            raise ApiError(
                429,
                "the model's queue is full — retry after the Retry-After seconds",
                "queue_full",
                {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))},
            ) from None
        except DeadlineExceeded:
            raise ApiError(
                504,
                f"no result within {config.batching.timeout_s:g} s (batching.timeout_s) — the "
                "server is overloaded; retry later",
                "deadline_exceeded",
            ) from None
        except BatcherClosed:
            raise ApiError(
                503, "the server is shutting down — retry on another replica", "shutting_down"
            ) from None

    async def load(coro: Awaitable[T]) -> T:
        try:
            return await coro
        except (ModelNotFoundError, ModelChoiceError):
            raise  # the request's fault: 404 / 422
        except LmforgeError as exc:  # corrupt version, missing weights: not the caller's fault
            raise ApiError(503, exc.message, "model_unavailable") from None

    @app.post("/v1/predict", response_model=PredictResponse, tags=["inference"])
    async def predict(
        body: PredictRequest, key: Annotated[ApiKey | None, scoped("predict")]
    ) -> Response:
        """Classify texts with a registered model, batched with concurrent requests."""
        check_inputs(body.inputs)
        served = await load(state.pool.classifier(body.model))
        start = time.perf_counter()
        results = await run_batch(served.batcher, body.inputs)
        latency_ms = (time.perf_counter() - start) * 1000
        log = state.log
        for text, p in zip(body.inputs, results, strict=True):
            if log.sample():
                log.add(
                    LoggedPrediction(
                        served.name,
                        served.version or 0,
                        p.label,
                        p.score,
                        latency_ms,
                        key.name if key else None,
                        text,
                    )
                )
                state.metrics.predictions_logged.inc()
        # The hot path: built by hand (the shape of PredictResponse), not re-validated.
        answer = {
            "model": served.ref,
            "backend": served.backend,
            "predictions": [
                {"label": p.label, "score": p.score, "scores": p.scores} for p in results
            ],
        }
        return Response(json.dumps(answer), media_type="application/json")

    @app.post("/v1/embed", response_model=EmbedResponse, tags=["inference"])
    async def embed(
        body: EmbedRequest, _: Annotated[ApiKey | None, scoped("predict")]
    ) -> EmbedResponse:
        """Mean-pooled, L2-normalised sentence embeddings from an encoder."""
        check_inputs(body.inputs)
        served = await load(state.pool.embedder(body.model))
        vectors = await run_batch(served.batcher, body.inputs)
        return EmbedResponse(
            model=served.public_ref, dimensions=len(vectors[0]), embeddings=vectors
        )

    @app.post(
        "/v1/assistant/ask",
        response_model=AskResponse,
        tags=["assistant"],
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def ask(body: AskRequest, _: Annotated[ApiKey | None, scoped("predict")]) -> Response:
        """Answer from the FAQ with the entry and its citation, or refuse politely (`stream:
        true` sends the retrieved answer at once and the written one as it is generated)."""
        served = state.pool.assistant
        if served is None:
            raise ApiError(
                404,
                "the assistant is not enabled on this server — add an 'assistant:' section "
                "with 'faq:' to the server config",
                "assistant_disabled",
            )
        check_inputs([body.question])
        (answer,) = await run_batch(served.batcher, [body.question])
        assistant = config.assistant
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
                ask_events(answer.to_json(), writing, state.metrics),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        if decoder is not None:
            prompt, params = await asyncio.to_thread(
                grounded_request, decoder.engine, answer, assistant.generate_max_tokens
            )
            generated = await reply(
                decoder, prompt, params, state.metrics, config.generation.timeout_s
            )
            answer = dataclasses.replace(answer, generated=generated.strip())
        return JSONResponse(answer.to_json())

    @app.get("/v1/models", tags=["models"])
    async def list_models(_: Annotated[ApiKey | None, scoped("predict")]) -> dict[str, Any]:
        """Every registered model with its versions, stages and test metrics, and the decoders
        served for generation (OpenAI's list shape: each entry has id and object)."""
        versions = await asyncio.to_thread(state.registry.list)
        names = sorted({v.name for v in versions})
        decoders = [
            {
                "id": d.name,
                "object": "model",
                "created": d.created,
                "owned_by": "lmforge",
                "kind": "decoder",
                "weights": d.weights,
                "context": d.context,
            }
            for d in state.pool.decoders.values()
        ]
        registered = [_model_json(state, n, [v for v in versions if v.name == n]) for n in names]
        return {"object": "list", "data": registered + decoders}

    @app.get("/v1/models/{name}", tags=["models"])
    async def show_model(
        name: Annotated[str, Path(max_length=64)],
        _: Annotated[ApiKey | None, scoped("predict")],
    ) -> dict[str, Any]:
        """One model's versions, stages and test metrics, and which of them this replica serves."""
        versions = await asyncio.to_thread(state.registry.list, name)
        if not versions:
            raise ModelNotFoundError(f"no registered model named '{name}'", "see GET /v1/models")
        return _model_json(state, name, versions)

    @app.post("/v1/models/{name}/versions/{version}/promote", tags=["models"])
    async def promote(
        name: Annotated[str, Path(max_length=64)],
        version: Annotated[int, Path(ge=1, le=1_000_000)],
        _: Annotated[ApiKey | None, scoped("admin")],
    ) -> dict[str, Any]:
        """Make a version the production one and serve it: loaded first, then swapped in, so no
        request in flight fails."""
        promoted = await load(state.pool.promote(f"{name}:v{version}"))
        return promoted.to_json()

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> JSONResponse:
        """The models to serve are loaded (503 until then)."""
        ready = state.pool.ready
        body = {"status": "ready" if ready else "loading", "models": state.pool.aliases}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus text exposition."""
        for key, depth in state.pool.queue_depths().items():
            state.metrics.queue_depth.labels(key).set(depth)
        state.pool.publish_generation_load()
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")


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


async def _verify(state: ServeState, secret: str) -> ApiKey | None:
    """The key for a secret, trusting a verified answer for ``auth.cache_seconds``."""
    ttl = state.config.auth.cache_seconds
    now = time.monotonic()
    digest = hash_key(secret)
    cached = state.key_cache.get(digest)
    if cached is not None and now - cached[0] < ttl:
        return cached[1]
    key = await asyncio.to_thread(state.keys.verify, secret)
    if ttl > 0:
        if len(state.key_cache) > 10_000:
            state.key_cache.clear()
        state.key_cache[digest] = (now, key)
    return key


def _model_json(state: ServeState, name: str, versions: list[Any]) -> dict[str, Any]:
    loaded = set(state.pool.loaded)
    return {
        "id": name,
        "object": "model",
        "created": int(min(v.created_at for v in versions).timestamp()),
        "owned_by": "lmforge",
        "kind": "registered",
        "name": name,
        "serving": state.pool.aliases.get(name),
        "versions": [
            {
                "version": v.version,
                "ref": v.ref,
                "stage": v.stage,
                "task": v.task,
                "labels": v.labels,
                "test_metrics": v.metrics,
                "parent": v.parent,
                "created_at": v.created_at.isoformat(),
                "loaded": v.ref in loaded,
            }
            for v in versions
        ],
    }
