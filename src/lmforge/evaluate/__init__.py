"""Evaluation: the model on the held-out test split, always beside simple baselines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmforge.data import PreparedData
from lmforge.evaluate.baselines import majority_baseline, snownlp_baseline, tfidf_lr_baseline
from lmforge.evaluate.metrics import classification_metrics
from lmforge.models.classifier import pad_token_id, predict_logits, tokenize

__all__ = ["classification_metrics", "evaluate_classifier", "score_baselines"]


def evaluate_classifier(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: PreparedData,
    *,
    max_length: int,
    text_prefix: str = "",
    precision: str = "fp32",
) -> dict[str, Any]:
    label_ids = data.label_to_id
    y = np.array([label_ids[v] for v in data.test["label"]])
    ids = tokenize(tokenizer, data.test["text"].tolist(), max_length, text_prefix)
    logits = predict_logits(model, ids, pad_id=pad_token_id(tokenizer), precision=precision)
    return classification_metrics(y, logits, data.labels)


def score_baselines(data: PreparedData, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    label_ids = data.label_to_id
    y_train = np.array([label_ids[v] for v in data.train["label"]])
    y_test = np.array([label_ids[v] for v in data.test["label"]])
    n = len(data.labels)
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        if name == "majority":
            proba = majority_baseline(y_train, len(y_test), n)
        elif name == "tfidf_lr":
            proba = tfidf_lr_baseline(
                data.train["text"].tolist(), y_train, data.test["text"].tolist(), n
            )
        else:
            proba = snownlp_baseline(data.test["text"].tolist(), data.labels)
        results[name] = classification_metrics(y_test, proba, data.labels, from_logits=False)
    return results
