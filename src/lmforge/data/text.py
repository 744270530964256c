"""Text normalisation shared by training and serving (standard library only, so the runtime
can import it without pulling in pandas)."""

from __future__ import annotations

import re
import unicodedata

from lmforge.recipe.schema import CleaningConfig

_WS = re.compile(r"\s+")
_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)


def clean_text(text: str, cfg: CleaningConfig) -> str:
    if cfg.unicode_nfkc:
        text = unicodedata.normalize("NFKC", text)
    if cfg.collapse_whitespace:
        text = _WS.sub(" ", text)
    return text.strip()


def leakage_key(text: str) -> str:
    """A looser identity than exact text: case, punctuation and spacing do not make a new row."""
    return _NOT_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()
