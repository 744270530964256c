"""The customer-service assistant: FAQ entries, retrieval (BM25, dense, fused) and its metrics."""

from lmforge.assistant.faq import FaqEntry, RetrievalTask, debian_tasks, load_faq, support_task
from lmforge.assistant.retrieval import (
    Bm25Retriever,
    DenseRetriever,
    FusedRetriever,
    RetrievalMetrics,
    Retriever,
    TfidfRetriever,
    bm25_tokens,
    evaluate_retrieval,
)

__all__ = [
    "Bm25Retriever",
    "DenseRetriever",
    "FaqEntry",
    "FusedRetriever",
    "RetrievalMetrics",
    "RetrievalTask",
    "Retriever",
    "TfidfRetriever",
    "bm25_tokens",
    "debian_tasks",
    "evaluate_retrieval",
    "load_faq",
    "support_task",
]
