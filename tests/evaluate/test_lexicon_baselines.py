"""The lexicon baselines (Loughran–McDonald, VADER): three classes cut at the shipped thresholds,
two by sign, refused for labels they cannot score; the thresholds are re-derivable."""

from __future__ import annotations

import numpy as np
import pytest

from lmforge.data.finance import load_labelled
from lmforge.data.lexicons import (
    LEXICONS,
    SENTIMENT_LABELS,
    Lexicon,
    lexicon_classes,
    lexicon_scores,
    to_classes,
    tune_thresholds,
)
from lmforge.errors import RecipeError
from lmforge.evaluate.baselines import check_baselines, lexicon_baseline

TEXTS = [
    "Shares crash as losses mount and thousands of jobs are cut",
    "Profits soar to a record high after a strong year",
    "Company holds its annual meeting on Tuesday",
]


@pytest.mark.parametrize("name", ["lexicon_lm", "lexicon_vader"])
def test_three_classes(name: str) -> None:
    labels = list(SENTIMENT_LABELS)
    proba = lexicon_baseline(name, TEXTS, labels)
    assert proba.shape == (3, 3)
    assert (proba.sum(axis=1) == 1).all()
    assert [labels[i] for i in proba.argmax(axis=1)] == ["negative", "positive", "neutral"]


@pytest.mark.parametrize("name", ["lexicon_lm", "lexicon_vader"])
def test_two_classes_by_sign_in_the_task_label_order(name: str) -> None:
    labels = ["positive", "negative"]  # not the sorted order: columns follow the task's labels
    proba = lexicon_baseline(name, TEXTS[:2], labels)
    assert [labels[i] for i in proba.argmax(axis=1)] == ["negative", "positive"]


def test_other_labels_are_refused_by_name() -> None:
    with pytest.raises(RecipeError, match="the lexicon_vader baseline needs the labels"):
        check_baselines(["majority", "lexicon_vader"], ["spam", "ham"])
    check_baselines(["lexicon_lm"], ["neutral", "positive", "negative"])


def test_scores_and_cut() -> None:
    lm = lexicon_scores("lm", ["loss loss gain", "good", "table"])
    assert lm[0] < 0 < lm[1] and lm[2] == 0
    cut = to_classes(np.array([-0.5, 0.0, 0.5]), Lexicon("vader", "", -0.1, 0.2))
    assert cut.tolist() == [0, 1, 2]
    assert lexicon_classes("vader", ["What a wonderful, happy success"]) == ["positive"]


def test_shipped_thresholds_are_the_ones_tuned_without_the_test_part() -> None:
    hand = load_labelled()
    dev = hand[hand["split"] != "test"]
    y = np.array([SENTIMENT_LABELS.index(label) for label in dev["label"]])
    for name, lexicon in LEXICONS.items():
        lo, hi, _ = tune_thresholds(lexicon_scores(name, dev["text"].tolist()), y)
        assert (lo, hi) == (lexicon.negative_below, lexicon.positive_above), name
