"""Log-probabilities of generated tokens, and the text and bytes of a token, for OpenAI's
``logprobs`` / ``top_logprobs``.

What is reported is the model's own distribution at each step: the log-softmax of the raw
logits (temperature 1, before the repetition penalty, temperature, top-k and top-p), which is
what OpenAI and vLLM report too. A token drawn at temperature 0.7 therefore shows the
probability the model gave it, not the one the sampler drew it with; under greedy decoding the
token is the argmax of exactly this distribution.

Nothing here runs unless a request asks for it: the engine computes the log-softmax only of the
rows whose sequences want log-probabilities, after sampling, from logits it keeps unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

__all__ = ["MAX_TOP_LOGPROBS", "TokenLogprob", "TokenPieces", "token_logprobs"]

MAX_TOP_LOGPROBS = 20  # OpenAI's limit for chat's top_logprobs (legacy completions: 5)
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")  # SentencePiece's byte fallback


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its id and log-probability, and the `top` likeliest tokens at its
    position as (id, log-probability), likeliest first (as many as were asked for)."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


def token_logprobs(
    logits: torch.Tensor, rows: Sequence[int], tokens: Sequence[int], tops: Sequence[int]
) -> list[TokenLogprob]:
    """For each of `rows` of `logits` (rows, vocab): the log-probability of `tokens[i]` and the
    `tops[i]` likeliest tokens. One log-softmax over the asked rows only, one top-k for all."""
    lp = torch.log_softmax(logits[list(rows)].float(), dim=-1)
    chosen = lp[torch.arange(len(rows)), torch.tensor(list(tokens))].tolist()
    k = min(max(tops, default=0), lp.shape[-1])
    values: list[list[float]] = []
    ids: list[list[int]] = []
    if k:
        best = torch.topk(lp, k, dim=-1)  # sorted, likeliest first
        values, ids = best.values.tolist(), best.indices.tolist()
    out = []
    for i, (token, logprob, top) in enumerate(zip(tokens, chosen, tops, strict=True)):
        pairs = tuple(zip(ids[i][:top], values[i][:top], strict=True)) if top else ()
        out.append(TokenLogprob(int(token), float(logprob), pairs))
    return out


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet reversed: the printable character that stands for each byte
    in a byte-level BPE vocabulary (Ġ for a space) → the byte. The mapping is GPT-2's
    ``bytes_to_unicode`` (printable Latin-1 bytes stand for themselves, the others are shifted
    past 255 in order), written out because transformers 5 no longer exports it."""
    kept = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars = {b: chr(b) for b in kept}
    shifted = (b for b in range(256) if b not in chars)
    chars.update({b: chr(256 + n) for n, b in enumerate(shifted)})
    return {char: byte for byte, char in chars.items()}


def _byte_level(tokenizer: Any) -> bool:
    """Whether the tokenizer's decoder is byte-level BPE (GPT-2, SmolLM2, Llama 3, Qwen)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    return decoder is not None and "ByteLevel" in repr(decoder)


class TokenPieces:
    """The UTF-8 bytes and the text of single tokens of a tokenizer (cached per id).

    The bytes are the token's own: a byte-level BPE token is mapped back through GPT-2's byte
    alphabet, a SentencePiece byte token ``<0xE4>`` is that byte, and ``▁`` is a space. They
    may be part of a character (a Chinese character is often split over two or three tokens);
    such a token's text is then written ``bytes:\\xe4\\xbd`` — OpenAI's convention — so that
    every token has a distinct, valid JSON string and ``bytes`` still joins up to the text. A
    special token (``<|im_start|>``), which the text leaves out, has its name as its text and
    no bytes (None, OpenAI's "no bytes representation").
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._bytes = _byte_decoder() if _byte_level(tokenizer) else None
        self._special = set(getattr(tokenizer, "all_special_ids", []) or [])
        self.bytes = lru_cache(maxsize=65536)(self._token_bytes)

    def _piece(self, token: int) -> str:
        piece = self.tokenizer.convert_ids_to_tokens(int(token))
        return piece if isinstance(piece, str) else ""

    def _token_bytes(self, token: int) -> bytes | None:
        if token in self._special:
            return None
        piece = self._piece(token)
        if self._bytes is not None and all(c in self._bytes for c in piece):
            return bytes(self._bytes[c] for c in piece)
        byte = _BYTE_TOKEN.match(piece)
        if byte:
            return bytes([int(byte.group(1), 16)])
        return piece.replace("\u2581", " ").encode()

    def text(self, token: int) -> str:
        """The token's text, or ``bytes:\\xNN...`` when its bytes are not whole characters."""
        raw = self.bytes(token)
        if raw is None:
            return self._piece(token)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)
