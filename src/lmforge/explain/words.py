"""Subword tokens merged into words, by character offsets, for any fast tokenizer.

The rule (the same for English WordPiece and multilingual SentencePiece):

- a token's span is its character offsets with surrounding whitespace trimmed (SentencePiece
  offsets include the space its ``▁`` stands for); special tokens ([CLS], ``<s>`` ...) and
  tokens inside the model's text prefix (e5's ``query: ``) belong to no word;
- a token continues the current word when its span touches the word's end with no space
  between and both characters around the join are letters or digits of a script written
  with spaces — or one of them is an apostrophe or hyphen between two such characters
  (``isn't``, ``well-made``); WordPiece's ``##`` pieces and SentencePiece's non-``▁`` pieces
  join this way;
- a token whose span overlaps the current word joins it (SentencePiece emits a bare ``▁`` piece
  over the first character before the piece that holds it);
- anything else starts a new word: after a space, at punctuation, and at every token boundary in
  Chinese/Japanese/Korean text, where no spaces mark words and the tokenizer's pieces are the
  word-like units (SentencePiece: 电影, 好看; WordPiece: one character each);
- a word's score is the sum of its tokens' scores, so word scores add up to the token scores.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_JOINERS = frozenset("'’-")


@dataclass(frozen=True)
class Word:
    """One word of the explained text: its characters ``text[start:end]``."""

    text: str
    start: int
    end: int


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return (
        0x3040 <= code <= 0x30FF  # kana
        or 0x3400 <= code <= 0x4DBF
        or 0x4E00 <= code <= 0x9FFF
        or 0xAC00 <= code <= 0xD7AF  # hangul syllables
        or 0xF900 <= code <= 0xFAFF
        or 0x20000 <= code <= 0x2FA1F
    )


def _word_char(char: str) -> bool:
    """A letter, digit or combining mark of a script written with spaces."""
    return unicodedata.category(char)[0] in "LNM" and not _is_cjk(char)


def _continues(text: str, end: int, start: int) -> bool:
    """Whether a token starting at ``start`` continues a word ending at ``end``."""
    if start != end or start == 0 or start >= len(text):
        return False
    before, after = text[start - 1], text[start]
    if _word_char(before) and _word_char(after):
        return True
    # isn't, well-made: the joiner glues to the letters on both of its sides
    if after in _JOINERS and _word_char(before):
        return start + 1 < len(text) and _word_char(text[start + 1])
    if before in _JOINERS and _word_char(after):
        return start >= 2 and _word_char(text[start - 2])
    return False


def group_tokens(
    text: str,
    offsets: Sequence[tuple[int, int]],
    special: Sequence[int],
    skip_before: int = 0,
) -> tuple[list[Word], list[int | None]]:
    """The words of ``text`` and, per token, the index of its word (None for a special token or
    one inside the first ``skip_before`` characters: the model's text prefix). Word offsets are
    into ``text[skip_before:]``."""
    words: list[list[int]] = []  # [start, end] per word, in text's coordinates
    token_word: list[int | None] = []
    for (start, end), is_special in zip(offsets, special, strict=True):
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if is_special or end <= start or end <= skip_before:
            token_word.append(None)
            continue
        start = max(start, skip_before)
        if words and (start < words[-1][1] or _continues(text, words[-1][1], start)):
            words[-1][1] = max(words[-1][1], end)
        else:
            words.append([start, end])
        token_word.append(len(words) - 1)
    shown = text[skip_before:]
    merged = [
        Word(shown[s - skip_before : e - skip_before], s - skip_before, e - skip_before)
        for s, e in words
    ]
    return merged, token_word


def word_scores(
    token_scores: Sequence[float] | np.ndarray, token_word: Sequence[int | None], n: int
) -> np.ndarray:
    """Each word's score: the sum of its tokens' scores."""
    out = np.zeros(n, dtype=np.float64)
    for score, word in zip(token_scores, token_word, strict=True):
        if word is not None:
            out[word] += float(score)
    return out


def drop_word(text: str, word: Word) -> str:
    """``text`` without ``word`` (and one space beside it, so no double space is left)."""
    before, after = text[: word.start], text[word.end :]
    if before.endswith(" ") and (after.startswith(" ") or not after):
        before = before[:-1]
    elif not before and after.startswith(" "):
        after = after[1:]
    return before + after
