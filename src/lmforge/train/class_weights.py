"""The classification loss, optionally class-weighted (``training.class_weights``).

``balanced`` weighs each class by ``n_rows / (n_classes * n_rows_of_class)`` over the training
labels (scikit-learn's ``class_weight="balanced"``), so that on a skewed set — the finance
headlines are 56 % negative — a minority row costs as much in total as a majority one and the
model is not rewarded for predicting the majority class. ``none`` is transformers' own
unweighted cross-entropy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

ClassWeights = Literal["none", "balanced"]


def balanced_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """``n / (k * count_c)`` per class; a class absent from ``labels`` gets weight 0 (no row
    carries it, so its weight never enters the loss, and a division by zero is avoided)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = np.zeros(n_classes, dtype=np.float64)
    present = counts > 0
    weights[present] = len(labels) / (int(present.sum()) * counts[present])
    return weights


def classification_loss(
    kind: ClassWeights, labels: np.ndarray, n_classes: int
) -> Callable[[Any, dict[str, torch.Tensor]], torch.Tensor]:
    """The (model, batch) → mean loss function for the training loop."""
    if kind == "none":
        return lambda m, batch: m(**batch).loss  # transformers' cross-entropy on the labels
    weight = torch.as_tensor(balanced_weights(labels, n_classes), dtype=torch.float32)

    def weighted(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs).logits.float()
        w = weight.to(logits.device)
        # weighted mean, as torch's cross_entropy(weight=) defines it: sum(w_y * nll) / sum(w_y)
        return torch.nn.functional.cross_entropy(logits, batch["labels"], weight=w)

    return weighted
