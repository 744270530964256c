"""Retrieval: tokenising, each retriever, fusion, the metrics, FAQ loading and the real tasks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lmforge.assistant import (
    Bm25Retriever,
    DenseRetriever,
    FusedRetriever,
    Retriever,
    TfidfRetriever,
    bm25_tokens,
    debian_tasks,
    evaluate_retrieval,
    load_faq,
    support_task,
)
from lmforge.errors import DataError

DOCS = [
    "How to install a package with apt-get install",
    "Upgrading the Linux kernel safely",
    "Reporting a bug to the Debian bug tracking system",
]


def test_bm25_tokens_split_words_and_chinese_bigrams() -> None:
    assert bm25_tokens("Apt-Get install 2 packages!") == ["apt", "get", "install", "2", "packages"]
    assert bm25_tokens("安装软件包") == [
        "安",
        "装",
        "软",
        "件",
        "包",
        "安装",
        "装软",
        "软件",
        "件包",
    ]
    assert bm25_tokens("用apt安装") == ["apt", "用", "安", "装", "安装"]


@pytest.mark.parametrize("make", [Bm25Retriever, TfidfRetriever])
def test_lexical_retrievers_rank_the_matching_document_first(make: type[Retriever]) -> None:
    retriever = make(DOCS)  # type: ignore[call-arg]
    order = retriever.rank(["install a package", "report a bug", "kernel upgrade"])
    assert order[:, 0].tolist() == [0, 2, 1]
    assert order.shape == (3, 3)


def test_bm25_keeps_indices_when_a_document_has_no_tokens() -> None:
    retriever = Bm25Retriever(["!!!", "kernel upgrade", "install packages"])
    assert retriever.rank(["install"])[0, 0] == 2


def fake_embed(texts: list[str]) -> np.ndarray:
    """A bag-of-keywords embedding: enough to test the dense path without a model."""
    words = ["install", "kernel", "bug"]
    vectors = np.array([[w in t.lower() for w in words] for t in texts], dtype=np.float32) + 1e-3
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_dense_retrieval_uses_the_prefixes_and_cosine() -> None:
    seen: list[str] = []

    def embed(texts: list[str]) -> np.ndarray:
        seen.extend(texts)
        return fake_embed(texts)

    retriever = DenseRetriever(DOCS, embed, query_prefix="query: ", passage_prefix="passage: ")
    assert retriever.rank(["the kernel"])[0, 0] == 1
    assert seen[0].startswith("passage: ") and seen[-1] == "query: the kernel"
    scores = retriever.scores(["the kernel"])
    assert scores.max() <= 1.0 + 1e-6


def test_reciprocal_rank_fusion() -> None:
    class Fixed(Retriever):
        def __init__(self, order: list[int]) -> None:
            self.order = order

        def scores(self, queries: list[str]) -> np.ndarray:  # type: ignore[override]
            s = np.zeros((len(queries), 3), dtype=np.float32)
            s[:, self.order] = [3, 2, 1]
            return s

    fused = FusedRetriever(Fixed([0, 1, 2]), Fixed([1, 0, 2]))
    scores = fused.scores(["q"])[0]
    assert scores[0] == pytest.approx(1 / 61 + 1 / 62) and scores[0] == pytest.approx(scores[1])
    assert scores[2] == pytest.approx(2 / 63)


def test_metrics_hit_at_k_and_mrr() -> None:
    retriever = Bm25Retriever(DOCS)
    queries = ["install a package", "kernel upgrade", "nothing relevant at all"]
    metrics = evaluate_retrieval(retriever, queries, [0, 1, 2])
    ranks = [
        list(row).index(gold) + 1
        for row, gold in zip(retriever.rank(queries), [0, 1, 2], strict=True)
    ]
    assert metrics.hit_at_1 == pytest.approx(np.mean([r == 1 for r in ranks]))
    assert metrics.hit_at_5 == 1.0  # three documents: always in the top five
    assert metrics.mrr == pytest.approx(np.mean([1 / r for r in ranks]))
    assert metrics.to_json()["queries"] == 3


def test_faq_files_and_their_errors(tmp_path: Path) -> None:
    good = tmp_path / "faq.csv"
    good.write_text("question,answer\nHow do I reset?,Press the button.\nWhy?,Because.\n")
    entries = load_faq(str(good))
    assert [e.question for e in entries] == ["How do I reset?", "Why?"]
    assert entries[0].citation == "faq.csv row 1" and "Press" in entries[0].passage
    lines = tmp_path / "faq.jsonl"
    lines.write_text(json.dumps({"question": "q", "answer": "a", "citation": "doc §1"}) + "\n")
    assert load_faq(str(lines))[0].citation == "doc §1"
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("q,a\nx,y\n")
    with pytest.raises(DataError, match=r"lacks the column.*question, answer"):
        load_faq(str(wrong))
    empty = tmp_path / "empty.csv"
    empty.write_text("question,answer\n")
    with pytest.raises(DataError, match="has no entries"):
        load_faq(str(empty))
    with pytest.raises(DataError, match="neither a built-in source nor a file"):
        load_faq(str(tmp_path / "none.csv"))
    with pytest.raises(DataError, match="no documents"):
        Bm25Retriever([])


def test_real_debian_faq_tasks_and_lexical_baselines() -> None:
    entries = load_faq("debian_faq")
    assert {e.lang for e in entries} == {"en", "zh"}
    tasks = {t.name: t for t in debian_tasks(entries)}
    cross = tasks["debian-faq zh→en (question → entry)"]
    assert len(cross.queries) == len(cross.relevant) > 100
    # the relevant English entry carries the Chinese question's section number
    en = [e for e in entries if e.lang == "en"]
    zh = [e for e in entries if e.lang == "zh"]
    assert en[cross.relevant[5]].key == zh[5].key
    mono = tasks["debian-faq zh (question → answer)"]
    bm25 = evaluate_retrieval(Bm25Retriever(mono.documents), mono.queries, mono.relevant)
    assert bm25.hit_at_5 > 0.5  # Chinese bigrams make BM25 work on Chinese
    support = support_task(load_faq("chatterbot_support"))
    assert len(support.queries) == 10


@pytest.mark.integration
def test_real_minilm_beats_bm25_on_english_faq_answers() -> None:
    from lmforge.registry.refs import resolve_base
    from lmforge.runtime.embedder import Embedder
    from lmforge.settings import get_settings

    task = {t.name: t for t in debian_tasks(load_faq("debian_faq"))}[
        "debian-faq en (question → answer)"
    ]
    embedder = Embedder(resolve_base("minilm-l6", "encoder", get_settings().cache_dir).path)
    dense = evaluate_retrieval(
        DenseRetriever(task.documents, embedder.embed), task.queries, task.relevant
    )
    bm25 = evaluate_retrieval(Bm25Retriever(task.documents), task.queries, task.relevant)
    assert dense.mrr > bm25.mrr + 0.1  # measured: 0.683 vs 0.502
