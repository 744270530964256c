"""How faithful an explanation is, ERASER-style (DeYoung et al., 2020): erase the words it
ranks highest and see how much the model's confidence falls (comprehensiveness), or keep only
them and see how much it keeps (sufficiency), averaged over several fractions (AOPC).

For a target label with probability p(x): comprehensiveness at k = p(x) - p(x without its top
k % of words); sufficiency at k = p(x) - p(only its top k % of words). A faithful ranking has a
high comprehensiveness and a low sufficiency; a random ranking is the floor to compare with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from lmforge.runtime import Predictor

#: The fractions of words removed or kept (ERASER's bins).
FRACTIONS = (0.01, 0.05, 0.10, 0.20, 0.50)


def top_count(n_words: int, fraction: float) -> int:
    """Words in the top ``fraction``: at least one, rounded up (a short text has few words)."""
    return max(1, min(n_words, math.ceil(fraction * n_words)))


def keep_words(words: Sequence[str], keep: set[int]) -> str:
    """The text made of the kept words only, in order, one space apart."""
    return " ".join(w for i, w in enumerate(words) if i in keep)


@dataclass(frozen=True)
class Faithfulness:
    """One ranking's comprehensiveness and sufficiency at each fraction, and their AOPC."""

    comprehensiveness: list[float]
    sufficiency: list[float]

    @property
    def aopc_comprehensiveness(self) -> float:
        return float(np.mean(self.comprehensiveness))

    @property
    def aopc_sufficiency(self) -> float:
        return float(np.mean(self.sufficiency))


def faithfulness(
    predictor: Predictor,
    words: Sequence[str],
    rankings: Mapping[str, Sequence[int]],
    target: int,
    fractions: Sequence[float] = FRACTIONS,
) -> dict[str, Faithfulness]:
    """Each ranking's faithfulness for one text (given as its ``words``), every erased and kept
    variant scored by ``predictor`` in one batch. The full text is the words one space apart,
    as the variants are, so spacing never differs between what is compared."""
    n = len(words)
    texts = [keep_words(words, set(range(n)))]
    for ranking in rankings.values():
        for fraction in fractions:
            top = set(ranking[: top_count(n, fraction)])
            texts.append(keep_words(words, set(range(n)) - top))
            texts.append(keep_words(words, top))
    proba = predictor.predict_proba(texts)[:, target]
    full, rest = float(proba[0]), proba[1:].reshape(len(rankings), len(fractions), 2)
    return {
        name: Faithfulness(
            comprehensiveness=[full - float(p) for p in rest[i, :, 0]],
            sufficiency=[full - float(p) for p in rest[i, :, 1]],
        )
        for i, name in enumerate(rankings)
    }
