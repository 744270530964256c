"""A classifier loaded from a model folder, applying the same cleaning and prefix as training."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmforge.data.prepare import clean_text
from lmforge.errors import ModelNotFoundError
from lmforge.models.classifier import (
    load_classifier,
    load_tokenizer,
    pad_token_id,
    predict_logits,
    softmax,
)
from lmforge.models.classifier import tokenize as tokenize_texts
from lmforge.recipe.schema import CleaningConfig


@dataclass(frozen=True)
class Prediction:
    text: str
    label: str
    score: float
    scores: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "label": self.label, "score": self.score, "scores": self.scores}


class Predictor:
    def __init__(self, folder: Path, *, precision: str = "fp32", batch_size: int = 64) -> None:
        meta_path = folder / "lmforge.json"
        if not meta_path.is_file():
            raise ModelNotFoundError(
                f"{folder} is not an lmforge model folder (no lmforge.json)",
                "give a registered NAME[:VERSION]",
            )
        meta = json.loads(meta_path.read_text())
        self.folder = folder
        self.labels: list[str] = list(meta["labels"])
        self.text_prefix: str = meta.get("text_prefix", "")
        self.max_length: int = int(meta["max_length"])
        self.cleaning = CleaningConfig.model_validate(meta["cleaning"])
        self.precision = precision
        self.batch_size = batch_size
        torch.set_num_threads(os.cpu_count() or 1)
        try:
            self.tokenizer = load_tokenizer(folder)
            self.model = load_classifier(folder)
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(
                f"cannot load the model in {folder}: {str(exc).splitlines()[0]}",
                "the version folder is damaged; re-register it or use another version",
            ) from exc
        self.model.eval()
        self.pad_id = pad_token_id(self.tokenizer)

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        if not texts:
            return []
        cleaned = [clean_text(t, self.cleaning) for t in texts]
        ids = tokenize_texts(self.tokenizer, cleaned, self.max_length, self.text_prefix)
        logits = predict_logits(
            self.model,
            ids,
            pad_id=self.pad_id,
            batch_size=self.batch_size,
            precision=self.precision,
        )
        proba = softmax(logits)
        out = []
        for text, row in zip(texts, proba, strict=True):
            best = int(row.argmax())
            scores = {label: float(p) for label, p in zip(self.labels, row, strict=True)}
            out.append(Prediction(text, self.labels[best], float(row[best]), scores))
        return out
