"""task: recommendation — rank items for users from their ratings and the items' text.

The ratings (the built-in ``movielens`` source) are split by :mod:`lmforge.data.movielens`;
every item is embedded once by ``model.base`` (batched, cached); the recipe's ``method`` is
fitted (ALS and BPR by the ``implicit`` library, item-kNN by its cosine recommender) into a
:class:`~lmforge.runtime.recommender.Recommender`; and it is evaluated by full ranking beside
the popularity baseline — overall, on cold-start items (ranked among the cold items, beside a
genre-popularity baseline) and on light users (each test user profiled from only their last
five liked training items, so the figures describe a user with five ratings; MovieLens has no
user with fewer than 20). The folder it registers serves ``POST /v1/recommend``.

Over 400 lines because fitting, the three evaluation slices and the report of one task belong
together (the protocol's shared pieces are in data/movielens.py and evaluate/ranking.py).
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix
from threadpoolctl import ThreadpoolController

from lmforge.assistant.assistant import EncoderChoice, encoder_key, resolve_encoder
from lmforge.assistant.passages import cached_embed
from lmforge.data.movielens import (
    RatingsData,
    RatingsSplit,
    item_text,
    item_title,
    load_movielens,
    split_card,
    split_card_markdown,
    split_ratings,
    usable_feedback,
    with_feedback,
)
from lmforge.evaluate.ranking import ranking_metrics, top_k
from lmforge.models.meta import RecommendationMeta
from lmforge.monitor.feedback import INTERACTIONS, list_feedback
from lmforge.recipe import Recipe
from lmforge.recipe.recommendation import RecommendationSection
from lmforge.recipe.schema import FeedbackConfig
from lmforge.registry import Registry
from lmforge.runtime.embedder import Embedder
from lmforge.runtime.recommender import Recommender
from lmforge.settings import Settings
from lmforge.tasks.base import Report, ReportLine, ReportTable, RunContext, TaskOutput
from lmforge.tasks.retrain_data import placement

#: A user's scores over every item, from (their row in the model or None, their liked rows).
Scorer = Callable[[int | None, np.ndarray], np.ndarray]
LIGHT_PROFILE = 5  # liked items a light user is profiled from
BLEND_GRID = tuple(round(0.1 * i, 1) for i in range(11))
# One user's scores are a matrix-vector product: a BLAS thread pool only oversubscribes the
# cores there (measured: 19 ms with two OpenBLAS threads, 6 ms with one, on a loaded machine).


@cache
def _one_blas_thread() -> ThreadpoolController:
    """Made on first use: it lists the thread pools of the libraries loaded by then."""
    return ThreadpoolController()


@dataclass(kw_only=True)
class RecommendationOutput(TaskOutput):
    recommender: Recommender
    split: RatingsSplit


class RecommendationTask:
    name: ClassVar[str] = "recommendation"
    resumable: ClassVar[bool] = False
    compressible: ClassVar[bool] = False
    registered: ClassVar[str] = (
        "registered [bold]{ref}[/bold]; try `lmforge app recommend {ref} --user 1`"
    )

    def check(self, recipe: Recipe) -> None:
        from lmforge.tasks.base import check_encoder_base

        check_encoder_base(recipe)  # every method embeds the items (reasons, new items)

    def run(self, ctx: RunContext) -> RecommendationOutput:
        recipe, progress, section = ctx.recipe, ctx.progress, ctx.recipe.recommendation
        data, split = load_split(section)
        usable = usable_feedback(split, feedback_ratings(recipe.model_name, ctx.settings), data)
        trained_on, held_out = place_interactions(usable, recipe.feedback, split.positive)
        split, taken = with_feedback(split, trained_on, data)
        encoder = resolve_encoder(recipe.model.base, ctx.settings.cache_dir, Registry(ctx.settings))
        progress.note(
            f"{len(data.ratings)} ratings, {len(data.items)} items; {section.method} with "
            f"{len(split.cold_items)} cold-start items held out"
        )
        card = {
            **split_card(data, split),
            "feedback_ratings": taken,
            "feedback_held_out": len(held_out),
        }
        run_dir = ctx.open_run_dir(card, split_card_markdown)
        progress.note(f"embedding {len(data.items)} items with {encoder.ref}")
        vectors = embed_items(data.items, encoder, ctx.settings.cache_dir / "recommend-items")
        progress.note(f"fitting {section.method}")
        model = fit_recommender(section.method, data, split, vectors, section, encoder)
        progress.note("ranking every unrated item for each test user")
        metrics = evaluate_recommender(model, split, data.items)
        popularity = fit_recommender("popularity", data, split, vectors, section, encoder)
        baselines = {"popularity": evaluate_recommender(popularity, split, data.items)}
        baselines["genre_popularity"] = {
            "cold": evaluate_cold(genre_scorer(data, split, model), model, split)
        }
        (run_dir / "metrics.json").write_text(
            json.dumps({"test": metrics, "baselines": baselines}, indent=1)
        )
        model_dir = run_dir / "model"
        model.save(model_dir)
        if not encoder.in_catalogue:
            shutil.copytree(encoder.path, model_dir / "encoder")
        meta = RecommendationMeta(
            task="recommendation",
            base_model=encoder.ref,
            method=section.method,
            items=model.n_items,
            users=len(model.user_ids),
        )
        return RecommendationOutput(
            model_dir=model_dir,
            meta=meta,
            metrics=metrics,
            baselines=baselines,
            card=card,
            reports=("data_card.md",),
            summary={"method": section.method, "blend": model.blend},
            report=_report(recipe, metrics, baselines, model, run_dir),
            recommender=model,
            split=split,
        )


def load_split(section: RecommendationSection) -> tuple[RatingsData, RatingsSplit]:
    """The ratings and the split ``section`` names (the same every time it is asked)."""
    data = load_movielens(section.max_users)
    split = split_ratings(
        data.ratings,
        protocol=section.protocol,
        positive=section.positive_rating,
        cold_fraction=section.cold_fraction,
        time_quantile=section.time_quantile,
        seed=section.seed,
    )
    return data, split


# --- feedback --------------------------------------------------------------------------------


def feedback_ratings(model_name: str, settings: Settings) -> pd.DataFrame:
    """The interactions served users sent to POST /v1/feedback for ``model_name`` as ratings:
    a rating with its value, a click as a positive (5). Ids that are not
    numbers cannot name a MovieLens user or film and are left out."""
    rows = []
    for f in list_feedback(model_name, settings=settings):
        if f.event not in INTERACTIONS or not (f.user_id or "").isdigit():
            continue
        if not (f.item_id or "").isdigit():
            continue
        # a click says the user wanted the item: a positive, whatever its value counts
        value = f.value if f.event == "rating" and f.value is not None else 5.0
        rows.append((int(f.user_id or 0), int(f.item_id or 0), float(value), f.updated_at))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "when"])
    seconds = [int(w.timestamp()) for w in frame["when"]]
    return frame.drop(columns="when").assign(timestamp=np.array(seconds, dtype=np.int64))


def place_interactions(
    feedback: pd.DataFrame, config: FeedbackConfig, positive: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trained on, held out): a positive interaction is held out for the retraining gate
    when the seeded hash of its user and item places it there (``feedback.holdout_share``,
    as a classifier's feedback text is placed) — in every fit, so none ever trains on it."""
    held = np.array(
        [
            rating >= positive and placement(f"{user}:{item}", config) == "holdout"
            for user, item, rating in zip(
                feedback["user_id"], feedback["item_id"], feedback["rating"], strict=True
            )
        ],
        dtype=bool,
    )
    return feedback[~held], feedback[held]


# --- embedding and fitting -------------------------------------------------------------------


def embed_items(items: pd.DataFrame, encoder: EncoderChoice, cache: Any) -> np.ndarray:
    """Every item's text (title, year, genres) embedded as a passage, in batches, cached by
    encoder and texts (a second run reads them back)."""
    texts = [
        encoder.passage_prefix + item_text(t, y, g)
        for t, y, g in zip(items["title"], items["year"], items["genres"], strict=True)
    ]
    embedder = Embedder(encoder.path, batch_size=64)
    return np.asarray(cached_embed(embedder.embed, texts, cache, encoder_key(encoder.path)))


def fit_recommender(
    method: str,
    data: RatingsData,
    split: RatingsSplit,
    vectors: np.ndarray,
    section: RecommendationSection,
    encoder: EncoderChoice,
    *,
    threads: int = 1,
) -> Recommender:
    """Fit ``method`` on the split's training ratings (hybrid: its blend chosen on the
    validation ratings unless the recipe fixes it)."""
    item_ids = data.items["item_id"].to_numpy(np.int64)
    rows = {int(i): n for n, i in enumerate(item_ids)}
    train = split.train.sort_values(["user_id", "timestamp"], kind="stable")
    user_ids = np.sort(train["user_id"].unique()).astype(np.int64)
    user_rows = np.searchsorted(user_ids, train["user_id"].to_numpy())
    item_rows = train["item_id"].map(rows).to_numpy(np.int64)
    counts = np.bincount(user_rows, minlength=len(user_ids))
    popularity = np.bincount(item_rows, minlength=len(item_ids)).astype(np.float64)
    model = Recommender(
        method="popularity",
        item_ids=item_ids,
        titles=[
            item_title(t, y) for t, y in zip(data.items["title"], data.items["year"], strict=True)
        ],
        texts=[
            item_text(t, y, g)
            for t, y, g in zip(
                data.items["title"], data.items["year"], data.items["genres"], strict=True
            )
        ],
        warm=popularity > 0,
        popularity=popularity,
        vectors=vectors.astype(np.float32),
        user_ids=user_ids,
        history=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        history_items=item_rows,
        history_liked=(train["rating"] >= split.positive).to_numpy(),
        half_life=section.half_life,
        regularization=section.regularization,
        encoder={
            "ref": encoder.ref if encoder.in_catalogue else "encoder",
            "source": encoder.ref,
            "query_prefix": encoder.query_prefix,
            "passage_prefix": encoder.passage_prefix,
        },
    )
    interactions = csr_matrix(
        (np.ones(len(item_rows), np.float32), (user_rows, item_rows)),
        shape=(len(user_ids), len(item_ids)),
    )
    if method in ("als", "bpr", "hybrid"):
        model.item_factors, model.user_factors = _factorise(
            "bpr" if method == "bpr" else "als", interactions, section, threads
        )
    if method == "itemknn":
        model.neighbours, model.neighbour_weights = _neighbours(interactions, section, threads)
    model.method = method  # type: ignore[assignment]  # checked by the recipe's literal
    if method == "hybrid":
        model.blend = section.blend if section.blend is not None else choose_blend(model, split)
    return model


def _factorise(
    method: str, interactions: csr_matrix, section: RecommendationSection, threads: int
) -> tuple[np.ndarray, np.ndarray]:
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    if method == "als":
        fitted: Any = AlternatingLeastSquares(
            factors=section.factors,
            regularization=section.regularization,
            iterations=section.iterations,
            num_threads=threads,
            random_state=section.seed,
        )
    else:
        fitted = BayesianPersonalizedRanking(
            factors=section.factors,
            learning_rate=section.learning_rate,
            regularization=section.regularization,
            iterations=section.iterations,
            num_threads=threads,
            random_state=section.seed,
        )
    # implicit parallelises itself; a BLAS thread pool under it only oversubscribes the cores
    with _one_blas_thread().limit(limits=1, user_api="blas"), warnings.catch_warnings():
        # implicit warns of OpenBLAS' two threads before it sees the limit set here
        warnings.filterwarnings("ignore", message="OpenBLAS is configured", category=RuntimeWarning)
        fitted.fit(interactions, show_progress=False)
    return np.asarray(fitted.item_factors), np.asarray(fitted.user_factors)


def _neighbours(
    interactions: csr_matrix, section: RecommendationSection, threads: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each item's ``section.neighbours`` most similar items by cosine over the users who
    rated both (implicit's CosineRecommender), as dense (items, K) index and weight arrays."""
    from implicit.nearest_neighbours import CosineRecommender

    knn = CosineRecommender(K=section.neighbours, num_threads=threads)
    knn.fit(interactions, show_progress=False)
    similarity = knn.similarity.tocsr()
    n, k = similarity.shape[0], section.neighbours
    index, weight = np.zeros((n, k), np.int64), np.zeros((n, k), np.float32)
    for row in range(n):
        start, end = similarity.indptr[row], similarity.indptr[row + 1]
        cols, vals = similarity.indices[start:end], similarity.data[start:end]
        keep = cols != row  # an item is not its own neighbour
        cols, vals = cols[keep], vals[keep]
        order = np.argsort(-vals, kind="stable")[:k]
        index[row, : len(order)], weight[row, : len(order)] = cols[order], vals[order]
    return index, weight


def choose_blend(model: Recommender, split: RatingsSplit) -> float:
    """The hybrid's collaborative weight with the best validation HR@10 (never the test's).
    A blend's scores are linear in it — ``b · scores(b=1) + (1 − b) · scores(b=0)`` — so each
    user is scored twice, not once per blend."""
    ends: dict[int | None, tuple[np.ndarray, np.ndarray]] = {}

    def at(blend: float) -> Scorer:
        def score(row: int | None, liked: np.ndarray) -> np.ndarray:
            if row not in ends:
                model.blend = 1.0
                one = model.scores(liked, row)
                model.blend = 0.0
                ends[row] = (one, model.scores(liked, row))
            one, zero = ends[row]
            return blend * one + (1 - blend) * zero

        return score

    best, best_hr = 0.5, -1.0
    for blend in BLEND_GRID:
        hr = _evaluate(at(blend), model, split, "validation")["hr@10"]
        if hr > best_hr:
            best, best_hr = blend, hr
    model.blend = best
    return best


# --- evaluation ------------------------------------------------------------------------------


def _scorer(model: Recommender) -> Scorer:
    return lambda row, liked: model.scores(liked, row)


def _relevant(model: Recommender, frame: pd.DataFrame) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for user, item in zip(frame["user_id"], frame["item_id"], strict=True):
        out.setdefault(int(user), set()).add(model.item_index(int(item)))
    return out


def _evaluate(
    score: Scorer,
    model: Recommender,
    split: RatingsSplit,
    part: str,
    *,
    light: bool = False,
    candidates: np.ndarray | None = None,
) -> dict[str, float]:
    """Full ranking for each user with a positive in ``part``: every item (or ``candidates``)
    the user has not rated in training (nor, for the test, in validation)."""
    with _one_blas_thread().limit(limits=1, user_api="blas"):
        lists, wanted = _ranked_lists(score, model, split, part, light, candidates)
    n = model.n_items if candidates is None else len(candidates)
    return ranking_metrics(lists, wanted, n)


def _ranked_lists(
    score: Scorer,
    model: Recommender,
    split: RatingsSplit,
    part: str,
    light: bool,
    candidates: np.ndarray | None,
) -> tuple[np.ndarray, list[set[int]]]:
    """Each scored user's top 20 (-1 where no score reaches an item) and relevant items."""
    relevant = _relevant(model, split.positives(part))
    known = set(int(u) for u in model.user_ids)
    validation = _relevant(model, split.validation) if part != "validation" else {}
    lists, wanted = [], []
    for user, rel in sorted(relevant.items()):
        if user not in known:
            continue
        known_row, rated, liked = model.user_history(user)
        row: int | None = known_row
        if light:
            liked, row = liked[-LIGHT_PROFILE:], None  # as a user with five ratings
        scores = score(row, liked)
        excluded = np.concatenate([rated, np.fromiter(validation.get(user, ()), np.int64)])
        if candidates is not None:
            keep = np.full(model.n_items, -np.inf)
            keep[candidates] = 0.0
            scores = scores + keep
        lists.append(top_listed(scores, excluded))
        wanted.append(rel)
    return stacked(lists), wanted


def stacked(lists: list[np.ndarray]) -> np.ndarray:
    """Top-20 lists as one (users, 20) array (none: an empty one of that width)."""
    return np.array(lists, dtype=np.int64) if lists else np.zeros((0, 20), dtype=np.int64)


def top_listed(scores: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """The top 20 of ``scores`` outside ``excluded``; an item no score reaches (a collaborative
    method's cold item) is not recommended: -1 in its place."""
    ranked = top_k(scores[None, :], 20, [excluded])[0]
    return np.where(np.isfinite(scores[ranked]), ranked, -1)


def figures_on_test(model: Recommender, split: RatingsSplit) -> dict[str, float]:
    """The model's figures on the test split alone (no cold-start or light-user slice)."""
    return _evaluate(_scorer(model), model, split, "test")


def evaluate_cold(score: Scorer, model: Recommender, split: RatingsSplit) -> dict[str, float]:
    """The cold-start items ranked among themselves for the users who liked one of them."""
    cold = np.array(sorted(model.item_index(i) for i in split.cold_items), dtype=np.int64)
    return _evaluate(score, model, split, "cold_test", candidates=cold)


def evaluate_recommender(
    model: Recommender, split: RatingsSplit, items: pd.DataFrame
) -> dict[str, Any]:
    """The model's test figures: overall, on cold-start items and on light users."""
    score = _scorer(model)
    overall = _evaluate(score, model, split, "test")
    return {
        **overall,
        "cold": evaluate_cold(score, model, split) if split.cold_items else {},
        "light": _evaluate(score, model, split, "test", light=True),
    }


def genre_scorer(data: RatingsData, split: RatingsSplit, model: Recommender) -> Scorer:
    """The cold-start baseline: an item scores the mean training popularity (positives) of its
    genres — not personalised, and blind to nothing the text method sees but the title."""
    genres = data.items["genres"].str.split("|")
    liked = split.positives("train")["item_id"].map(
        dict(zip(data.items["item_id"], genres, strict=True))
    )
    counts = pd.Series([g for gs in liked for g in gs]).value_counts()
    scores = np.array([float(np.mean([counts.get(g, 0) for g in gs])) for gs in genres])
    return lambda row, liked: scores


def _cells(m: dict[str, Any]) -> list[str]:
    if not m:
        return ["–"] * 4
    return [f"{100 * m[k]:.2f}" for k in ("hr@10", "ndcg@10", "recall@20", "coverage@10")]


def _report(
    recipe: Recipe,
    metrics: dict[str, Any],
    baselines: dict[str, dict[str, Any]],
    model: Recommender,
    run_dir: Any,
) -> Report:
    popularity = baselines["popularity"]
    rows = [
        ["overall", recipe.recommendation.method, *_cells(metrics)],
        ["overall", "popularity", *_cells(popularity)],
        ["cold-start items", recipe.recommendation.method, *_cells(metrics["cold"])],
        ["cold-start items", "genre popularity", *_cells(baselines["genre_popularity"]["cold"])],
        ["light users (5 liked)", recipe.recommendation.method, *_cells(metrics["light"])],
        ["light users (5 liked)", "popularity", *_cells(popularity["light"])],
    ]
    table = ReportTable(
        f"{recipe.name}: full ranking of every unrated item (%)",
        ["slice", "method", "HR@10", "NDCG@10", "recall@20", "coverage@10"],
        rows,
        text_columns=2,
    )
    lines = [
        ReportLine(f"{metrics['users']} test users, {model.n_items} items", highlight=False),
        ReportLine(f"run folder {run_dir}", highlight=False),
    ]
    if recipe.recommendation.method == "hybrid":
        lines.insert(0, ReportLine(f"hybrid blend {model.blend:.1f} (chosen on validation)"))
    return Report([table], lines)
