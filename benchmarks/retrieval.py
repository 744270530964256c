"""Retrieval on real FAQs: dense, BM25, their fusion and TF-IDF, side by side, in one run.

Tasks (from `lmforge.assistant`): the Debian FAQ cross-lingual (a Chinese question → the
English entry with the same section number, and the reverse), the Debian FAQ monolingual
(a question → its own answer among all answers, English and Chinese), and chatterbot-corpus
support (a question → its answer among all answers). Dense retrieval uses multilingual-e5-small
wherever Chinese is involved and MiniLM-L6 for English; fusion is reciprocal-rank fusion of
dense and BM25.

    .venv/bin/python benchmarks/retrieval.py --json /tmp/retrieval.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from lmforge.assistant import (
    Bm25Retriever,
    DenseRetriever,
    FusedRetriever,
    RetrievalTask,
    Retriever,
    TfidfRetriever,
    debian_tasks,
    evaluate_retrieval,
    load_faq,
    support_task,
)
from lmforge.assistant.evaluation import evaluate_assistant
from lmforge.registry.refs import resolve_base
from lmforge.runtime.embedder import Embedder
from lmforge.settings import get_settings


def encoders() -> dict[str, tuple[Embedder, str, str]]:
    """name → (embedder, query prefix, passage prefix)."""
    cache = get_settings().cache_dir
    minilm = Embedder(resolve_base("minilm-l6", "encoder", cache).path)
    e5 = Embedder(resolve_base("multilingual-e5-small", "encoder", cache).path)
    return {"minilm-l6": (minilm, "", ""), "multilingual-e5-small": (e5, "query: ", "passage: ")}


def retrievers(task: RetrievalTask, models: dict[str, Any]) -> list[tuple[str, Retriever]]:
    name = "minilm-l6" if task.query_lang == task.document_lang == "en" else "multilingual-e5-small"
    embedder, query_prefix, passage_prefix = models[name]
    dense = DenseRetriever(
        task.documents, embedder.embed, query_prefix=query_prefix, passage_prefix=passage_prefix
    )
    bm25 = Bm25Retriever(task.documents)
    return [
        (f"dense ({name})", dense),
        ("fused (dense + BM25)", FusedRetriever(dense, bm25)),
        ("BM25 (bm25s)", bm25),
        ("TF-IDF char 1-3", TfidfRetriever(task.documents)),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    models = encoders()
    tasks = [*debian_tasks(load_faq("debian_faq")), support_task(load_faq("chatterbot_support"))]
    results: list[dict[str, Any]] = []
    print("| task | retriever | queries | hit@1 | hit@5 | MRR |")
    print("|---|---|---:|---:|---:|---:|")
    for task in tasks:
        for name, retriever in retrievers(task, models):
            metrics = evaluate_retrieval(retriever, task.queries, task.relevant)
            results.append({"task": task.name, "retriever": name, **metrics.to_json()})
            print(
                f"| {task.name} | {name} | {metrics.queries} | {metrics.hit_at_1:.1%} | "
                f"{metrics.hit_at_5:.1%} | {metrics.mrr:.3f} |"
            )
    refusal = tune_refusal(models["multilingual-e5-small"][0])
    print(f"\n{time.perf_counter() - start:.0f} s", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"retrieval": results, "refusal": refusal}, indent=1))
    return 0


def tune_refusal(e5: Embedder) -> dict[str, Any]:
    """The answer-or-refuse threshold, as an assistant recipe tunes it (lmforge.assistant.
    evaluation): in-domain questions are the Debian FAQ's questions asked of the FAQ in the
    *other* language (so no indexed text repeats them), off-topic ones chatterbot-corpus small
    talk in both languages; tuned on one half, measured on the other."""
    evaluation = evaluate_assistant(
        load_faq("debian_faq"), e5.embed, query_prefix="query: ", passage_prefix="passage: "
    )
    result: dict[str, Any] = evaluation.to_json()["refusal"]
    print(
        f"\nrefusal threshold {result['threshold']:.3f} (tuned on half): held out, in-domain "
        f"answered {result['held_out_answered_in_domain']:.1%} "
        f"({result['held_out_answered_with_right_entry']:.1%} with the right entry), off-topic "
        f"refused {result['held_out_refused_off_topic']:.1%}, balanced accuracy "
        f"{result['held_out_balanced_accuracy']:.1%}"
    )
    return result


if __name__ == "__main__":
    sys.exit(main())
