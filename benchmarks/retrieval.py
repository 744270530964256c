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

import numpy as np

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
from lmforge.assistant.assistant import Assistant, choose_threshold, evaluate_threshold
from lmforge.assistant.faq import off_topic_questions
from lmforge.models.catalogue import resolve_base
from lmforge.runtime.embedder import Embedder
from lmforge.settings import get_settings


def encoders() -> dict[str, tuple[Embedder, str, str]]:
    """name → (embedder, query prefix, passage prefix)."""
    cache = get_settings().cache_dir
    minilm = Embedder(resolve_base("minilm-l6", cache).path)
    e5 = Embedder(resolve_base("multilingual-e5-small", cache).path)
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
    """The answer-or-refuse threshold, tuned on one half of the questions and measured on the
    other. In-domain questions are the Debian FAQ's questions asked of the FAQ in the *other*
    language (so no indexed text repeats them); off-topic ones are chatterbot-corpus small talk
    in both languages."""
    entries = load_faq("debian_faq")
    in_domain: list[float] = []
    correct: list[bool] = []
    for index_lang, ask_lang in (("en", "zh"), ("zh", "en")):
        assistant = Assistant([e for e in entries if e.lang == index_lang], e5.embed)
        asked = [e for e in entries if e.lang == ask_lang]
        hits = assistant.search([e.question for e in asked], k=1)
        in_domain += [h[0].score for h in hits]
        correct += [h[0].entry.key == e.key for h, e in zip(hits, asked, strict=True)]
    off_topic: list[float] = []
    for index_lang in ("en", "zh"):
        assistant = Assistant([e for e in entries if e.lang == index_lang], e5.embed)
        questions = off_topic_questions("en") + off_topic_questions("zh")
        off_topic += [h[0].score for h in assistant.search(questions, k=1)]
    rng = np.random.default_rng(0)
    a, b = rng.permutation(len(in_domain)), rng.permutation(len(off_topic))
    ins, offs = np.asarray(in_domain), np.asarray(off_topic)
    tuned = choose_threshold(ins[a[::2]].tolist(), offs[b[::2]].tolist())
    held = evaluate_threshold(tuned.threshold, ins[a[1::2]].tolist(), offs[b[1::2]].tolist())
    right = np.asarray(correct)[a[1::2]]
    answered = ins[a[1::2]] >= tuned.threshold
    result = {
        "threshold": round(tuned.threshold, 4),
        "tuned_on": {"in_domain": len(a[::2]), "off_topic": len(b[::2])},
        "held_out": {"in_domain": len(a[1::2]), "off_topic": len(b[1::2])},
        "held_out_answered_in_domain": held.answered_in_domain,
        "held_out_refused_off_topic": held.refused_off_topic,
        "held_out_balanced_accuracy": held.balanced_accuracy,
        "held_out_answered_and_right_entry": float(np.mean(right & answered)),
    }
    print(
        f"\nrefusal threshold {tuned.threshold:.3f} (tuned on half): held out, in-domain answered "
        f"{held.answered_in_domain:.1%} ({result['held_out_answered_and_right_entry']:.1%} with "
        f"the right entry), off-topic refused {held.refused_off_topic:.1%}, balanced accuracy "
        f"{held.balanced_accuracy:.1%}"
    )
    return result


if __name__ == "__main__":
    sys.exit(main())
