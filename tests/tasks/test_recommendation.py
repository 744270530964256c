"""task: recommendation on a tiny slice of MovieLens (eight users) with a tiny random encoder:
every method fits, evaluates beside its baselines and registers a version that loads back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lmforge.models.meta import RecommendationMeta, read_model_meta
from lmforge.recipe import parse_recipe
from lmforge.runtime.recommender import Recommender
from lmforge.settings import Settings
from lmforge.tasks.run import RunResult, run_recipe


def recipe(base: Path, method: str, **section: Any) -> Any:
    return parse_recipe(
        {
            "name": f"ml-{method}",
            "task": "recommendation",
            "data": {"source": {"builtin": "movielens"}},
            "model": {"base": str(base)},
            "recommendation": {"method": method, "max_users": 8, "iterations": 3, **section},
        }
    )


@pytest.fixture(scope="module")
def runs(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, RunResult]:
    settings = Settings(home=tmp_path_factory.mktemp("home"), database_url=None)
    return {
        m: run_recipe(recipe(tiny_base, m), settings=settings, progress=False)
        for m in ("popularity", "itemknn", "als", "bpr", "text", "hybrid")
    }


@pytest.mark.parametrize("method", ["popularity", "itemknn", "als", "bpr", "text", "hybrid"])
def test_each_method_registers_a_version_that_loads(
    runs: dict[str, RunResult], method: str
) -> None:
    result = runs[method]
    assert result.version is not None and result.version.task == "recommendation"
    meta = read_model_meta(result.version.path)
    assert isinstance(meta, RecommendationMeta) and meta.method == method
    model = Recommender.load(result.version.path)
    assert model.method == method and model.n_items == meta.items
    for key in ("hr@10", "ndcg@10", "recall@20", "coverage@10"):
        assert 0.0 <= result.metrics[key] <= 1.0
        assert 0.0 <= result.metrics["light"][key] <= 1.0
    assert result.metrics["users"] > 0
    assert "popularity" in result.baselines and "genre_popularity" in result.baselines
    # no pickle anywhere in the version: every array reads back without it
    assert not list(result.version.path.rglob("*.pkl"))
    with np.load(result.version.path / "recommender.npz", allow_pickle=False) as arrays:
        assert "vectors" in arrays.files


def test_cold_start_items_get_text_scores_and_collaborative_ones_none(
    runs: dict[str, RunResult],
) -> None:
    text = runs["text"].output.recommender  # type: ignore[attr-defined]
    als = runs["als"].output.recommender  # type: ignore[attr-defined]
    hybrid = runs["hybrid"].output.recommender  # type: ignore[attr-defined]
    cold = ~text.warm
    assert cold.any()
    _, _, liked = text.user_history(int(text.user_ids[0]))
    assert np.isfinite(text.scores(liked)[cold]).all()
    assert np.isfinite(hybrid.scores(liked)[cold]).all()
    assert np.isneginf(als.scores(liked)[cold]).all()
    assert runs["als"].metrics["cold"]["hr@10"] == 0.0  # blind by construction


def test_hybrid_blend_is_chosen_on_validation(runs: dict[str, RunResult]) -> None:
    model = runs["hybrid"].output.recommender  # type: ignore[attr-defined]
    assert model.blend in [round(0.1 * i, 1) for i in range(11)]
    assert runs["hybrid"].summary()["blend"] == model.blend


def test_a_recommendation_recipe_refuses_another_source() -> None:
    from lmforge.errors import RecipeError

    with pytest.raises(RecipeError, match="movielens"):
        parse_recipe(
            {
                "name": "x",
                "task": "recommendation",
                "data": {"source": {"builtin": "rotten_tomatoes"}},
            }
        )


def test_a_recommendation_version_is_checked_and_promoted_as_a_recommender(
    runs: dict[str, RunResult],
) -> None:
    from lmforge.tasks.promote import check_version, promote_version

    version = runs["text"].version
    assert version is not None
    settings = Settings(home=version.path.parents[2], database_url=None)
    check_version(version, settings)  # before: opened as an assistant, and refused
    assert promote_version(version.ref, settings).version.stage == "production"


def test_a_refit_learns_from_the_interactions_posted_as_feedback(
    tiny_base: Path, tmp_path: Path
) -> None:
    from lmforge.monitor.feedback import FeedbackEvent, record_feedback

    settings = Settings(home=tmp_path / "home", database_url=None)
    first = run_recipe(recipe(tiny_base, "text"), settings=settings, progress=False)
    model = first.output.recommender  # type: ignore[attr-defined]
    _, rated, _ = model.user_history(1)
    unrated = next(
        int(i) for n, i in enumerate(model.item_ids) if n not in set(rated) and model.warm[n]
    )
    for event in (
        FeedbackEvent(model="ml-text", user_id="1", item_id=str(unrated), event="click"),
        FeedbackEvent(model="ml-text", user_id="abc", item_id="1", event="click"),  # not a user
    ):
        record_feedback(event, settings)
    second = run_recipe(recipe(tiny_base, "text"), settings=settings, progress=False)
    assert second.output.card["feedback_ratings"] == 1
    refit = second.output.recommender  # type: ignore[attr-defined]
    _, rated, liked = refit.user_history(1)
    assert refit.item_index(unrated) in set(liked)


def test_the_cli_prints_a_ranked_list_with_reasons_or_one_line_error(
    runs: dict[str, RunResult],
) -> None:
    from conftest import lmforge

    version = runs["text"].version
    assert version is not None
    home = version.path.parents[2]
    done = lmforge("app", "recommend", version.ref, "--user", "1", "-k", "3", home=home)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 4 and lines[1].lstrip().startswith("1.")
    assert "because you liked" in lines[1]
    done = lmforge("app", "recommend", version.ref, "--user", "999999", home=home)
    assert done.returncode == 2
    assert "unknown user 999999" in done.stderr and "liked_items" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
