"""Generated tokens' log-probabilities in the two shapes of the OpenAI API.

Chat completions (``logprobs: true``, ``top_logprobs: 0..20``): ``choices[].logprobs`` is
``{"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}], "refusal":
null}``, one entry per generated token (the openai client's ``ChatCompletionTokenLogprob``).
Legacy completions (``logprobs: 0..5``): ``{tokens, token_logprobs, top_logprobs, text_offset}``
as parallel lists (its ``Logprobs``), where each ``top_logprobs`` item maps the likeliest
tokens' texts to their log-probabilities and always holds the chosen token too (so up to
``logprobs + 1`` keys, as OpenAI documents), and ``text_offset`` is the character offset of each
token from the start of the prompt as sent. A stream carries in each chunk the entries of the
tokens whose text that chunk completes. What the numbers are: :mod:`lmforge.runtime.logprobs`.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

from lmforge.runtime.generation import GenerationEngine
from lmforge.runtime.logprobs import TokenLogprob, TokenPieces

__all__ = ["LegacyLogprobs", "chat_logprobs", "pieces_of"]

_PIECES: weakref.WeakKeyDictionary[GenerationEngine, TokenPieces] = weakref.WeakKeyDictionary()


def pieces_of(engine: GenerationEngine) -> TokenPieces:
    """The token texts of an engine's tokenizer, kept as long as the engine (a cache per id)."""
    found = _PIECES.get(engine)
    if found is None:
        found = _PIECES[engine] = TokenPieces(engine.tokenizer)
    return found


def _top(pieces: TokenPieces, token: int, logprob: float) -> dict[str, Any]:
    raw = pieces.bytes(token)
    return {
        "token": pieces.text(token),
        "logprob": logprob,
        "bytes": list(raw) if raw is not None else None,
    }


def chat_logprobs(pieces: TokenPieces, entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    """A chat choice's (or chunk's) ``logprobs`` for these tokens."""
    return {
        "content": [
            {
                **_top(pieces, e.token, e.logprob),
                "top_logprobs": [_top(pieces, token, lp) for token, lp in e.top],
            }
            for e in entries
        ],
        "refusal": None,
    }


class LegacyLogprobs:
    """A completions choice's ``logprobs``, chunk after chunk: it keeps the character offset
    where the next token starts (offsets count characters whose first byte has been seen)."""

    def __init__(self, pieces: TokenPieces, prompt_chars: int) -> None:
        self.pieces = pieces
        self.offset = prompt_chars

    def chunk(self, entries: Sequence[TokenLogprob]) -> dict[str, Any]:
        tokens, logprobs, tops, offsets = [], [], [], []
        for e in entries:
            text = self.pieces.text(e.token)
            tokens.append(text)
            logprobs.append(e.logprob)
            top: dict[str, float] = {}
            for token, lp in e.top:
                top.setdefault(self.pieces.text(token), lp)  # the likelier of two equal texts
            top.setdefault(text, e.logprob)
            tops.append(top)
            offsets.append(self.offset)
            # a UTF-8 continuation byte (10xxxxxx) does not start a character
            self.offset += sum(1 for b in self.pieces.bytes(e.token) or b"" if b & 0xC0 != 0x80)
        return {
            "tokens": tokens,
            "token_logprobs": logprobs,
            "top_logprobs": tops,
            "text_offset": offsets,
        }
