"""The data of a retraining round: feedback joined to the logged texts, corrections override
(the latest wins, the original training row goes), duplicates by normalised text merge, no
original validation/test text is trained on, and the held-out feedback slice is placed by the
text alone, so a row never moves between rounds."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from conftest import register_copy
from lmforge.data import PreparedData
from lmforge.data.text import leakage_key
from lmforge.errors import DataError
from lmforge.monitor import FeedbackEvent, LoggedPrediction, PredictionLog, list_feedback
from lmforge.monitor import record_feedback as record
from lmforge.recipe.schema import CleaningConfig, FeedbackConfig
from lmforge.registry import Registry
from lmforge.settings import Settings
from lmforge.tasks.retrain_data import (
    Example,
    FeedbackExamples,
    assemble,
    check_usable,
    feedback_examples,
    placement,
)

LABELS = ["negative", "positive"]
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def original() -> PreparedData:
    def frame(rows: list[tuple[str, str]]) -> pd.DataFrame:
        return pd.DataFrame(rows, columns=["text", "label"])

    return PreparedData(
        frame([("a fine film", "positive"), ("a dull film", "negative"), ("so so", "negative")]),
        frame([("the validation text", "positive")]),
        frame([("the test text", "negative")]),
        LABELS,
        {"splits": {}},
    )


def examples(*rows: tuple[str, str], start: datetime = T0) -> FeedbackExamples:
    made = [Example(t, lab, start + timedelta(minutes=i)) for i, (t, lab) in enumerate(rows)]
    return FeedbackExamples(made, len(made))


def trained_on(config: FeedbackConfig, *rows: tuple[str, str]) -> RetrainData_:
    result = assemble(original(), examples(*rows), config, CleaningConfig())
    return RetrainData_(
        dict(zip(result.data.train["text"], result.data.train["label"], strict=True)),
        list(result.holdout["text"]),
        list(result.data.validation["text"]),
        result.counts,
    )


@dataclass
class RetrainData_:
    train: dict[str, str]
    holdout: list[str]
    validation: list[str]
    counts: dict[str, object]


# Held-out shares of 0 are not allowed; a tiny one keeps (nearly) every row for training.
TRAIN_ALL = FeedbackConfig(holdout_share=1e-9, validation_share=0)


def test_a_later_correction_overrides_an_earlier_one_and_the_original_training_row() -> None:
    data = trained_on(
        TRAIN_ALL,
        ("A fine film!", "negative"),  # the same normalised text as an original row
        ("new words here", "negative"),
        ("new  words, HERE", "positive"),  # later: overrides the row above (and is cleaned)
    )
    assert data.train["A fine film!"] == "negative"
    assert "a fine film" not in data.train  # the original row was replaced, not kept beside
    assert data.train["new words, HERE"] == "positive"
    assert "new words here" not in data.train
    assert data.counts["corrected"] == 1 and data.counts["duplicates"] == 1
    assert data.counts["original_train_replaced"] == 1
    assert sum(leakage_key(t) == "new words here" for t in data.train) == 1


def test_original_validation_and_test_texts_are_never_trained_on() -> None:
    data = trained_on(
        TRAIN_ALL, ("The test text.", "positive"), ("the VALIDATION text", "negative")
    )
    assert not {"The test text.", "the VALIDATION text"} & set(data.train)
    assert data.counts["leakage"] == 2
    assert set(data.train) == {"a fine film", "a dull film", "so so"}


def test_feedback_rows_keep_their_place_across_rounds() -> None:
    config = FeedbackConfig(holdout_share=0.2, validation_share=0.1, seed=3)
    texts = [f"feedback number {i}" for i in range(400)]
    first = trained_on(config, *((t, "positive") for t in texts[:200]))
    later = trained_on(config, *((t, "negative") for t in reversed(texts)))  # more, reordered
    assert set(first.holdout) <= set(later.holdout)
    assert not set(later.holdout) & set(later.train)  # a held-out row is never trained on
    assert set(first.train) - set(original().train["text"]) <= set(later.train)
    assert 40 <= len(later.holdout) <= 120  # about 20 % of 400
    assert 10 <= len(later.validation) - 1 <= 80  # about 10 %, beside the original row
    # the place depends on the seed and the normalised text only
    assert placement(leakage_key("Feedback number 7!"), config) == placement(
        leakage_key(texts[7]), config
    )
    other = FeedbackConfig(holdout_share=0.2, validation_share=0.1, seed=4)
    assert [placement(leakage_key(t), other) for t in texts] != [
        placement(leakage_key(t), config) for t in texts
    ]


def test_a_held_out_text_that_is_an_original_training_text_is_not_trained_on() -> None:
    config = FeedbackConfig(holdout_share=0.999999, validation_share=0)
    data = trained_on(config, ("a fine film", "positive"))
    assert data.holdout == ["a fine film"] and "a fine film" not in data.train


@dataclass(frozen=True)
class Policy:
    sample_rate: float = 1.0
    include_text: bool = True
    flush_seconds: float = 0.05
    retention_days: float | None = None


@pytest.fixture
def settings(tmp_path: Path, tiny_model_dir: Path) -> Settings:
    settings = Settings(home=tmp_path / "home", database_url=None)
    register_copy(settings, tiny_model_dir, "tiny", stage="production")
    return settings


def logged(settings: Settings, *rows: tuple[str, str], include_text: bool = True) -> list[str]:
    log = PredictionLog(Registry(settings).engine, Policy(include_text=include_text))

    async def run() -> list[str]:
        ids = [
            log.add(LoggedPrediction("tiny", 1, label, 0.8, 3.0, "k", text, None, {label: 0.8}))
            for text, label in rows
        ]
        await log.flush()
        return ids

    return asyncio.run(run())


def test_feedback_on_predictions_is_joined_to_the_texts_the_log_kept(settings: Settings) -> None:
    first, second, third = logged(
        settings, ("a lovely day", "negative"), ("great fun", "positive"), ("so bad", "negative")
    )
    (hidden,) = logged(settings, ("no text kept", "positive"), include_text=False)
    record(FeedbackEvent(prediction_id=first, label="positive"), settings)
    record(FeedbackEvent(prediction_id=second, correct=True), settings)
    record(FeedbackEvent(prediction_id=third, correct=False), settings)  # no right label
    record(FeedbackEvent(prediction_id=hidden, label="negative"), settings)
    record(FeedbackEvent(text="a new example", label="negative", model="tiny"), settings)
    record(FeedbackEvent(user_id="u", item_id="i", event="click"), settings)
    rows = list_feedback("tiny", settings=settings)
    found = feedback_examples(rows, LABELS, Registry(settings))
    assert {(e.text, e.label) for e in found.examples} == {
        ("a lovely day", "positive"),
        ("great fun", "positive"),
        ("a new example", "negative"),
    }
    assert found.rows == 5 and found.skipped == {"no_label": 1, "no_text": 1}
    # a model whose labels changed: rows with a label it lacks are counted by label
    relabelled = feedback_examples(rows, ["positive", "neutral"], Registry(settings))
    assert relabelled.skipped["label:negative"] == 2 and relabelled.unknown_labels == ["negative"]


def test_feedback_with_nothing_usable_is_refused_in_one_line() -> None:
    with pytest.raises(DataError, match="no labelled feedback for 'm'") as none:
        check_usable("m", FeedbackExamples([], 0), LABELS)
    unknown = FeedbackExamples([], 3, {"label:neutral": 2, "label:meh": 1})
    with pytest.raises(DataError, match=r"only labels the model lacks \(meh, neutral\)") as only:
        check_usable("m", unknown, LABELS)
    assert "use one of" not in only.value.message and "negative, positive" in only.value.message
    no_text = FeedbackExamples([], 2, {"no_text": 2})
    with pytest.raises(DataError, match="include_text") as hidden:
        check_usable("m", no_text, LABELS)
    for error in (none, only, hidden):
        assert "\n" not in error.value.message
