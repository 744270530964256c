"""The hand-labelled Guardian headlines: the files agree with the source, the rules that drew
and split them, and their data card; the three sources built on them split stably."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from lmforge.data import finance, prepare_data
from lmforge.data.lexicons import SENTIMENT_LABELS
from lmforge.data.sources import load_builtin
from lmforge.data.text import leakage_key
from lmforge.recipe.schema import DataConfig

SOURCES = [
    "guardian_headlines_sentiment",
    "guardian_headlines_sentiment_weak",
    "guardian_headlines_sentiment_mixed",
]


@pytest.fixture(scope="module")
def guardian() -> pd.DataFrame:
    return load_builtin("guardian_headlines")


@pytest.fixture(scope="module")
def hand() -> pd.DataFrame:
    return finance.load_labelled()


def test_ids_are_unique_real_rows_whose_text_and_date_match(
    hand: pd.DataFrame, guardian: pd.DataFrame
) -> None:
    assert hand["id"].is_unique
    assert len(hand) >= 600
    for row in hand.itertuples():
        assert 0 <= row.id < len(guardian)
        assert guardian["text"].iloc[row.id] == row.text, row.id
        assert guardian["date"].iloc[row.id] == row.date, row.id
    assert set(hand["label"]) == set(SENTIMENT_LABELS)
    assert set(hand["split"]) == {"train", "validation", "test"}


def test_the_file_holds_the_sampling_rule_and_the_split_rule(
    hand: pd.DataFrame, guardian: pd.DataFrame
) -> None:
    assert hand["id"].tolist() == finance.sample_ids(guardian)
    months = hand["date"].dt.strftime("%Y-%m").tolist()
    assert finance.assign_splits(hand["id"].tolist(), months) == dict(
        zip(hand["id"], hand["split"], strict=True)
    )
    per_month = hand.groupby(hand["date"].dt.strftime("%Y-%m"))["split"].value_counts()
    assert set(per_month.xs("test", level=1)) == {finance.TEST_PER_MONTH}
    assert len(per_month.xs("test", level=1)) == 7  # January to July


def test_second_pass_is_the_drawn_subset_in_the_drawn_order(hand: pd.DataFrame) -> None:
    second = finance.load_second_pass()
    assert second["id"].tolist() == finance.second_pass_ids(hand["id"].tolist())
    assert set(second["label"]) <= set(SENTIMENT_LABELS)
    texts = hand.set_index("id")["text"]
    assert (texts.loc[second["id"]].to_numpy() == second["text"].to_numpy()).all()


def test_data_card_counts_and_kappa_match_the_files(hand: pd.DataFrame) -> None:
    card = (finance.FINANCE_DIR / "DATA_CARD.md").read_text(encoding="utf-8")
    for split in ("train", "validation", "test", "all"):
        part = hand if split == "all" else hand[hand["split"] == split]
        counts = [int((part["label"] == label).sum()) for label in SENTIMENT_LABELS]
        row = f"| {split} | " + " | ".join(map(str, counts)) + f" | {len(part)} |"
        assert row in card, row
    second = finance.load_second_pass()
    first = hand.set_index("id")["label"].loc[second["id"]].to_numpy()
    kappa = cohen_kappa_score(first, second["label"].to_numpy())
    assert f"Cohen's kappa = {kappa:.3f}" in card
    agree = int((first == second["label"].to_numpy()).sum())
    assert f"agree on\n{agree} of 100" in card or f"agree on {agree} of 100" in card
    month = hand["date"].dt.strftime("%B")
    for name, part in hand.groupby(month):
        counts = "/".join(str(int((part["label"] == lab).sum())) for lab in SENTIMENT_LABELS)
        assert re.search(rf"{name} {counts}\b", card.replace("\n", " ")), name


@pytest.mark.parametrize("name", SOURCES)
def test_sources_split_stably_and_disjointly_with_a_fixed_hand_labelled_test_part(
    name: str, hand: pd.DataFrame
) -> None:
    frame = load_builtin(name)
    assert frame["id"].is_unique
    held = hand[hand["split"] != "train"].set_index("id")
    mine = frame[frame["split"] != "train"].set_index("id")
    pd.testing.assert_frame_equal(mine.sort_index(), held.sort_index(), check_like=True)
    train_keys = set(frame.loc[frame["split"] == "train", "text"].map(leakage_key))
    assert not train_keys & set(held["text"].map(leakage_key))

    cfg = DataConfig.model_validate({"source": {"builtin": name}})
    first, again = prepare_data(cfg), prepare_data(cfg)
    for part in ("train", "validation", "test"):
        pd.testing.assert_frame_equal(getattr(first, part), getattr(again, part))
    assert len(first.test) == int((hand["split"] == "test").sum())
    assert sorted(first.test["label"]) == sorted(hand.loc[hand["split"] == "test", "label"])
    assert first.card["split"] == {"fixed_by_source_column": "split"}
    # the recipe's split shares and seed do not move a fixed split
    other = DataConfig.model_validate(
        {"source": {"builtin": name}, "split": {"validation": 0.3, "test": 0.3, "seed": 1}}
    )
    pd.testing.assert_frame_equal(prepare_data(other).test, first.test)


def test_hand_and_mixed_train_parts(hand: pd.DataFrame, guardian: pd.DataFrame) -> None:
    hand_train = hand[hand["split"] == "train"].set_index("id")["label"]
    only = load_builtin("guardian_headlines_sentiment")
    assert set(only.loc[only["split"] == "train", "id"]) == set(hand_train.index)
    mixed = load_builtin("guardian_headlines_sentiment_mixed").set_index("id")
    assert (mixed.loc[hand_train.index, "label"] == hand_train).all()
    weak = load_builtin("guardian_headlines_sentiment_weak")
    held = set(hand.loc[hand["split"] != "train", "id"])
    # every headline outside the held-out parts is weak-labelled (less held-out duplicates)
    assert len(weak) == len(guardian) - sum(
        guardian["text"]
        .map(leakage_key)
        .isin(set(hand.loc[hand["split"] != "train", "text"].map(leakage_key)))
        & ~guardian.index.isin(held)
    )


def test_limit_cuts_only_the_train_part() -> None:
    cfg = DataConfig.model_validate(
        {"source": {"builtin": "guardian_headlines_sentiment_weak", "limit": 120}}
    )
    data = prepare_data(cfg)
    assert len(data.train) == 120
    assert len(data.test) == 224 and len(data.validation) == 91


def test_weak_labels_vote() -> None:
    labels = finance.weak_labels(
        [
            "Shares crash as losses mount and jobs are cut",  # both negative
            "Profits soar to record high in a great year",  # both positive
            "Company announces meeting on Tuesday",  # both neutral
        ]
    )
    assert labels == ["negative", "positive", "neutral"]


def test_a_changed_source_row_is_refused(guardian: pd.DataFrame, hand: pd.DataFrame) -> None:
    changed = guardian.copy()
    first = int(hand["id"].iloc[0])
    changed.loc[first, "text"] = "something else"
    with pytest.raises(Exception, match=f"labelled headline {first} does not match"):
        finance.sentiment_source(changed, "hand")


def test_the_corrections_are_the_drawn_ids_outside_the_labelled_set(
    hand: pd.DataFrame, guardian: pd.DataFrame
) -> None:
    corrections = finance.load_corrections()
    assert corrections["id"].tolist() == finance.correction_ids(guardian, hand)
    assert not set(corrections["id"]) & set(hand["id"])
    for row in corrections.itertuples():
        assert (
            guardian["text"].iloc[row.id] == row.text and guardian["date"].iloc[row.id] == row.date
        )
    counts = corrections["label"].value_counts().to_dict()
    card = (finance.FINANCE_DIR / "DATA_CARD.md").read_text(encoding="utf-8")
    summary = f"{counts['negative']} negative, {counts['neutral']} neutral, {counts['positive']}"
    assert summary in card and len(corrections) == finance.CORRECTIONS_SIZE
