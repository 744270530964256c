"""Top-k ranking metrics for recommendation: hit rate, NDCG, recall and catalogue coverage.

Every metric is over a *full ranking*: each user's scores cover every candidate item, the items
they already rated are excluded before ranking (sampled-negative metrics are known to reorder
models, so none are computed here). Relevance is binary (a held-out positive rating).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def top_k(scores: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """Each row's ``k`` best columns, best first (ties: the lower column first); ``exclude[i]``
    lists row i's columns never to return. Shape (rows, min(k, columns))."""
    work = np.array(scores, dtype=np.float64, copy=True)
    if exclude is not None:
        for row, columns in enumerate(exclude):
            work[row, columns] = -np.inf
    k = min(k, work.shape[1])
    # A stable sort of the negated scores: equal scores keep column order, so results repeat.
    order = np.argsort(-work, axis=1, kind="stable")[:, :k]
    return order


def hit_rate(ranked: np.ndarray, relevant: Sequence[set[int]], k: int) -> float:
    """Share of users with at least one relevant item in their top ``k``."""
    hits = [bool(rel & set(row[:k].tolist())) for row, rel in zip(ranked, relevant, strict=True)]
    return float(np.mean(hits)) if hits else 0.0


def ndcg(ranked: np.ndarray, relevant: Sequence[set[int]], k: int) -> float:
    """Mean NDCG@k with binary relevance: DCG = Σ 1/log2(rank+1) over relevant items in the top
    k, over the ideal DCG of min(|relevant|, k) relevant items at the top."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    values = []
    for row, rel in zip(ranked, relevant, strict=True):
        gains = np.array([1.0 if int(i) in rel else 0.0 for i in row[:k]])
        ideal = discounts[: min(len(rel), k)].sum()
        values.append(float((gains * discounts[: len(gains)]).sum() / ideal) if ideal else 0.0)
    return float(np.mean(values)) if values else 0.0


def recall(ranked: np.ndarray, relevant: Sequence[set[int]], k: int) -> float:
    """Mean share of each user's relevant items found in their top ``k``."""
    values = [
        len(rel & set(row[:k].tolist())) / len(rel)
        for row, rel in zip(ranked, relevant, strict=True)
        if rel
    ]
    return float(np.mean(values)) if values else 0.0


def coverage(ranked: np.ndarray, n_items: int, k: int) -> float:
    """Share of the ``n_items`` candidates recommended (in a top ``k``) to at least one user
    (a negative entry is an empty place in a list)."""
    if n_items == 0 or ranked.size == 0:
        return 0.0
    recommended = np.unique(ranked[:, :k])
    return len(recommended[recommended >= 0]) / n_items  # -1 marks an empty place


def ranking_metrics(
    ranked: np.ndarray, relevant: Sequence[set[int]], n_items: int
) -> dict[str, float]:
    """The task's figures (0–1) from each user's top-20 list: HR@10, NDCG@10, recall@20 and
    coverage@10, plus the number of users scored."""
    return {
        "hr@10": round(hit_rate(ranked, relevant, 10), 4),
        "ndcg@10": round(ndcg(ranked, relevant, 10), 4),
        "recall@20": round(recall(ranked, relevant, 20), 4),
        "coverage@10": round(coverage(ranked, n_items, 10), 4),
        "users": len(relevant),
    }
