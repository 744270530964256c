"""The recommendation splits: nothing held out reaches training (a property test over random
rating tables), and the built-in MovieLens source as it loads."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.data.movielens import (
    check_split,
    item_text,
    item_title,
    load_movielens,
    split_ratings,
)
from lmforge.errors import DataError


@st.composite
def rating_tables(draw: st.DrawFn) -> pd.DataFrame:
    pairs = draw(
        st.lists(
            st.tuples(st.integers(1, 6), st.integers(1, 20)), min_size=1, max_size=80, unique=True
        )
    )
    rows = [
        {
            "user_id": u,
            "item_id": i,
            "rating": draw(st.sampled_from([1.0, 2.5, 4.0, 5.0])),
            "timestamp": draw(st.integers(0, 30)),  # ties in time are common
        }
        for u, i in pairs
    ]
    return pd.DataFrame(rows)


def pairs(frame: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame["user_id"], frame["item_id"], strict=True))


@settings(max_examples=120, deadline=None)
@given(
    ratings=rating_tables(),
    protocol=st.sampled_from(["leave_last_out", "time"]),
    cold=st.sampled_from([0.0, 0.1, 0.3]),
    seed=st.integers(0, 5),
)
def test_no_held_out_rating_reaches_training(
    ratings: pd.DataFrame, protocol: str, cold: float, seed: int
) -> None:
    split = split_ratings(ratings, protocol=protocol, cold_fraction=cold, seed=seed)  # type: ignore[arg-type]
    train = pairs(split.train)
    for part in (split.validation, split.test, split.cold_test):
        assert not pairs(part) & train
    assert not (pairs(split.validation) & pairs(split.test))
    fitted = set(split.train["item_id"]) | set(split.validation["item_id"])
    assert not fitted & split.cold_items
    # every rating lands in exactly one part
    parts = [split.train, split.validation, split.test, split.cold_test]
    assert sum(len(p) for p in parts) == len(ratings)
    assert set().union(*(pairs(p) for p in parts)) == pairs(ratings)
    if protocol == "leave_last_out":
        last = split.train.groupby("user_id")["timestamp"].max()
        for user, time in zip(split.test["user_id"], split.test["timestamp"], strict=True):
            assert time >= last.get(user, time)
    else:
        if len(split.test) and len(split.train):
            assert split.test["timestamp"].min() > split.train["timestamp"].max()


def test_a_leak_is_refused() -> None:
    ratings = pd.DataFrame(
        {"user_id": [1, 1, 1, 1], "item_id": [1, 2, 3, 4], "rating": 5.0, "timestamp": [1, 2, 3, 4]}
    )
    split = split_ratings(ratings, cold_fraction=0.0)
    assert list(split.test["item_id"]) == [4] and list(split.validation["item_id"]) == [3]
    leaked = split.__class__(
        pd.concat([split.train, split.test]),
        split.validation,
        split.test,
        split.cold_test,
        split.cold_items,
        split.protocol,
        split.positive,
    )
    with pytest.raises(DataError, match="test rating"):
        check_split(leaked)


def test_item_text_reads_title_year_and_genres() -> None:
    assert item_title("Toy Story", 1995.0) == "Toy Story (1995)"
    assert item_title("Untitled", float("nan")) == "Untitled"
    assert (
        item_text("Toy Story", 1995.0, "Animation|Children")
        == "Toy Story (1995). Genres: Animation, Children."
    )
    assert item_text("X", None, "(no genres listed)") == "X"


def test_movielens_loads_at_run_time() -> None:
    data = load_movielens(max_users=3)
    assert set(data.ratings["user_id"]) == {1, 2, 3}
    assert data.items["item_id"].is_unique
    assert set(data.ratings["item_id"]) <= set(data.items["item_id"])
    assert (data.items["title"] != "").all()


def test_feedback_joins_training_but_never_a_held_out_pair_or_a_cold_item() -> None:
    from lmforge.data.movielens import RatingsData, with_feedback

    ratings = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 1, 2, 2, 2],
            "item_id": [1, 2, 3, 4, 1, 2, 5],
            "rating": 5.0,
            "timestamp": [1, 2, 3, 4, 1, 2, 3],
        }
    )
    items = pd.DataFrame(
        {"item_id": [1, 2, 3, 4, 5, 6], "title": list("abcdef"), "year": 2000.0, "genres": "X"}
    )
    split = split_ratings(ratings, cold_fraction=0.0)
    data = RatingsData("toy", ratings, items)
    feedback = pd.DataFrame(
        {
            "user_id": [1, 1, 2, 3, 3],
            "item_id": [4, 6, 6, 6, 99],  # 1×4 is user 1's test pair; 99 is no known item
            "rating": [5.0, 4.0, 2.0, 5.0, 5.0],
            "timestamp": 10,
        }
    )
    updated, added = with_feedback(split, feedback, data)
    assert added == 3
    assert {(1, 6), (2, 6), (3, 6)} <= pairs(updated.train)
    assert (1, 4) not in pairs(updated.train)
    cold = dataclasses.replace(split, cold_items=frozenset({6}))
    assert with_feedback(cold, feedback, data)[1] == 0
