"""Retrieval over an FAQ: BM25 (bm25s), dense embeddings, and their fusion, with the metrics
that compare them (hit@k, MRR) beside a TF-IDF baseline.

Every retriever answers one question the same way: given queries, the documents' indices ranked
best first, with scores. BM25 tokenises Latin-script words and, for Chinese (no spaces between
words), overlapping character bigrams plus single characters — the standard dictionary-free
way to index CJK text. Dense retrieval embeds with an encoder from the runtime (mean-pooled,
normalised), so a dot product is the cosine similarity; multilingual-e5 is given its "query: " /
"passage: " prefixes. Fusion is reciprocal-rank fusion, which needs no score calibration.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lmforge.errors import DataError

_WORD = re.compile(r"[^\W\d_]+|\d+", re.UNICODE)
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
RRF_K = 60  # the constant of reciprocal-rank fusion (Cormack et al. 2009)


def bm25_tokens(text: str) -> list[str]:
    """Lower-cased words; each run of Chinese characters as its characters and their bigrams."""
    tokens: list[str] = []
    for word in _WORD.findall(text.lower()):
        for part in _CJK.split(word):
            if part:
                tokens.append(part)
        for run in _CJK.findall(word):
            tokens.extend(run)
            tokens.extend(run[i : i + 2] for i in range(len(run) - 1))
    return tokens


def latin_words(text: str) -> list[str]:
    """The lower-cased words of ``text`` that bm25_tokens keeps as words (Chinese left out)."""
    return [part for word in _WORD.findall(text.lower()) for part in _CJK.split(word) if part]


def cjk_runs(text: str) -> list[str]:
    """The runs of Chinese characters in ``text`` (bm25_tokens indexes their characters and
    bigrams)."""
    return _CJK.findall(text)


class Retriever(ABC):
    """Scores of every document for each query; higher is better."""

    name = "retriever"

    @abstractmethod
    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """Shape (queries, documents)."""

    def rank(self, queries: Sequence[str], k: int | None = None) -> np.ndarray:
        """Document indices, best first, one row per query (all documents unless ``k``)."""
        order = np.argsort(-self.scores(queries), axis=1, kind="stable")
        return order[:, :k] if k is not None else order


def _check_documents(documents: Sequence[str]) -> list[str]:
    docs = [str(d) for d in documents]
    if not docs or not any(d.strip() for d in docs):
        raise DataError("there are no documents to search", "give an FAQ with at least one entry")
    return docs


class Bm25Retriever(Retriever):
    name = "bm25"

    def __init__(self, documents: Sequence[str]) -> None:
        import bm25s

        self.size = len(_check_documents(documents))
        self._index = bm25s.BM25()
        # An empty token list would be dropped by bm25s and shift every index after it.
        corpus = [bm25_tokens(d) or ["\x00"] for d in documents]
        self._index.index(corpus, show_progress=False)

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(queries), self.size), dtype=np.float32)
        for i, query in enumerate(queries):
            tokens = bm25_tokens(query)
            if tokens:
                out[i] = self._index.get_scores(tokens)
        return out


class TfidfRetriever(Retriever):
    """The classic baseline: TF-IDF over character 1–3-grams within words, cosine similarity
    (character n-grams work for Chinese and English alike)."""

    name = "tfidf"

    def __init__(self, documents: Sequence[str]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        docs = _check_documents(documents)
        self._vectorizer = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True
        )
        self._matrix = self._vectorizer.fit_transform(docs)

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        q = self._vectorizer.transform(list(queries))
        return np.asarray((q @ self._matrix.T).toarray(), dtype=np.float32)


Embed = Callable[[Sequence[str]], np.ndarray]


class DenseRetriever(Retriever):
    """Cosine similarity of normalised embeddings (``embed`` returns one unit vector a text)."""

    name = "dense"

    def __init__(
        self,
        documents: Sequence[str],
        embed: Embed,
        *,
        query_prefix: str = "",
        passage_prefix: str = "",
    ) -> None:
        docs = _check_documents(documents)
        self._embed = embed
        self.query_prefix = query_prefix
        self._vectors = embed([passage_prefix + d for d in docs])

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        vectors = self._embed([self.query_prefix + q for q in queries])
        return np.asarray(vectors @ self._vectors.T, dtype=np.float32)


class FusedRetriever(Retriever):
    """Reciprocal-rank fusion: a document's score is Σ 1 / (RRF_K + its rank) over the parts."""

    name = "fused"

    def __init__(self, *parts: Retriever) -> None:
        if not parts:
            raise ValueError("fusion needs at least one retriever")
        self.parts = parts

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        total = sum(reciprocal_ranks(part.scores(queries)) for part in self.parts)
        return np.asarray(total, dtype=np.float32)


def reciprocal_ranks(scores: np.ndarray) -> np.ndarray:
    """1 / (RRF_K + rank) of every document in each row of scores (rank 1 = the best)."""
    order = np.argsort(-scores, axis=-1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(scores.shape[-1]), axis=-1)
    return 1.0 / (RRF_K + 1 + ranks)


@dataclass(frozen=True)
class RetrievalMetrics:
    queries: int
    hit_at_1: float
    hit_at_5: float
    mrr: float

    def to_json(self) -> dict[str, float | int]:
        return {
            "queries": self.queries,
            "hit@1": self.hit_at_1,
            "hit@5": self.hit_at_5,
            "mrr": self.mrr,
        }


def evaluate_retrieval(
    retriever: Retriever, queries: Sequence[str], relevant: Sequence[int]
) -> RetrievalMetrics:
    """hit@1, hit@5 and mean reciprocal rank of the one relevant document per query."""
    if len(queries) != len(relevant) or not queries:
        raise ValueError("one relevant document index per query, and at least one query")
    order = retriever.rank(queries)
    positions = np.argmax(order == np.asarray(relevant)[:, None], axis=1)  # 0-based rank
    return RetrievalMetrics(
        queries=len(queries),
        hit_at_1=float(np.mean(positions < 1)),
        hit_at_5=float(np.mean(positions < 5)),
        mrr=float(np.mean(1.0 / (positions + 1))),
    )
