"""Registered models: list them, show one, promote a version (admin) — the hot swap —, load a
version again from its files after a fix, and archive or delete a version (admin)."""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time.
import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from lmforge.errors import ModelNotFoundError
from lmforge.recipe.schema import MODEL_NAME
from lmforge.registry import ModelVersion, VersionInUseError
from lmforge.serve.deps import AdminKey, PredictKey, ServeState, load, serve_state
from lmforge.serve.limits import ApiError

router = APIRouter(tags=["models"])


@router.get("/v1/models")
async def list_models(request: Request, _: PredictKey) -> dict[str, Any]:
    """Every registered model with its versions, stages and test metrics, and the decoders
    served for generation (OpenAI's list shape: each entry has id and object)."""
    state = serve_state(request)
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


@router.get("/v1/models/{name}")
async def show_model(
    name: Annotated[str, Path(max_length=64)], request: Request, _: PredictKey
) -> dict[str, Any]:
    """One model's versions, stages and test metrics, and which of them this replica serves."""
    state = serve_state(request)
    # A name no model can have (a NUL byte, which PostgreSQL cannot even compare) is not looked up
    if not MODEL_NAME.fullmatch(name):
        raise ModelNotFoundError(f"{name!r} is not a model name", "see GET /v1/models")
    versions = await asyncio.to_thread(state.registry.list, name)
    if not versions:
        raise ModelNotFoundError(f"no registered model named '{name}'", "see GET /v1/models")
    return _model_json(state, name, versions)


@router.post("/v1/models/{name}/versions/{version}/promote")
async def promote(
    name: Annotated[str, Path(max_length=64)],
    version: Annotated[int, Path(ge=1, le=1_000_000)],
    request: Request,
    _: AdminKey,
) -> dict[str, Any]:
    """Make a version the production one and serve it: loaded first, then swapped in, so no
    request in flight fails. A version that does not load is refused (503 model_unavailable)
    and the registry is left as it was."""
    promoted = await load(serve_state(request).pool.promote(f"{name}:v{version}"))
    return promoted.to_json()


@router.post("/v1/models/{name}/versions/{version}/reload")
async def reload(
    name: Annotated[str, Path(max_length=64)],
    version: Annotated[int, Path(ge=1, le=1_000_000)],
    request: Request,
    _: AdminKey,
) -> dict[str, Any]:
    """Load a version again from its files as they are now, after fixing them: a version that
    failed to load serves again, a loaded one is replaced (a failed reload leaves it serving,
    and answers 503 model_unavailable with the reason)."""
    served = await load(serve_state(request).pool.reload(f"{name}:v{version}"))
    return {
        "ref": served.public_ref,
        "kind": served.kind,
        "backend": served.backend,
        "loaded": True,
    }


@router.post("/v1/models/{name}/versions/{version}/archive")
async def archive_version(
    name: Annotated[str, Path(max_length=64)],
    version: Annotated[int, Path(ge=1, le=1_000_000)],
    request: Request,
    _: AdminKey,
) -> dict[str, Any]:
    """Move a version to the archived stage (``changed`` is false when it already was). The
    production version is refused with 409: promote another version instead."""
    registry = serve_state(request).registry
    try:
        change = await asyncio.to_thread(registry.archive, name, version)
    except VersionInUseError as exc:
        raise ApiError(409, exc.message, "version_in_use") from exc
    return {**change.version.to_json(), "changed": change.changed}


@router.delete("/v1/models/{name}/versions/{version}")
async def delete_version(
    name: Annotated[str, Path(max_length=64)],
    version: Annotated[int, Path(ge=1, le=1_000_000)],
    request: Request,
    _: AdminKey,
) -> dict[str, Any]:
    """Delete a version — its folder and its row, in one step — and stop serving it here. The
    production version, and a version another names as its parent, are refused with 409."""
    state = serve_state(request)
    try:
        removed = await asyncio.to_thread(state.registry.delete, name, version)
    except VersionInUseError as exc:
        raise ApiError(409, exc.message, "version_in_use") from exc
    await state.pool.forget(removed.ref)
    return {"id": removed.ref, "object": "model", "deleted": True}


def _model_json(state: ServeState, name: str, versions: list[ModelVersion]) -> dict[str, Any]:
    loaded = set(state.pool.loaded)
    failed = state.pool.unavailable.reason
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
                # why the last load of this version on this replica failed (None: it did not)
                "load_error": failed(v.ref) or failed(f"embed:{v.ref}"),
            }
            for v in versions
        ],
    }
