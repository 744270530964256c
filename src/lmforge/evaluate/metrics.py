"""Classification metrics (scikit-learn) computed from logits or probabilities."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)


def probabilities(scores: np.ndarray, *, from_logits: bool = True) -> np.ndarray:
    """Class probabilities in float64 whose rows sum to one: a softmax of logits, or given
    probabilities renormalised (a float32 softmax's rows are off by rounding, which makes
    scikit-learn warn and can tie scores the float64 softmax of the same logits keeps apart).
    Every figure lmforge reports is computed from these, so registration and ``lmforge
    evaluate`` agree."""
    scores = np.asarray(scores, dtype=np.float64)
    if from_logits:
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return scores / scores.sum(axis=-1, keepdims=True)  # type: ignore[no-any-return]


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, bins: int = 10) -> float:
    """Mean |accuracy − confidence| over equal-width confidence bins, weighted by bin size."""
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def classification_metrics(
    y_true: np.ndarray,
    scores: np.ndarray,
    labels: Sequence[str],
    *,
    from_logits: bool = True,
    detail: bool = True,
) -> dict[str, Any]:
    """Accuracy, macro-F1 and loss; with ``detail`` also per-class P/R/F1, confusion matrix,
    ROC-AUC (binary tasks) and expected calibration error."""
    proba = probabilities(scores, from_logits=from_logits)
    pred = proba.argmax(axis=1)
    ids = list(range(len(labels)))
    out: dict[str, Any] = {
        "accuracy": float(accuracy_score(y_true, pred)),
        "macro_f1": float(f1_score(y_true, pred, average="macro", labels=ids, zero_division=0)),
        "loss": float(log_loss(y_true, proba, labels=ids)),
        "n": len(y_true),
    }
    if not detail:
        return out
    p, r, f, support = precision_recall_fscore_support(y_true, pred, labels=ids, zero_division=0)
    out["per_class"] = {
        label: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
    }
    out["confusion_matrix"] = confusion_matrix(y_true, pred, labels=ids).tolist()
    if len(labels) == 2 and len(set(y_true.tolist())) == 2:
        out["roc_auc"] = float(roc_auc_score(y_true, proba[:, 1]))
    out["ece"] = expected_calibration_error(y_true, proba)
    return out
