"""Retraining a recommender on its users' interactions, behind the promotion gate.

A recommender's feedback is interactions (``click``/``rating`` events of ``POST /v1/feedback``).
Every fit of the recipe — ``lmforge run`` too — trains on the usable ones except a share of
the positives that a seeded hash of (user, item) holds out
(:func:`~lmforge.tasks.recommendation.place_interactions`), so no version ever sees them. A
round refits the production version's recipe (the same split; the recommender is fitted whole,
there are no weights to warm-start from) and scores production and the challenger on the
original test split and on those held-out interactions, HR@10 on both: each held-out
interaction is a user's item, ranked among every item that user has not rated. The gate of
:mod:`lmforge.tasks.gate` (the recipe's ``feedback.gate``, McNemar on the per-row hits)
decides; the record is the classifier's (:class:`~lmforge.tasks.retrain_record.RetrainResult`).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lmforge.data.movielens import RatingsSplit, usable_feedback
from lmforge.errors import DataError, LmforgeError, RecipeError
from lmforge.evaluate.ranking import ranking_metrics
from lmforge.models.meta import write_model_meta
from lmforge.monitor.feedback import INTERACTIONS, list_feedback
from lmforge.progress import ProgressReporter
from lmforge.recipe import Recipe, load_recipe
from lmforge.registry import ModelVersion, Registry
from lmforge.runtime.recommender import Recommender
from lmforge.settings import Settings
from lmforge.tasks.base import RunContext
from lmforge.tasks.gate import Scores, judge, mcnemar_p, with_changes
from lmforge.tasks.promote import promote_version
from lmforge.tasks.recommendation import (
    RecommendationTask,
    feedback_ratings,
    figures_on_test,
    load_split,
    place_interactions,
    stacked,
    top_listed,
)
from lmforge.tasks.retrain_record import RECORD, RetrainResult, recipe_of
from lmforge.tasks.run import _register_folder

METRIC = "hr@10"  # a recommender's gate compares hit rates, whatever feedback.gate.metric says
# what defines the split: a retraining recipe may change the method's settings, not these
SPLIT_KEYS = ("protocol", "time_quantile", "positive_rating", "cold_fraction", "max_users", "seed")


def retrain_recommender(
    champion: ModelVersion,
    *,
    recipe: Recipe | Path | None,
    gate: Mapping[str, Any] | None,
    settings: Settings,
    progress: ProgressReporter,
) -> RetrainResult:
    """One round for the production recommender ``champion``: refit, judge, promote when the
    gate passes (``gate`` overrides the recipe's ``feedback.gate`` keys)."""
    started, tick = datetime.now(UTC), time.perf_counter()
    original = recipe_of(champion)
    recipe = _retrain_recipe(recipe, original, champion)
    gate_config = with_changes(recipe.feedback.gate, gate)
    section = recipe.recommendation
    data, split = load_split(section)
    interactions = feedback_ratings(champion.name, settings)
    if interactions.empty:
        raise DataError(
            f"'{champion.name}' has no interaction feedback to retrain on",
            'send {"model", "user_id", "item_id", "event": "click"|"rating", "value"} to '
            "POST /v1/feedback first",
        )
    usable = usable_feedback(split, interactions, data)
    trained_on, held_out = place_interactions(usable, recipe.feedback, split.positive)
    if trained_on.empty:
        raise DataError(
            f"none of the {len(interactions)} interactions of '{champion.name}' is left to train "
            f"on ({len(usable)} usable: the others name an unknown or cold-start item, or a "
            "pair rated or held out already; the usable ones are held out for the gate)",
            "send more interactions, or lower feedback.holdout_share",
        )
    counts: dict[str, Any] = {
        "interactions": len(interactions),
        "usable": len(usable),
        "train_rows": len(trained_on),
        "holdout_rows": len(held_out),
        # to the microsecond, as the loop compares it with each row's update time
        "latest_feedback_at": max(
            f.updated_at
            for f in list_feedback(champion.name, settings=settings)
            if f.event in INTERACTIONS
        ).isoformat(),
    }
    progress.note(
        f"refitting {champion.ref} ({section.method}) with {len(trained_on)} interactions; "
        f"{len(held_out)} held out"
    )

    # Nothing is written before this point; an unfinished round leaves no run folder behind.
    ctx = RunContext(recipe, settings, progress)
    try:
        output = RecommendationTask().run(ctx)
        write_model_meta(output.model_dir, output.meta)
        progress.note("scoring production and challenger on the test split and held-out slice")
        champion_model = Recommender.load(champion.path)
        scores, hits = {}, {}
        for who, model in (("champion", champion_model), ("challenger", output.recommender)):
            scores[who], hits[who] = _scores(model, split, held_out, usable)
    except BaseException:
        with suppress(RuntimeError):  # RuntimeError: the task failed before opening its folder
            shutil.rmtree(ctx.run_dir, ignore_errors=True)
        raise
    decision = judge(
        scores["champion"],
        scores["challenger"],
        gate_config,
        len(held_out),
        mcnemar_p(hits["champion"], hits["challenger"]),
        metric=METRIC,
    )
    result = RetrainResult(
        model=champion.name,
        champion=champion,
        trained=champion,  # replaced once registered
        challenger=champion,
        decision=decision,
        promoted=False,
        scores=scores,
        counts=counts,
        weighting={},
        warm_start="refit",
        run_dir=ctx.run_dir,
        started_at=started,
        wall_seconds=time.perf_counter() - tick,
    )
    output.metrics[RECORD] = result.record()
    result.trained = result.challenger = _register_folder(ctx, output)
    if decision.promote:
        try:
            promote_version(result.challenger.ref, settings)
            result.promoted = True
        except LmforgeError as exc:
            reason = f"passed the gate but was not promoted: {exc.problem}"
            result.decision = replace(decision, promote=False, reason=reason)
    result.wall_seconds = time.perf_counter() - tick
    record = result.record()
    (ctx.run_dir / "retrain.json").write_text(json.dumps(record, indent=1))
    registry = Registry(settings)
    registry.annotate(result.challenger.ref, RECORD, record)
    result.challenger = result.trained = registry.get(result.challenger.ref)
    return result


def _retrain_recipe(
    given: Recipe | Path | None, original: Recipe, champion: ModelVersion
) -> Recipe:
    recipe = load_recipe(given) if isinstance(given, Path) else (given or original)
    if recipe.task != "recommendation":
        raise RecipeError(
            f"{champion.ref} is a recommender: a retraining recipe is a recommendation recipe, "
            f"not {recipe.task}",
            "give its own recipe.yaml with the changes you want",
        )
    changed = [
        key
        for key in SPLIT_KEYS
        if getattr(recipe.recommendation, key) != getattr(original.recommendation, key)
    ]
    if changed:
        raise RecipeError(
            f"recommendation.{', recommendation.'.join(changed)} differ from those "
            f"{champion.ref} was fitted with, which define its split",
            "retraining keeps the original split: copy them from its recipe.yaml",
        )
    registry = recipe.registry.model_copy(
        update={"name": champion.name, "stage": "candidate", "enabled": True}
    )
    return recipe.model_copy(update={"registry": registry})


def _scores(
    model: Recommender, split: RatingsSplit, held_out: pd.DataFrame, usable: pd.DataFrame
) -> tuple[Scores, np.ndarray]:
    """``model``'s figures on the test split and the held-out interactions, and its per-row
    hits on the latter (for the McNemar test)."""
    test = figures_on_test(model, split)
    lists, wanted = _feedback_lists(model, held_out, usable, split.positive)
    feedback = ranking_metrics(lists, wanted, model.n_items)
    hits = np.array(
        [bool(set(top[:10].tolist()) & rel) for top, rel in zip(lists, wanted, strict=True)]
    )
    return {"test": test, "feedback": feedback}, hits.astype(bool)


def _feedback_lists(
    model: Recommender, held_out: pd.DataFrame, usable: pd.DataFrame, positive: float
) -> tuple[np.ndarray, list[set[int]]]:
    """Each held-out interaction's user scored as the model serves them — a user it was fitted
    on from their own history, another from the items they liked in the interactions it may
    train on (as a client's ``liked_items``; popularity when none) — with every other item
    they rated or interacted with left out of their top 20."""
    known = {int(u) for u in model.user_ids}
    held = set(zip(held_out["user_id"].astype(int), held_out["item_id"].astype(int), strict=True))
    lists, wanted = [], []
    for user, own in usable.groupby("user_id"):
        user = int(user)
        own_items = [int(i) for i in own["item_id"]]
        targets = [i for i in own_items if (user, i) in held]
        if not targets:
            continue
        if user in known:
            row, rated, liked = model.user_history(user)
            scores = model.scores(liked, row)
        else:
            rated = np.zeros(0, dtype=np.int64)
            liked = np.array(
                [
                    model.item_index(i)
                    for i, r in zip(own_items, own["rating"], strict=True)
                    if (user, i) not in held and r >= positive
                ],
                dtype=np.int64,
            )
            scores = model.scores(liked, None) if len(liked) else np.log1p(model.popularity)
        for target in targets:
            others = [model.item_index(i) for i in own_items if i != target]
            excluded = np.concatenate([rated, np.array(others, dtype=np.int64)])
            lists.append(top_listed(np.asarray(scores, dtype=np.float64), excluded))
            wanted.append({model.item_index(target)})
    return stacked(lists), wanted
