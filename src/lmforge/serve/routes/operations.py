"""Operating the server: liveness, readiness and Prometheus metrics (no key needed)."""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time.
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from lmforge.serve.deps import serve_state

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """The models to serve are loaded (503 until then)."""
    pool = serve_state(request).pool
    ready = pool.ready
    body = {"status": "ready" if ready else "loading", "models": pool.aliases}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition."""
    state = serve_state(request)
    for key, batcher in state.pool.batchers().items():
        state.metrics.queue_depth.labels(key).set(batcher.queued_rows)
        state.metrics.batch_cap.labels(key).set(batcher.batch_cap)
    state.pool.publish_generation_load()
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")
