"""Tokenising for inference with the `tokenizers` library alone.

transformers takes seconds to import; the fast tokenizer's ``tokenizer.json`` holds everything
inference needs (normaliser, pre-tokeniser, model, special tokens), so the runtime reads it
directly and a compressed model answers its first request well under two seconds after start.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from lmforge.errors import CheckpointError, first_line


class TextTokenizer:
    def __init__(self, folder: Path, max_length: int, prefix: str = "") -> None:
        path = folder / "tokenizer.json"
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # missing file or a malformed JSON: both unusable
            raise CheckpointError(
                f"cannot read the tokenizer {path} ({first_line(exc, 120)})",
                "the version folder is damaged; re-register it or use another version",
            ) from exc
        self._tok.no_padding()
        self._tok.enable_truncation(max_length)
        self.prefix = prefix
        self.pad_id = self._pad_id(folder)

    def _pad_id(self, folder: Path) -> int:
        config = folder / "tokenizer_config.json"
        settings = _read_settings(config) if config.is_file() else {}
        pad = settings.get("pad_token")
        if isinstance(pad, dict):
            pad = pad.get("content")
        token_id = self._tok.token_to_id(pad) if isinstance(pad, str) else None
        return int(token_id) if token_id is not None else 0

    def __call__(self, texts: Sequence[str]) -> list[list[int]]:
        batch = [self.prefix + t for t in texts] if self.prefix else list(texts)
        return [e.ids for e in self._tok.encode_batch(batch)]


def _read_settings(config: Path) -> dict[str, Any]:
    """``tokenizer_config.json`` as a JSON object; a one-line error naming it when damaged."""
    try:
        settings = json.loads(config.read_text(encoding="utf-8"))
        problem = "" if isinstance(settings, dict) else "not a JSON object"
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or bad UTF-8
        problem = first_line(exc, 120)
    if problem:
        raise CheckpointError(
            f"cannot read the tokenizer settings {config} ({problem})",
            "the version folder is damaged; re-register it or use another version",
        )
    return dict(settings)
