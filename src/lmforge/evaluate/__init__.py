"""Evaluation: the model on the held-out test split, always beside simple baselines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmforge.data import PreparedData
from lmforge.evaluate.baselines import (
    LEXICON_BASELINES,
    lexicon_baseline,
    majority_baseline,
    snownlp_baseline,
    tfidf_lr_baseline,
)
from lmforge.evaluate.metrics import classification_metrics
from lmforge.models.classifier import pad_token_id, predict_logits, tokenize

__all__ = ["classification_metrics", "evaluate_classifier", "score_baselines", "score_test_split"]


def evaluate_classifier(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: PreparedData,
    *,
    max_length: int,
    text_prefix: str = "",
    precision: str = "fp32",
) -> dict[str, Any]:
    ids = tokenize(tokenizer, data.test["text"].tolist(), max_length, text_prefix)
    logits = predict_logits(model, ids, pad_id=pad_token_id(tokenizer), precision=precision)
    return score_test_split(data, logits)


def score_test_split(
    data: PreparedData, scores: np.ndarray, *, from_logits: bool = True
) -> dict[str, Any]:
    """Metrics of per-row ``scores`` (logits, or probabilities) on ``data``'s test split."""
    return classification_metrics(
        data.label_ids("test"), scores, data.labels, from_logits=from_logits
    )


def score_baselines(data: PreparedData, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    y_train, y_test = data.label_ids("train"), data.label_ids("test")
    n = len(data.labels)
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        if name == "majority":
            proba = majority_baseline(y_train, len(y_test), n)
        elif name == "tfidf_lr":
            proba = tfidf_lr_baseline(
                data.train["text"].tolist(), y_train, data.test["text"].tolist(), n
            )
        elif name in LEXICON_BASELINES:
            proba = lexicon_baseline(name, data.test["text"].tolist(), data.labels)
        else:
            proba = snownlp_baseline(data.test["text"].tolist(), data.labels)
        results[name] = classification_metrics(y_test, proba, data.labels, from_logits=False)
    return results
