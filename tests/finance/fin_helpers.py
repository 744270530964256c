"""The finance monitor tests' helpers (a module, not a second conftest.py beside the shared
one): a tiny random three-class sentiment model, registered, and a scorer whose labels a test
controls (the monitor's logic is tested without a model's noise)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoTokenizer

from conftest import register_copy
from lmforge.finance.entities import load_gazetteer
from lmforge.finance.ingest import Headline
from lmforge.finance.store import ScoredHeadline
from lmforge.settings import Settings

LABELS = ["negative", "neutral", "positive"]


def build_sentiment_dir(tiny_base: Path, folder: Path) -> Path:
    """A tiny random negative/neutral/positive classifier laid out as a registered version."""
    from lmforge.models.classifier import build_classifier

    torch.manual_seed(0)
    build_classifier(tiny_base, LABELS).save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(tiny_base)).save_pretrained(str(folder))
    meta = {"task": "classification", "labels": LABELS, "base_model": "tiny", "max_length": 32}
    (folder / "lmforge.json").write_text(json.dumps(meta))
    return folder


def register(settings: Settings, folder: Path, name: str, labels: Sequence[str]) -> str:
    """Register a copy of ``folder`` as the production ``name`` with ``labels``; its reference."""
    return register_copy(settings, folder, name, stage="production", labels=labels)


class KeywordScorer:
    """Negative when a headline has 'crash', positive with 'boom', else neutral."""

    def __init__(self, model: str = "kw") -> None:
        self.model = model
        self.ref = f"{model}:v1"

    def score(self, headlines: Sequence[Headline]) -> list[ScoredHeadline]:
        out = []
        for h in headlines:
            label = (
                "negative" if "crash" in h.text else "positive" if "boom" in h.text else "neutral"
            )
            scores = {name: 0.8 if name == label else 0.1 for name in LABELS}
            out.append(
                ScoredHeadline(
                    h.id,
                    h.time,
                    h.text,
                    label,
                    0.8,
                    scores,
                    self.model,
                    1,
                    load_gazetteer().find(h.text),
                )
            )
        return out
