"""Explain a prediction: POST /v1/explain, and the bounded queue of worker processes behind it.

Explanations are costly (integrated gradients: dozens of forward and backward passes) and must
not starve ``/v1/predict``: they run in ``explain.concurrency`` worker processes of
``explain.threads`` threads each at a lower CPU priority (:mod:`lmforge.explain.worker`), at
most ``explain.max_queue`` more wait, and a request beyond that gets 429 at once.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time.
import asyncio
import logging
import math
import multiprocessing
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from lmforge.errors import LmforgeError
from lmforge.explain import explain_target
from lmforge.explain.explanation import Explanation
from lmforge.explain.worker import ExplainJob, init_worker, run_job
from lmforge.serve.config import ExplainConfig
from lmforge.serve.deps import PredictKey, check_inputs, serve_state
from lmforge.serve.limits import ApiError
from lmforge.serve.models import ModelChoiceError
from lmforge.serve.schemas import RequestBody

router = APIRouter(tags=["explain"])
logger = logging.getLogger("lmforge.serve")


class ExplainService:
    """The explanation workers and the count of requests running or waiting for them."""

    def __init__(self, config: ExplainConfig) -> None:
        self.config = config
        self.pending = 0  # running + waiting
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    @property
    def capacity(self) -> int:
        return self.config.concurrency + self.config.max_queue

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:  # started on the first explanation: no cost to a server without
            self._pool = ProcessPoolExecutor(
                max_workers=self.config.concurrency,
                # spawn, not fork: a fork of a process running threads (uvicorn, the batchers,
                # torch's pool) can inherit a held lock and hang
                mp_context=multiprocessing.get_context("spawn"),
                initializer=init_worker,
                initargs=(self.config.threads,),
            )
        return self._pool

    def _release(self, _: Any = None) -> None:
        with self._lock:
            self.pending -= 1

    async def run(self, job: ExplainJob) -> Explanation:
        """The job's explanation; 429 when the queue is full, 504 past the deadline (the job
        still finishes in its worker, and keeps its place in the count until then)."""
        with self._lock:
            if self.pending >= self.capacity:
                raise ApiError(
                    429,
                    f"the explanation queue is full ({self.capacity} running or waiting: "
                    "explain.concurrency + explain.max_queue) — retry after the Retry-After "
                    "seconds",
                    "queue_full",
                    {"Retry-After": str(max(1, math.ceil(self.config.timeout_s / 10)))},
                )
            self.pending += 1
        try:
            future: Future[Explanation] = self._executor().submit(run_job, job)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(self._release)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.config.timeout_s)
        except TimeoutError:
            raise ApiError(
                504,
                f"no explanation within {self.config.timeout_s:g} s (explain.timeout_s) — ask "
                "for fewer steps or a shorter text, or retry later",
                "deadline_exceeded",
            ) from None
        except BrokenProcessPool:
            self._pool = None  # a worker died (killed, out of memory): start afresh next time
            raise ApiError(
                503, "the explanation worker stopped — retry", "explainer_unavailable"
            ) from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


class ExplainRequest(RequestBody):
    model: str | None = Field(
        None,
        max_length=128,
        description="NAME (its production version, else its latest) or NAME:VERSION; may be "
        "left out when the server holds one model",
    )
    input: str = Field(min_length=1, description="the text to explain (limits.max_chars)")
    method: Literal["ig", "attention", "occlusion"] = Field(
        "ig",
        description="ig: integrated gradients; attention: attention rollout; occlusion: each "
        "word dropped and the text re-scored by the served backend",
    )
    steps: int | None = Field(
        None, ge=1, description="integrated-gradients steps (default 32; explain.max_steps)"
    )
    target: str | None = Field(
        None, max_length=128, description="the label to explain (default: the predicted one)"
    )


class WordOut(BaseModel):
    word: str
    start: int = Field(description="character offsets into `text`")
    end: int
    score: float = Field(description="attribution to `target`; positive pushes towards it")


class ExplainResponse(BaseModel):
    model: str = Field(description="the version explained, NAME:vN")
    backend: str = Field(description="the backend that served the prediction")
    method: str
    text: str = Field(description="the text as the model saw it (after the version's cleaning)")
    label: str
    score: float
    target: str
    explained_with: str = Field(description="the weights and backend the method ran on")
    agrees: bool = Field(description="whether those weights predict the served label")
    words: list[WordOut]
    truncated: bool = Field(description="the text was longer than the model's max_length")
    steps: int | None = None
    baseline: str | None = None
    completeness_error: float | None = None
    logit_difference: float | None = None


def explain_service(request: Request) -> ExplainService:
    service: ExplainService = request.app.state.explain
    return service


@router.post("/v1/explain", response_model=ExplainResponse, response_model_exclude_none=True)
async def explain(body: ExplainRequest, request: Request, key: PredictKey) -> dict[str, Any]:
    """Why the model gives a text its label: a score per word (bounded; see `explain` in the
    server config)."""
    state = serve_state(request)
    config = state.config.explain
    if not config.enabled:
        raise ApiError(404, "explanations are off on this server (explain.enabled)", "not_found")
    check_inputs(state, [body.input])
    if body.steps is not None and body.steps > config.max_steps:
        raise ApiError(
            422,
            f"steps {body.steps} exceed the limit of {config.max_steps} (explain.max_steps) — "
            "ask for fewer",
            "too_many_steps",
            param="steps",
        )
    if body.steps is not None and body.method != "ig":
        raise ApiError(
            422,
            f"steps apply to integrated gradients only, not to {body.method} — leave steps "
            'out, or use method "ig"',
            "invalid_field",
            param="steps",
        )
    ref = body.model or _only_model(state.pool.aliases)
    found = await asyncio.to_thread(explain_target, ref, registry=state.registry)
    job = ExplainJob(
        ref=found.ref,
        folder=found.folder,
        backend=state.config.backend,
        torch_ref=found.torch_ref,
        torch_folder=found.torch_folder,
        text=body.input,
        method=body.method,
        steps=body.steps,
        target=body.target,
        max_tokens=config.max_tokens,
    )
    try:
        result = await explain_service(request).run(job)
    except (ApiError, LmforgeError):
        raise
    except Exception as exc:  # a bug in a worker: logged, answered without its details
        logger.error("explanation failed: %r", exc, exc_info=exc)
        raise ApiError(
            500,
            f"the explanation failed ({type(exc).__name__}) — the server log has the details",
            "explanation_failed",
        ) from None
    return result.to_json()


def _only_model(aliases: dict[str, str]) -> str:
    if len(aliases) != 1:
        raise ModelChoiceError(
            "this server holds no single model, so the request must name one",
            'set "model" to a registered NAME[:VERSION] (see GET /v1/models)',
        )
    return next(iter(aliases.values()))
