"""Recommendations: POST /v1/recommend ranks items for a known user, a list of liked items or a
text query, each with the liked items it is closest to; POST /v1/items (scope admin) adds an
item by its text, recommended at once by text and hybrid models, without retraining.

Recommenders are opened on first use and kept for the server's life (their arrays are small:
docs/recommend.md); interactions go to POST /v1/feedback as ``click``/``rating`` events."""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time.
import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from lmforge.errors import LmforgeError
from lmforge.runtime.recommend_service import MAX_K, RecommenderService, open_recommender
from lmforge.runtime.recommender import UnknownItemError, UnknownUserError
from lmforge.serve.deps import AdminKey, PredictKey, ServeState, serve_state
from lmforge.serve.limits import ApiError
from lmforge.serve.schemas import RequestBody

router = APIRouter(tags=["recommend"])

# an item id, or its exact title such as "Toy Story (1995)"
ItemRef = (
    Annotated[int, Field(ge=0, le=2**62)] | Annotated[str, Field(min_length=1, max_length=300)]
)


class RecommendRequest(RequestBody):
    model: str | None = Field(
        None,
        min_length=1,
        max_length=140,
        description="a registered recommender, NAME[:vN|:production]; left out when exactly "
        "one recommender is registered",
    )
    user_id: int | None = Field(None, ge=0, le=2**62, description="a user the model was trained on")
    liked_items: list[ItemRef] | None = Field(
        None, max_length=500, description="item ids or exact titles the user liked, oldest first"
    )
    text: str | None = Field(None, min_length=1, max_length=2000, description="a text query")
    k: int = Field(10, ge=1, le=MAX_K, description="how many items to return")
    exclude: list[ItemRef] = Field(
        default_factory=list, max_length=5000, description="items never to return"
    )


class RecommendedItem(BaseModel):
    item_id: int
    title: str
    score: float = Field(description="the method's score; higher is better")
    because: list[str] = Field(description="the liked items it is closest to, by text")


class RecommendResponse(BaseModel):
    model: str
    method: str
    based_on: list[str] = Field(description="the liked items (or the query) the list is from")
    recommendations: list[RecommendedItem]


class AddItemRequest(RequestBody):
    model: str | None = Field(None, min_length=1, max_length=140)
    item_id: int = Field(ge=0, le=2**62, description="a new item's id")
    title: str = Field(min_length=1, max_length=300)
    text: str | None = Field(
        None, min_length=1, max_length=2000, description="what the encoder reads; default: title"
    )


class AddItemResponse(BaseModel):
    item_id: int
    title: str
    items: int = Field(description="the items the model now holds")


@router.post("/v1/recommend", response_model=RecommendResponse)
async def recommend(body: RecommendRequest, request: Request, key: PredictKey) -> Any:
    """Rank items for a user, for liked items or for a text query, with reasons."""
    service = await _service(serve_state(request), request, body.model)
    try:
        result = await asyncio.to_thread(
            service.recommend,
            user_id=body.user_id,
            liked_items=body.liked_items,
            text=body.text,
            k=body.k,
            exclude=body.exclude,
        )
    except UnknownUserError as exc:
        raise ApiError(404, exc.message, "unknown_user") from exc
    except UnknownItemError as exc:
        raise ApiError(404, exc.message, "unknown_item") from exc
    return result.to_json()


@router.post("/v1/items", response_model=AddItemResponse)
async def add_item(body: AddItemRequest, request: Request, key: AdminKey) -> Any:
    """Add an item by its text; text and hybrid recommenders recommend it at once."""
    service = await _service(serve_state(request), request, body.model)
    try:
        return await asyncio.to_thread(
            service.add_item, body.item_id, body.title, body.text or body.title
        )
    except LmforgeError as exc:
        if "already exists" in exc.problem:
            raise ApiError(409, exc.message, "item_exists") from exc
        raise


async def _service(state: ServeState, request: Request, ref: str | None) -> RecommenderService:
    """The opened recommender for ``ref`` (one open at a time per reference)."""
    app_state = request.app.state
    if not hasattr(app_state, "recommenders"):
        app_state.recommenders = {}
        app_state.recommenders_lock = asyncio.Lock()
    settings = state.pool.settings
    if ref is None:
        names = await asyncio.to_thread(
            lambda: sorted({v.name for v in state.registry.list() if v.task == "recommendation"})
        )
        if len(names) != 1:
            raise ApiError(
                422,
                f"{len(names)} recommenders are registered ({', '.join(names) or 'none'}): "
                "name one in 'model'",
                "model_required",
            )
        ref = names[0]
    version = await asyncio.to_thread(state.registry.get, ref)
    services: dict[str, RecommenderService] = app_state.recommenders
    async with app_state.recommenders_lock:
        if version.ref not in services:
            services[version.ref] = await asyncio.to_thread(open_recommender, version.ref, settings)
    return services[version.ref]
