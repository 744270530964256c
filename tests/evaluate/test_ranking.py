"""Ranking metrics on cases small enough to compute by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmforge.evaluate.ranking import coverage, hit_rate, ndcg, ranking_metrics, recall, top_k

RANKED = np.array([[3, 1, 2, 0], [0, 1, 2, 3]])
RELEVANT = [{1}, {3}]


def test_hit_rate() -> None:
    assert hit_rate(RANKED, RELEVANT, 2) == 0.5  # user 0 finds item 1 second; user 1 nothing
    assert hit_rate(RANKED, RELEVANT, 1) == 0.0
    assert hit_rate(RANKED, RELEVANT, 4) == 1.0


def test_ndcg() -> None:
    # user 0: one relevant item at rank 2 → (1/log2 3) / 1; user 1: none in the top 2
    assert ndcg(RANKED, RELEVANT, 2) == pytest.approx((1 / math.log2(3)) / 2)
    # two relevant items, found at ranks 1 and 3: (1 + 1/log2 4) / (1 + 1/log2 3)
    two = ndcg(np.array([[5, 0, 6]]), [{5, 6}], 3)
    assert two == pytest.approx((1 + 0.5) / (1 + 1 / math.log2(3)))


def test_recall_and_coverage() -> None:
    assert recall(np.array([[1, 2, 3]]), [{1, 3, 9, 8}], 2) == 0.25
    assert recall(RANKED, RELEVANT, 4) == 1.0
    assert coverage(RANKED, 5, 1) == pytest.approx(2 / 5)  # items 3 and 0 of 5
    assert coverage(np.array([[2, -1], [-1, -1]]), 4, 2) == 0.25  # -1: an empty place


def test_top_k_excludes_and_breaks_ties_by_column() -> None:
    scores = np.array([[0.5, 0.9, 0.9, 0.1]])
    assert top_k(scores, 3).tolist() == [[1, 2, 0]]
    assert top_k(scores, 3, [np.array([1])]).tolist() == [[2, 0, 3]]


def test_ranking_metrics_keys() -> None:
    figures = ranking_metrics(RANKED, RELEVANT, 4)
    assert figures["users"] == 2 and figures["hr@10"] == 1.0 and figures["coverage@10"] == 1.0
