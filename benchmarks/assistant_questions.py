"""The FAQ assistant on questions as users type them: answer-correct@1 and off-topic refusal per
language, on the test part of the shipped Debian FAQ question set (its card:
src/lmforge/assistant/data/debian_faq_questions.md).

Rows, each with thresholds tuned without the test part:

- default — the assistant as shipped (`lmforge app assistant`, `assistant: {faq: debian_faq}`):
  its per-language default thresholds (``DEFAULT_THRESHOLDS``, tuned with ``--tune``);
- tuned — the thresholds an assistant recipe tunes (`examples/faq-assistant.yaml`: the FAQ's own
  questions asked of its answers, against chatterbot-corpus small talk);
- BM25 — bm25s over the entries of the question's language, its score's threshold per language
  tuned on the tuning part;
- before — the assistant of main f9747f0: reciprocal-rank fusion of whole-entry cosine and BM25
  decides the order, the top entry's cosine is compared with 0.81.

    .venv/bin/python benchmarks/assistant_questions.py --json /tmp/assistant_questions.json
    .venv/bin/python benchmarks/assistant_questions.py --tune    # derive DEFAULT_THRESHOLDS
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.assistant import Bm25Retriever, DenseRetriever, load_faq
from lmforge.assistant.assistant import (
    DEFAULT_THRESHOLDS,
    Assistant,
    encoder_key,
    index_cache_dir,
    question_language,
)
from lmforge.assistant.evaluation import evaluate_assistant
from lmforge.assistant.faq import FaqEntry
from lmforge.assistant.passages import cached_embed
from lmforge.assistant.questions import (
    Outcome,
    UserQuestion,
    figures,
    load_questions,
    tune_threshold,
)
from lmforge.assistant.retrieval import reciprocal_ranks
from lmforge.registry.refs import resolve_base
from lmforge.runtime.embedder import Embedder
from lmforge.settings import get_settings

# One row per question: (best entry's key, best entry's score) — the score the threshold sees.
Scored = list[tuple[str, float]]


def outcomes(
    scored: Scored, questions: Sequence[UserQuestion], thresholds: dict[str, float]
) -> list[Outcome]:
    return [
        Outcome(key, score, score >= thresholds[q.lang])
        for (key, score), q in zip(scored, questions, strict=True)
    ]


def tuned_on(scored: Scored, questions: Sequence[UserQuestion]) -> dict[str, float]:
    """A threshold per language from the tuning rows (never the test rows)."""
    out = {}
    for lang in sorted({q.lang for q in questions}):
        rows = [(s, q) for s, q in zip(scored, questions, strict=True) if q.lang == lang]
        ins = [(score, key in q.sections) for (key, score), q in rows if q.in_domain]
        offs = [score for (_, score), q in rows if not q.in_domain]
        out[lang] = round(tune_threshold(ins, offs), 3)
    return out


def bm25_scored(entries: list[FaqEntry], questions: Sequence[str]) -> Scored:
    by_lang = {lang: [e for e in entries if e.lang == lang] for lang in ("en", "zh")}
    index = {lang: Bm25Retriever([e.passage for e in group]) for lang, group in by_lang.items()}
    out = []
    for question in questions:
        lang = question_language(question)
        row = index[lang].scores([question])[0]
        best = int(np.argmax(row))
        out.append((by_lang[lang][best].key, float(row[best])))
    return out


def before_scored(
    entries: list[FaqEntry], embed: Callable[[Sequence[str]], np.ndarray], questions: Sequence[str]
) -> Scored:
    """main f9747f0's assistant: RRF of whole-entry cosine and BM25 orders, the cosine is shown."""
    dense = DenseRetriever(
        [e.passage for e in entries], embed, query_prefix="query: ", passage_prefix="passage: "
    )
    cosines = dense.scores(questions)
    out = []
    for question, row in zip(questions, cosines, strict=True):
        members = np.array(
            [i for i, e in enumerate(entries) if e.lang == question_language(question)]
        )
        bm25 = Bm25Retriever([entries[i].passage for i in members]).scores([question])[0]
        fused = reciprocal_ranks(row[members]) + reciprocal_ranks(bm25)
        best = int(members[int(np.argmax(fused))])
        out.append((entries[best].key, float(row[best])))
    return out


def table(
    name: str, thresholds: dict[str, float], scored: Scored, questions: list[UserQuestion]
) -> dict[str, Any]:
    test = [i for i, q in enumerate(questions) if q.split == "test"]
    result = figures(
        [questions[i] for i in test],
        outcomes([scored[i] for i in test], [questions[i] for i in test], thresholds),
    )
    cells = "  ".join(
        f"{lang}: correct@1 {f.correct_at_1:.1%} of {f.in_domain}, off-topic refused "
        f"{f.refused_off_topic:.1%} of {f.off_topic}"
        for lang, f in result.items()
    )
    print(f"{name:8s} thresholds {thresholds}  {cells}")
    return {"thresholds": thresholds, "test": {lang: f.to_json() for lang, f in result.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--tune", action="store_true", help="print thresholds tuned on the tuning part and stop"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    settings = get_settings()
    path = resolve_base("multilingual-e5-small", "encoder", settings.cache_dir).path
    embedder, key, cache = Embedder(path), encoder_key(path), index_cache_dir(settings.cache_dir)
    entries = load_faq("debian_faq")
    questions = load_questions()
    texts = [q.question for q in questions]
    assistant = Assistant(entries, embedder.embed, index_cache=cache, encoder_key=key)
    scored = [(h[0].entry.key, h[0].score) for h in assistant.search(texts, k=1)]
    tune = [i for i, q in enumerate(questions) if q.split == "tune"]
    if args.tune:
        found = tuned_on([scored[i] for i in tune], [questions[i] for i in tune])
        print(f"thresholds tuned on the {len(tune)} tuning questions: {found}")
        return 0
    rows: dict[str, Any] = {
        "default": table("default", dict(DEFAULT_THRESHOLDS), scored, questions)
    }
    evaluation = evaluate_assistant(
        entries,
        embedder.embed,
        query_prefix="query: ",
        passage_prefix="passage: ",
        index_cache=cache,
        encoder_key=key,
        cross_lingual=False,  # retrieval figures only: the thresholds come from the rest
    )
    recipe = {lang: round(t, 3) for lang, t in evaluation.thresholds.items()}
    rows["tuned"] = table("tuned", recipe, scored, questions)
    bm25 = bm25_scored(entries, texts)
    rows["bm25"] = table(
        "BM25", tuned_on([bm25[i] for i in tune], [questions[i] for i in tune]), bm25, questions
    )

    def cached(batch: Sequence[str]) -> np.ndarray:
        return (
            cached_embed(embedder.embed, batch, cache, key)
            if len(batch) > 1
            else embedder.embed(batch)
        )

    rows["before"] = table(
        "before", {"en": 0.81, "zh": 0.81}, before_scored(entries, cached, texts), questions
    )
    seconds = time.perf_counter() - start
    print(f"\n{seconds:.0f} s", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({**rows, "seconds": round(seconds)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
