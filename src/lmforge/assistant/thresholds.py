"""The answer-or-refuse thresholds of the FAQ assistant: the defaults per question language, how
a given threshold becomes one per language, and how a threshold is chosen and measured on
in-domain and off-topic scores."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

LANGUAGES = ("en", "zh")  # what question_language tells apart
# multilingual-e5-small's cosines sit in a narrow band (≈ 0.7–0.95), higher for Chinese: these
# were tuned on the tuning part of the shipped user questions of the Debian FAQ, at the midpoint
# between the best-scoring off-topic question and the lowest-scoring right answer
# (`benchmarks/assistant_questions.py --tune`; docs/benchmarks.md).
DEFAULT_THRESHOLDS: Mapping[str, float] = {"en": 0.861, "zh": 0.883}
# What callers that predate per-language thresholds pass when none is given: the same mapping
# (a single number would answer Chinese small talk, as it did with one threshold of 0.81).
DEFAULT_THRESHOLD: Mapping[str, float] = DEFAULT_THRESHOLDS


Threshold = float | Mapping[str, float]


def language_thresholds(threshold: Threshold | None) -> dict[str, float]:
    """A threshold per question language: the defaults (None), one value for all, or a mapping
    (a language it lacks gets the highest given: an uncalibrated language refuses rather than
    answers wrongly)."""
    if threshold is None:
        return dict(DEFAULT_THRESHOLDS)
    if isinstance(threshold, Mapping):
        if not threshold:
            raise ValueError("no threshold given for any language")
        given = {str(k): float(v) for k, v in threshold.items()}
        return {**{lang: max(given.values()) for lang in LANGUAGES}, **given}
    return {lang: float(threshold) for lang in LANGUAGES}


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float
    answered_in_domain: float  # share of in-domain questions answered
    refused_off_topic: float  # share of off-topic questions refused

    @property
    def balanced_accuracy(self) -> float:
        return (self.answered_in_domain + self.refused_off_topic) / 2


def choose_threshold(in_domain: Sequence[float], off_topic: Sequence[float]) -> ThresholdChoice:
    """The cut on the best entry's score that best separates answerable questions from
    off-topic ones (balanced accuracy; the midpoint between neighbouring scores)."""
    if not in_domain or not off_topic:
        raise ValueError("need scores of in-domain and of off-topic questions")
    values = np.sort(np.concatenate([in_domain, off_topic]))
    candidates = np.concatenate([[values[0] - 1e-6], (values[1:] + values[:-1]) / 2])
    best: ThresholdChoice | None = None
    for t in candidates:
        choice = ThresholdChoice(
            float(t),
            float(np.mean(np.asarray(in_domain) >= t)),
            float(np.mean(np.asarray(off_topic) < t)),
        )
        if best is None or choice.balanced_accuracy > best.balanced_accuracy:
            best = choice
    assert best is not None
    return best


def evaluate_threshold(
    threshold: float, in_domain: Sequence[float], off_topic: Sequence[float]
) -> ThresholdChoice:
    return ThresholdChoice(
        threshold,
        float(np.mean(np.asarray(in_domain) >= threshold)),
        float(np.mean(np.asarray(off_topic) < threshold)),
    )
