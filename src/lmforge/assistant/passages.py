"""Passages of FAQ entries, and the embedded index of an FAQ kept on disk.

An FAQ answer can run to pages (the Debian FAQ's §3.1 is 15,000 characters) while a question
is one line: an encoder that reads the first 256 tokens misses most of a long entry, and a user
asking a short question wants the part that answers it. Each answer is therefore cut at sentence
ends into passages of a few sentences (about 400 characters of English or 160 of Chinese, which
carry the same information), each indexed after its entry's question so that it keeps its
context. The assistant scores an entry by its best passage and answers with that passage.

Embedding an FAQ's passages is the slow part of starting an assistant (minutes for the Debian
FAQ on two cores); the vectors are cached in a file named by a hash of the encoder and of the
exact texts, so any change to either embeds again.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

# A sentence ends at . ! ? ; followed by white space ("sources.list" and "ftp.debian.org" do
# not end one), or at a Chinese full-width mark, which needs none.
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|(?<=[。！？；])\s*")
PASSAGE_CHARS = {"zh": 160}  # a Chinese character carries about what 2.5 English ones do
DEFAULT_PASSAGE_CHARS = 400


def split_passages(text: str, lang: str = "en") -> list[str]:
    """Consecutive sentences of ``text`` grouped into passages of at most about the language's
    passage length (a single longer sentence stays whole); never empty for non-blank text."""
    limit = PASSAGE_CHARS.get(lang, DEFAULT_PASSAGE_CHARS)
    joiner = "" if lang == "zh" else " "
    passages: list[str] = []
    current = ""
    for sentence in (s.strip() for s in _SENTENCE_END.split(text)):
        if not sentence:
            continue
        if current and len(current) + len(joiner) + len(sentence) > limit:
            passages.append(current)
            current = ""
        current = f"{current}{joiner}{sentence}" if current else sentence
    if current:
        passages.append(current)
    return passages


Embed = Callable[[Sequence[str]], np.ndarray]


def cached_embed(
    embed: Embed, texts: Sequence[str], folder: Path | None, encoder: str
) -> np.ndarray:
    """``embed(texts)``, read from ``folder`` when the same encoder has embedded the same texts
    before, else computed and written there (atomically: a crash leaves no partial file). No
    folder: always computed."""
    if folder is None:
        return embed(texts)
    digest = hashlib.sha256(encoder.encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\x00")
    path = folder / f"{digest.hexdigest()[:32]}.npy"
    if path.is_file():
        try:
            vectors = np.load(path, allow_pickle=False)
            if vectors.shape[0] == len(texts):
                return np.asarray(vectors)
        except (OSError, ValueError):
            pass  # a damaged cache file is recomputed and replaced
    vectors = embed(texts)
    temporary: str | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".tmp", delete=False) as f:
            temporary = f.name
            np.save(f, vectors, allow_pickle=False)
        os.replace(temporary, path)
    except OSError:
        # a read-only cache only costs the next start the same embedding time
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
    return vectors
