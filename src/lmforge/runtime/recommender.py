"""A fitted recommender: its arrays, how it scores items for a user, and its files.

One class serves every ``method`` of the recommendation task. Items are rows of every array;
each carries a text vector (title, year, genres through the encoder, L2-normalised) and — when
training saw it — a collaborative signal (``warm``). A user is scored from their liked items:

- ``popularity``: training counts (log); ``itemknn``: the summed top-K cosine neighbours of the
  liked items; ``als``/``bpr``: item factors · the user's factors (a known user's fitted ones;
  for a list of liked items, a ridge fold-in over those items' factors);
- ``text``: cosine with the recency-weighted mean of the liked items' vectors;
- ``hybrid``: ``blend`` × standardised ALS score + (1 − ``blend``) × standardised text score,
  ``blend`` chosen on the validation split.

Items without a collaborative signal (cold-start items, items added by text with
:meth:`Recommender.add_item`) get ``-inf`` from the collaborative methods — they are blind to
them by construction — and, in ``hybrid``, their standardised text score alone. Reasons are the
liked items closest to a recommendation in text space.

Files (no pickle): ``recommender.json`` (method, settings, item ids, titles and texts, user ids)
and ``recommender.npz`` (the arrays); the encoder is a catalogue name or a copy in ``encoder/``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lmforge.errors import CheckpointError, LmforgeError, ModelNotFoundError

Method = Literal["popularity", "itemknn", "als", "bpr", "text", "hybrid"]
METHODS: tuple[Method, ...] = ("popularity", "itemknn", "als", "bpr", "text", "hybrid")
TEXT_METHODS = ("text", "hybrid")  # the methods that can score an item no one has rated
SPEC_FILE, ARRAYS_FILE = "recommender.json", "recommender.npz"


class UnknownUserError(ModelNotFoundError):
    """A user the model was not trained on (HTTP 404 ``unknown_user``)."""


class UnknownItemError(ModelNotFoundError):
    """An item id or title the model does not hold (HTTP 404 ``unknown_item``)."""


@dataclass(frozen=True)
class Recommendation:
    item_id: int
    title: str
    score: float
    because: list[str]  # the liked items (titles) it is closest to

    def to_json(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "title": self.title,
            "score": round(self.score, 6),
            "because": self.because,
        }


@dataclass
class Recommender:
    method: Method
    item_ids: np.ndarray  # (items,) int64
    titles: list[str]
    texts: list[str]
    warm: np.ndarray  # (items,) bool: the item has a collaborative signal
    popularity: np.ndarray  # (items,) training ratings
    vectors: np.ndarray  # (items, dims) float32, L2-normalised text vectors
    user_ids: np.ndarray  # (users,) int64, sorted
    history: np.ndarray  # (users + 1,) offsets into history_items
    history_items: np.ndarray  # each user's rated training items, oldest first
    history_liked: np.ndarray  # whether each of those ratings is a positive
    item_factors: np.ndarray | None = None  # als/bpr/hybrid
    user_factors: np.ndarray | None = None
    neighbours: np.ndarray | None = None  # itemknn: (items, K) neighbour indices
    neighbour_weights: np.ndarray | None = None  # and their cosines
    blend: float = 0.5  # hybrid: weight of the collaborative part
    half_life: float = 10.0  # text: a liked item N ratings older weighs 0.5^(N/half_life)
    regularization: float = 0.05  # the fold-in's ridge
    encoder: dict[str, str] = field(default_factory=dict)  # {"ref", "prefix"}
    _by_id: dict[int, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_id = {int(i): n for n, i in enumerate(self.item_ids)}

    # --- looking things up ----------------------------------------------------------------

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def item_index(self, item: int | str) -> int:
        """The row of an item given by id or exact title; ModelNotFoundError (404) if unknown."""
        if isinstance(item, int) or (isinstance(item, str) and item.isdigit()):
            found = self._by_id.get(int(item))
        else:
            found = next((n for n, t in enumerate(self.titles) if t == item), None)
            if found is None:  # case-insensitive, as a user types a title
                lowered = item.casefold()
                found = next(
                    (n for n, t in enumerate(self.titles) if t.casefold() == lowered), None
                )
        if found is None:
            raise UnknownItemError(
                f"unknown item {item!r}",
                "give an item_id or an exact title such as 'Toy Story (1995)'",
            )
        return found

    def user_history(self, user_id: int) -> tuple[int, np.ndarray, np.ndarray]:
        """A known user's row, rated training items and liked ones (each oldest first; the
        liked are all rated when none is a positive); ModelNotFoundError (404) otherwise."""
        row = int(np.searchsorted(self.user_ids, user_id))
        if row >= len(self.user_ids) or int(self.user_ids[row]) != user_id:
            raise UnknownUserError(
                f"unknown user {user_id}: this model was not trained on their ratings",
                "send liked_items (item ids or titles; --like) or a text query (--text) instead",
            )
        span = slice(int(self.history[row]), int(self.history[row + 1]))
        rated, liked = self.history_items[span], self.history_items[span][self.history_liked[span]]
        return row, rated, liked if len(liked) else rated

    # --- scoring ----------------------------------------------------------------------------

    def profile_vector(self, liked: np.ndarray) -> np.ndarray:
        """The recency-weighted mean of the liked items' text vectors (the last counts most)."""
        if len(liked) == 0:
            return np.zeros(self.vectors.shape[1], dtype=np.float32)
        age = np.arange(len(liked))[::-1]
        weights = 0.5 ** (age / self.half_life)
        mean = (weights[:, None] * self.vectors[liked]).sum(axis=0)
        norm = float(np.linalg.norm(mean))
        return np.asarray(mean / norm if norm > 0 else mean, dtype=np.float32)

    def _user_factors(self, liked: np.ndarray, user_row: int | None) -> np.ndarray:
        assert self.item_factors is not None
        if user_row is not None and self.user_factors is not None:
            return np.asarray(self.user_factors[user_row])
        # Fold-in: the factors u minimising ‖Y_liked u − 1‖² + λ‖u‖² (ALS' own user step with
        # unit confidence): a new user scored without refitting.
        y = self.item_factors[liked]
        gram = y.T @ y + self.regularization * np.eye(y.shape[1], dtype=y.dtype)
        return np.asarray(np.linalg.solve(gram, y.sum(axis=0)))

    def _collaborative(self, liked: np.ndarray, user_row: int | None) -> np.ndarray:
        if self.method == "popularity":
            scores = np.log1p(self.popularity.astype(np.float64))
        elif self.method == "itemknn":
            assert self.neighbours is not None and self.neighbour_weights is not None
            scores = np.zeros(self.n_items)
            np.add.at(scores, self.neighbours[liked].ravel(), self.neighbour_weights[liked].ravel())
            # equal sums (a user with no neighbours at all) fall back to popularity's order
            scores += 1e-9 * np.log1p(self.popularity)
        else:
            assert self.item_factors is not None
            scores = (self.item_factors @ self._user_factors(liked, user_row)).astype(np.float64)
        return np.where(self.warm, scores, -np.inf)

    def scores(self, liked: np.ndarray, user_row: int | None = None) -> np.ndarray:
        """One score per item for a user who liked ``liked`` (rows, oldest first); a known
        user's ``user_row`` uses their fitted factors where the method has them."""
        if self.method == "text":
            return np.asarray(self.vectors @ self.profile_vector(liked), dtype=np.float64)
        if self.method != "hybrid":
            return self._collaborative(liked, user_row)
        text = _standardised(self.vectors @ self.profile_vector(liked), np.ones(self.n_items, bool))
        collaborative = _standardised(self._collaborative(liked, user_row), self.warm)
        blended = text.copy()  # an item without a collaborative signal keeps its text score
        blended[self.warm] = (
            self.blend * collaborative[self.warm] + (1 - self.blend) * text[self.warm]
        )
        return blended

    def query_scores(self, query_vector: np.ndarray) -> np.ndarray:
        """Cosine of a text query's vector with every item (any method: only text reads text)."""
        return np.asarray(self.vectors @ query_vector, dtype=np.float64)

    def reasons(self, item: int, liked: np.ndarray, n: int = 2) -> list[str]:
        """The ``n`` liked items closest to ``item`` by text (the most recent first on ties)."""
        if len(liked) == 0:
            return []
        closeness = self.vectors[liked] @ self.vectors[item]
        order = np.argsort(-closeness[::-1], kind="stable")[:n]
        return [self.titles[int(liked[::-1][i])] for i in order]

    def rank(
        self, scores: np.ndarray, liked: np.ndarray, k: int, exclude: list[int] | None = None
    ) -> list[Recommendation]:
        """The ``k`` best items by ``scores``, leaving out ``liked``, ``exclude`` and items no
        score reaches (-inf), each with its reasons."""
        work = scores.copy()
        work[liked] = -np.inf
        if exclude:
            work[exclude] = -np.inf
        order = np.argsort(-work, kind="stable")[:k]
        return [
            Recommendation(
                int(self.item_ids[i]), self.titles[i], float(work[i]), self.reasons(int(i), liked)
            )
            for i in order
            if np.isfinite(work[i])
        ]

    # --- adding items -----------------------------------------------------------------------

    def add_item(self, item_id: int, title: str, text: str, vector: np.ndarray) -> None:
        """Add an item by its text vector (no collaborative signal: text and hybrid score it)."""
        if item_id in self._by_id:
            raise LmforgeError(f"item {item_id} already exists", "give a new item_id")
        self._by_id[item_id] = self.n_items
        self.item_ids = np.append(self.item_ids, np.int64(item_id))
        self.titles.append(title)
        self.texts.append(text)
        self.warm = np.append(self.warm, False)
        self.popularity = np.append(self.popularity, 0.0)
        self.vectors = np.vstack([self.vectors, vector[None, :].astype(np.float32)])
        if self.item_factors is not None:
            zeros = np.zeros((1, self.item_factors.shape[1]), self.item_factors.dtype)
            self.item_factors = np.vstack([self.item_factors, zeros])
        if self.neighbours is not None and self.neighbour_weights is not None:
            self.neighbours = np.vstack([self.neighbours, np.zeros_like(self.neighbours[:1])])
            self.neighbour_weights = np.vstack(
                [self.neighbour_weights, np.zeros_like(self.neighbour_weights[:1])]
            )

    def copy(self) -> Recommender:
        return replace(self, titles=list(self.titles), texts=list(self.texts))

    # --- files ------------------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        spec = {
            "method": self.method,
            "blend": self.blend,
            "half_life": self.half_life,
            "regularization": self.regularization,
            "encoder": self.encoder,
            "item_ids": [int(i) for i in self.item_ids],
            "titles": self.titles,
            "texts": self.texts,
        }
        arrays = {
            "warm": self.warm,
            "popularity": self.popularity,
            "vectors": self.vectors,
            "user_ids": self.user_ids,
            "history": self.history,
            "history_items": self.history_items,
            "history_liked": self.history_liked,
        }
        for name in ("item_factors", "user_factors", "neighbours", "neighbour_weights"):
            value = getattr(self, name)
            if value is not None:
                arrays[name] = value
        (folder / SPEC_FILE).write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        np.savez(folder / ARRAYS_FILE, allow_pickle=False, **arrays)

    @classmethod
    def load(cls, folder: Path) -> Recommender:
        """A saved recommender; CheckpointError (503 at the server) when its files are damaged."""
        try:
            spec = json.loads((folder / SPEC_FILE).read_text(encoding="utf-8"))
            with np.load(folder / ARRAYS_FILE, allow_pickle=False) as npz:
                arrays = {name: np.asarray(npz[name]) for name in npz.files}
            method = spec["method"]
            if method not in METHODS:
                raise ValueError(f"unknown method {method!r}")
            model = cls(
                method=method,
                item_ids=np.asarray(spec["item_ids"], dtype=np.int64),
                titles=[str(t) for t in spec["titles"]],
                texts=[str(t) for t in spec["texts"]],
                blend=float(spec["blend"]),
                half_life=float(spec["half_life"]),
                regularization=float(spec["regularization"]),
                encoder={str(k): str(v) for k, v in spec["encoder"].items()},
                warm=arrays["warm"].astype(bool),
                popularity=arrays["popularity"],
                vectors=arrays["vectors"],
                user_ids=arrays["user_ids"],
                history=arrays["history"],
                history_items=arrays["history_items"],
                history_liked=arrays["history_liked"].astype(bool),
                item_factors=arrays.get("item_factors"),
                user_factors=arrays.get("user_factors"),
                neighbours=arrays.get("neighbours"),
                neighbour_weights=arrays.get("neighbour_weights"),
            )
            if len(model.titles) != model.n_items or model.vectors.shape[0] != model.n_items:
                raise ValueError("the item arrays disagree in length")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(
                f"the recommender in {folder} cannot be opened ({type(exc).__name__}: {exc})",
                "register it again with `lmforge run` of its recipe",
            ) from exc
        return model


def _standardised(scores: np.ndarray, over: np.ndarray) -> np.ndarray:
    """Scores minus their mean over ``over``, divided by their spread there (so two methods'
    scores can be added); entries outside ``over`` are left as they are."""
    values = scores[over]
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return scores
    spread = float(finite.std()) or 1.0
    return np.where(over, (scores - float(finite.mean())) / spread, scores)


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step, synced to disk before it is acknowledged."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(f.name, path)
