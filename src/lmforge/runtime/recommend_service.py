"""A registered recommender opened for requests: by user, by liked items or by a text query,
and new items added by text without retraining.

Items added with :meth:`RecommenderService.add_item` are kept beside the registry, in
``LMFORGE_HOME/recommend/NAME-vN.items.jsonl`` (the registered version's folder never changes):
each is written and synced to disk before it is acknowledged, and read back (and embedded
again, in one batch) when the version is next opened, so none is lost across restarts.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

from lmforge.errors import LmforgeError, ModelUnavailableError
from lmforge.models.meta import RecommendationMeta, read_model_meta
from lmforge.registry import Registry
from lmforge.registry.refs import resolve_model
from lmforge.runtime.embedder import Embedder
from lmforge.runtime.recommender import TEXT_METHODS, Recommendation, Recommender
from lmforge.settings import Settings, get_settings

MAX_K = 100
# A request's scoring is a matrix-vector product: one BLAS thread each, as requests run side by
# side (two OpenBLAS threads took 19 ms for the 9,066 × 384 text product, one 6 ms).


@cache
def _blas() -> ThreadpoolController:
    """Made on first use: it lists the thread pools of the libraries loaded by then."""
    return ThreadpoolController()


@dataclass(frozen=True)
class RecommendResult:
    model: str  # NAME:vN
    method: str
    based_on: list[str]  # the liked items (titles) the list was made from, or the query
    items: list[Recommendation]

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "method": self.method,
            "based_on": self.based_on,
            "recommendations": [r.to_json() for r in self.items],
        }


class RecommenderService:
    def __init__(self, ref: str, folder: Path, settings: Settings) -> None:
        meta = read_model_meta(folder)
        if not isinstance(meta, RecommendationMeta):
            raise LmforgeError(
                f"{ref} holds a {meta.task} model, not a recommender",
                f"serve it with {meta.served_by}",
            )
        self.ref = ref
        self.model = Recommender.load(folder)
        self._folder = folder
        self._settings = settings
        self._embedder: Embedder | None = None
        self._lock = threading.Lock()
        self.items_file = settings.home / "recommend" / f"{ref.replace(':', '-')}.items.jsonl"
        self._load_added()

    # --- the encoder, loaded on first use (user and liked-item requests never need it) ------

    def _embed(self, texts: list[str], prefix_key: str) -> np.ndarray:
        with self._lock:
            if self._embedder is None:
                spec = self.model.encoder
                path = (
                    self._folder / "encoder"
                    if spec["ref"] == "encoder"
                    else resolve_model(spec["ref"], "encoder", registered=False).locate(
                        self._settings.cache_dir
                    )
                )
                self._embedder = Embedder(path)
            embedder = self._embedder
        prefix = self.model.encoder.get(prefix_key, "")
        return embedder.embed([prefix + t for t in texts])

    def _load_added(self) -> None:
        if not self.items_file.is_file():
            return
        rows = [
            json.loads(line) for line in self.items_file.read_text("utf-8").splitlines() if line
        ]
        if not rows:
            return
        vectors = self._embed([r["text"] for r in rows], "passage_prefix")
        for row, vector in zip(rows, vectors, strict=True):
            self.model.add_item(int(row["item_id"]), str(row["title"]), str(row["text"]), vector)

    # --- requests ---------------------------------------------------------------------------

    def recommend(
        self,
        *,
        user_id: int | None = None,
        liked_items: list[int | str] | None = None,
        text: str | None = None,
        k: int = 10,
        exclude: list[int | str] | None = None,
    ) -> RecommendResult:
        """The ``k`` best items for a known user, for a list of liked items (ids or titles,
        oldest first) or for a text query — exactly one of them — leaving out ``exclude``."""
        given = [x is not None for x in (user_id, liked_items, text)]
        if sum(given) != 1:
            raise LmforgeError(
                "give exactly one of user_id, liked_items or text",
                'e.g. {"user_id": 42} or {"liked_items": ["Toy Story (1995)"]}',
            )
        if not 1 <= k <= MAX_K:
            raise LmforgeError(f"k must be between 1 and {MAX_K}, not {k}", "send a smaller k")
        model = self.model  # one snapshot: an item added meanwhile swaps in a new one
        with _blas().limit(limits=1, user_api="blas"):
            skip = [model.item_index(x) for x in exclude or []]
            if text is not None:
                query = self._embed([text], "query_prefix")[0]
                liked, based = np.zeros(0, np.int64), [text]
                scores = model.query_scores(query)
            elif user_id is not None:
                row, rated, liked = model.user_history(user_id)
                scores = model.scores(liked, row)
                skip += [int(i) for i in rated]
                based = [model.titles[int(i)] for i in liked[-5:]]
            else:
                if not liked_items:
                    raise LmforgeError("liked_items is empty", "list at least one item")
                liked = np.array([model.item_index(x) for x in liked_items], dtype=np.int64)
                scores = model.scores(liked)
                based = [model.titles[int(i)] for i in liked]
            items = model.rank(scores, liked, k, skip)
        return RecommendResult(self.ref, model.method, based, items)

    def add_item(self, item_id: int, title: str, text: str) -> dict[str, Any]:
        """Add an item by its text (text and hybrid models can recommend it at once); synced
        to disk before this returns."""
        if self.model.method not in TEXT_METHODS:
            raise LmforgeError(
                f"a {self.model.method} model cannot score an item no one has rated",
                "add items to a text or hybrid recommender",
            )
        (vector,) = self._embed([text], "passage_prefix")
        with self._lock:  # one writer at a time; readers keep the snapshot they took
            model = self.model.copy()
            model.add_item(item_id, title, text, vector)  # refuses a duplicate id
            try:
                self.items_file.parent.mkdir(parents=True, exist_ok=True)
                row = {"item_id": item_id, "title": title, "text": text}
                with self.items_file.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as exc:  # not stored, so not acknowledged and not served either
                raise ModelUnavailableError(
                    f"cannot store the new item ({exc})", "check LMFORGE_HOME's disk"
                ) from exc
            self.model = model
        return {"item_id": item_id, "title": title, "items": model.n_items}


def open_recommender(ref: str, settings: Settings | None = None) -> RecommenderService:
    """A registered recommender (``NAME``, ``NAME:vN``, ``NAME:production``) ready to serve."""
    settings = settings or get_settings()
    version = Registry(settings).get(ref)
    if version.task != "recommendation":
        raise LmforgeError(
            f"{version.ref} is a {version.task} model, not a recommender",
            "give a version registered by a recommendation recipe",
        )
    if not version.path.is_dir():
        raise ModelUnavailableError(f"{version.ref}'s folder is missing", "register it again")
    return RecommenderService(version.ref, version.path, settings)
