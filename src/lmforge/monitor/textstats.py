"""Simple text statistics that say *what* drifted in a window of texts: length, the share of
texts with unknown tokens (where a tokenizer is given) and the writing system (Unicode script)
of their letters — each compared with the reference by a test from :mod:`.detectors`.

The script is read from the Unicode character names (no language-identification model and no
network): a text's script is the one most of its letters are written in.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
from scipy import stats

from lmforge.errors import DataError
from lmforge.monitor.detectors import DetectorResult, distribution_test, share_test

#: text -> token ids; with :data:`TokenCounter` the report counts unknown tokens.
Encode = Callable[[str], Sequence[int]]

#: The first word of a Unicode letter's name -> the script reported; every other named script
#: is reported under its own name in title case (e.g. "Thai", "Hebrew").
_SCRIPT_ALIASES = {
    "CJK": "Han",
    "HIRAGANA": "Kana",
    "KATAKANA": "Kana",
    "HANGUL": "Hangul",
}
NO_LETTERS = "none"


@lru_cache(maxsize=4096)
def letter_script(char: str) -> str:
    """The script of one letter, e.g. "Latin", "Han", "Cyrillic" ("none" for a non-letter)."""
    if not char.isalpha():
        return NO_LETTERS
    first = unicodedata.name(char, "UNKNOWN").split(" ", 1)[0]
    return _SCRIPT_ALIASES.get(first, first.title())


def text_script(text: str) -> str:
    """The script most of a text's letters are written in ("none" when it has no letters)."""
    counts = Counter(s for s in map(letter_script, text) if s != NO_LETTERS)
    return counts.most_common(1)[0][0] if counts else NO_LETTERS


def script_test(
    reference: Sequence[str], current: Sequence[str], *, alpha: float
) -> DetectorResult:
    """Do the shares of scripts (Latin, Han, Cyrillic, ...) differ between two sets of texts?"""
    return share_test(
        "script",
        [text_script(t) for t in reference],
        [text_script(t) for t in current],
        alpha=alpha,
    )


def length_test(
    reference: Sequence[str], current: Sequence[str], *, alpha: float
) -> DetectorResult:
    """Do text lengths (in characters) differ? Characters rather than words: Chinese and
    Japanese do not separate words by spaces."""
    return distribution_test(
        "length",
        np.array([len(t) for t in reference]),
        np.array([len(t) for t in current]),
        alpha=alpha,
        unit=" chars",
    )


def unknown_token_test(
    reference: Sequence[str],
    current: Sequence[str],
    *,
    encode: Encode,
    unknown_id: int,
    alpha: float,
) -> DetectorResult:
    """Does the share of texts holding at least one unknown token differ? (Fisher's exact test
    on texts, not tokens: the tokens of one text are not independent of each other.)"""
    if not len(reference) or not len(current):
        raise DataError("no texts to count unknown tokens in", "give texts for both windows")
    ref_hits, ref_share = _unknown(reference, encode, unknown_id)
    cur_hits, cur_share = _unknown(current, encode, unknown_id)
    table = [
        [ref_hits, len(reference) - ref_hits],
        [cur_hits, len(current) - cur_hits],
    ]
    odds, p_value = stats.fisher_exact(table)
    ref_texts, cur_texts = ref_hits / len(reference), cur_hits / len(current)
    return DetectorResult(
        name="unknown_tokens",
        test="fisher-exact",
        statistic=float(odds),
        p_value=float(p_value),
        alpha=alpha,
        threshold=alpha,
        drifted=float(p_value) < alpha,
        detail=f"texts with an unknown token {ref_texts:.0%} -> {cur_texts:.0%}",
        values={
            "reference_text_share": ref_texts,
            "current_text_share": cur_texts,
            "reference_token_share": ref_share,
            "current_token_share": cur_share,
        },
    )


def _unknown(texts: Sequence[str], encode: Encode, unknown_id: int) -> tuple[int, float]:
    """How many texts hold an unknown token, and the share of unknown tokens overall."""
    hits = unknown = total = 0
    for text in texts:
        ids = list(encode(text))
        count = sum(1 for i in ids if i == unknown_id)
        hits += count > 0
        unknown += count
        total += len(ids)
    return hits, unknown / total if total else 0.0
