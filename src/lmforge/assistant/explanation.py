"""Why the assistant answered (or refused) as it did: the entry that won, by how much over the
runner-up and over the threshold, and the question's words the winning entry shares.

It is a plain account of what was computed, not a model of its own. The scores are the
assistant's dense scores (see :mod:`lmforge.assistant.assistant`), so the winner is decided by
embeddings, not by words; the shared words are shown because they are what a reader can check,
and an entry can win with none (a paraphrase) or lose with many.

How words are matched: English (and other space-separated text) as lower-cased words, exact
forms (``install`` does not match ``installing``), without scikit-learn's English stop words
(``how``, ``do``, ``the``…). Chinese, which has no spaces, as the longest runs of two or more
characters of the question found verbatim in the entry (left to right, longest first); single
characters are not listed, as almost any Chinese text shares some (的, 是, 我). Both sides use
the retriever's own word split (:func:`lmforge.assistant.retrieval.bm25_tokens`'s patterns).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lmforge.assistant.faq import FaqEntry
from lmforge.assistant.retrieval import bm25_tokens, cjk_runs, latin_words

__all__ = ["Contender", "Explanation", "explain_match", "shared_words"]

MATCHING = {
    "en": "lower-cased words, exact forms, English stop words left out",
    "zh": "runs of two or more Chinese characters found verbatim in the entry, longest first",
}


@dataclass(frozen=True)
class Contender:
    """An entry as the explanation shows it."""

    question: str
    citation: str
    score: float

    def to_json(self) -> dict[str, Any]:
        return {"question": self.question, "citation": self.citation, "score": round(self.score, 4)}


@dataclass(frozen=True)
class Explanation:
    winner: Contender | None  # None only when no entry could be scored (none in any language)
    runner_up: Contender | None  # None when the FAQ had one entry to compare
    threshold: float
    answered: bool
    shared_words: tuple[str, ...]  # the question's words the winning entry has, in order
    matching: str  # how the words were matched (see the module docstring)

    @property
    def margin(self) -> float | None:
        """The winner's score minus the runner-up's."""
        if self.winner is None or self.runner_up is None:
            return None
        return self.winner.score - self.runner_up.score

    @property
    def over_threshold(self) -> float | None:
        """The winner's score minus the threshold: below 0, the question was refused."""
        return None if self.winner is None else self.winner.score - self.threshold

    def to_json(self) -> dict[str, Any]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 4)

        return {
            "winner": self.winner.to_json() if self.winner else None,
            "runner_up": self.runner_up.to_json() if self.runner_up else None,
            "margin": rounded(self.margin),
            "threshold": self.threshold,
            "over_threshold": rounded(self.over_threshold),
            "answered": self.answered,
            "shared_words": list(self.shared_words),
            "word_matching": self.matching,
        }


def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def shared_words(question: str, text: str) -> tuple[str, ...]:
    """The question's words that `text` has, in the question's order, each once (see the
    module docstring for how words and Chinese characters are matched)."""
    found: list[str] = []
    words = set(bm25_tokens(text))
    stop = _stop_words()
    for word in latin_words(question):
        if word in words and word not in stop and word not in found:
            found.append(word)
    for run in cjk_runs(question):
        start = 0
        while start < len(run) - 1:
            end = len(run)
            while end - start >= 2 and run[start:end] not in text:
                end -= 1
            if end - start >= 2:
                if run[start:end] not in found:
                    found.append(run[start:end])
                start = end
            else:
                start += 1
    return tuple(found)


def explain_match(
    question: str,
    ranked: Sequence[tuple[FaqEntry, float]],
    threshold: float,
    answered: bool,
    language: str,
) -> Explanation:
    """The explanation of one question from its best entries (best first, with their scores)."""
    contenders = [Contender(e.question, e.citation, score) for e, score in ranked[:2]]
    winner = contenders[0] if contenders else None
    shared = (
        shared_words(question, f"{ranked[0][0].question}\n{ranked[0][0].answer}") if ranked else ()
    )
    return Explanation(
        winner=winner,
        runner_up=contenders[1] if len(contenders) > 1 else None,
        threshold=threshold,
        answered=answered,
        shared_words=shared,
        matching=MATCHING.get(language, MATCHING["en"]),
    )
