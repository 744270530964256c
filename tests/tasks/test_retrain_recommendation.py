"""`lmforge retrain` / `lmforge loop` of a recommender (ALS on eight MovieLens users, a tiny
random encoder): interactions posted as feedback are refitted on, a seeded share of them is
held out of every fit, and the gate promotes a challenger that learned them and refuses one
that had nothing to learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lmforge.errors import DataError, LmforgeError
from lmforge.monitor.feedback import FeedbackEvent, record_feedback
from lmforge.recipe import parse_recipe
from lmforge.registry import Registry
from lmforge.runtime.recommender import Recommender
from lmforge.settings import Settings
from lmforge.tasks.loop import report_drift, run_round
from lmforge.tasks.promote import promote_version
from lmforge.tasks.retrain import retrain
from lmforge.tasks.run import run_recipe

NAME = "ml-loop"
GATE = {"min_eval_rows": 8, "max_test_drop": 100.0}  # eight test users: one is 12.5 points


def production(tiny_base: Path, home: Path) -> tuple[Settings, Recommender]:
    settings = Settings(home=home, database_url=None)
    recipe = parse_recipe(
        {
            "name": NAME,
            "task": "recommendation",
            "data": {"source": {"builtin": "movielens"}},
            "model": {"base": str(tiny_base)},
            "recommendation": {"method": "als", "max_users": 8, "iterations": 3, "factors": 8},
        }
    )
    result = run_recipe(recipe, settings=settings, progress=False)
    assert result.version is not None
    promote_version(result.version.ref, settings)
    return settings, result.output.recommender  # type: ignore[attr-defined]


def rare_items(model: Recommender, n: int) -> list[int]:
    """``n`` films only one of the users the model was fitted on rated (it ranks them low)."""
    rows = np.flatnonzero(model.popularity == 1)[:n]
    assert len(rows) == n
    return [int(model.item_ids[i]) for i in rows]


def unrated(model: Recommender, user: int, items: list[int]) -> list[int]:
    rated = {int(model.item_ids[i]) for i in model.user_history(user)[1]}
    return [i for i in items if i not in rated]


def click(settings: Settings, user: int, item: int) -> None:
    record_feedback(
        FeedbackEvent(model=NAME, user_id=str(user), item_id=str(item), event="click"), settings
    )


def test_a_recommender_learns_its_users_shared_taste_and_is_promoted(
    tiny_base: Path, tmp_path: Path
) -> None:
    settings, model = production(tiny_base, tmp_path / "home")
    taste = rare_items(model, 12)  # every user clicks the same twelve little-known films
    posted = 0
    for user in model.user_ids:
        for item in unrated(model, int(user), taste):
            click(settings, int(user), item)
            posted += 1
    result = retrain(NAME, gate=GATE, settings=settings, progress=False)
    counts = result.counts
    assert counts["interactions"] == posted and counts["usable"] > 0.9 * posted
    assert counts["holdout_rows"] + counts["train_rows"] == counts["usable"]
    assert counts["holdout_rows"] >= 8
    champion, challenger = result.scores["champion"], result.scores["challenger"]
    assert challenger["feedback"]["hr@10"] >= champion["feedback"]["hr@10"] + 0.3
    assert result.decision.metric == "hr@10" and result.decision.p_value <= 0.05
    assert result.promoted, result.decision.reason
    registry = Registry(settings)
    assert registry.get(f"{NAME}:production").ref == result.challenger.ref
    record = registry.get(result.challenger.ref).metrics["retrain"]
    assert record["decision"] == "promoted" and record["warm_start"] == "refit"
    # no fit ever trains on a held-out interaction: the refit's card counts only the others
    card = (result.run_dir / "data_card.json").read_text()
    assert f'"feedback_ratings": {counts["train_rows"]}' in card
    assert f'"feedback_held_out": {counts["holdout_rows"]}' in card
    refit = Recommender.load(result.challenger.path)
    clicked = {(int(u), i) for u in model.user_ids for i in unrated(model, int(u), taste)}
    trained_pairs = {
        (int(u), int(refit.item_ids[i]))
        for u in refit.user_ids
        for i in refit.user_history(int(u))[1]
    }
    assert len(trained_pairs & clicked) == counts["train_rows"]


def test_the_gate_refuses_a_refit_on_interactions_it_cannot_learn_from(
    tiny_base: Path, tmp_path: Path
) -> None:
    """Every user clicks different little-known films (nothing shared to learn): the loop's feedback
    trigger fires, the challenger gains nothing on the held-out clicks and stays a candidate."""
    settings, model = production(tiny_base, tmp_path / "home")
    films = rare_items(model, 8 * 12)
    posted = 0
    for n, user in enumerate(model.user_ids):
        for item in unrated(model, int(user), films[12 * n : 12 * (n + 1)]):
            click(settings, int(user), item)
            posted += 1
    drift = report_drift(settings)  # what `lmforge loop` checks too: no traffic, no drift
    round_ = run_round(
        NAME, min_new_feedback=50, drift_check=drift, gate=GATE, settings=settings, progress=False
    )
    assert round_.triggers == ["feedback"] and round_.new_feedback == posted
    assert round_.drifted is False
    assert round_.retrain is not None and not round_.retrain.promoted
    assert "feedback slice" in round_.retrain.decision.reason
    assert Registry(settings).get(f"{NAME}:production").version == 1
    # the next round sees no new interaction (not even those of the round's last second)
    again = run_round(NAME, min_new_feedback=1, settings=settings, progress=False)
    assert again.triggers == [] and again.retrain is None


def test_bad_retraining_requests_fail_in_one_line_and_register_nothing(
    tiny_base: Path, tmp_path: Path
) -> None:
    settings, model = production(tiny_base, tmp_path / "home")
    with pytest.raises(DataError, match="no interaction feedback") as caught:
        retrain(NAME, settings=settings, progress=False)
    assert "POST /v1/feedback" in str(caught.value.fix)
    click(settings, int(model.user_ids[0]), 999_999_999)  # an unknown film: not usable
    with pytest.raises(DataError, match="none of the 1 interactions"):
        retrain(NAME, settings=settings, progress=False)
    with pytest.raises(LmforgeError, match="no warm start"):
        retrain(NAME, warm_start="base", settings=settings, progress=False)
    assert [v.version for v in Registry(settings).list(NAME)] == [1]
    assert not list((settings.home / "runs").glob(f"{NAME}-*"))[1:]  # only the first fit's
    # dislikes are trained on but never held out (a held-out row is a film the user liked):
    # with nothing to judge on, the challenger stays a candidate
    user = int(model.user_ids[0])
    for item in unrated(model, user, rare_items(model, 5)):
        record_feedback(
            FeedbackEvent(
                model=NAME, user_id=str(user), item_id=str(item), event="rating", value=1.0
            ),
            settings,
        )
    result = retrain(NAME, settings=settings, progress=False)
    assert result.counts["holdout_rows"] == 0 and not result.promoted
    assert "has 0 rows" in result.decision.reason
