"""How well an assistant over an FAQ finds answers and knows when to refuse, measured on the
FAQ itself and on real off-topic questions.

Questions must not be answered by finding their own text, so each probe set asks questions of
an index that holds the right entry but not the question's wording: where entries in two
languages share a key (the Debian FAQ's section numbers), the questions of one language are
asked of the entries of the other; otherwise each question is asked of the answers alone. The
refusal threshold is tuned on one half of the in-domain and off-topic questions (the best
balanced accuracy) and measured on the other half.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from lmforge.assistant.assistant import (
    Assistant,
    ThresholdChoice,
    choose_threshold,
    evaluate_threshold,
)
from lmforge.assistant.faq import FaqEntry, off_topic_questions
from lmforge.assistant.retrieval import (
    Bm25Retriever,
    Embed,
    Retriever,
    TfidfRetriever,
    evaluate_retrieval,
)
from lmforge.errors import DataError

OFF_TOPIC_LANGUAGES = ("en", "zh")  # chatterbot-corpus has small talk in these


@dataclass(frozen=True)
class ProbeSet:
    """Questions, the entries they are asked of, and each question's right entry there."""

    name: str
    entries: list[FaqEntry]
    questions: list[str]
    gold: list[int]


def probe_sets(entries: Sequence[FaqEntry]) -> list[ProbeSet]:
    by_lang: dict[str, list[FaqEntry]] = {}
    for e in entries:
        by_lang.setdefault(e.lang, []).append(e)
    sets = []
    for src, asked in by_lang.items():
        for dst, index in by_lang.items():
            position = {e.key: i for i, e in enumerate(index)}
            pairs = [(e.question, position[e.key]) for e in asked if e.key in position]
            if src != dst and pairs:
                sets.append(
                    ProbeSet(
                        f"{src} question → {dst} entry",
                        index,
                        [q for q, _ in pairs],
                        [i for _, i in pairs],
                    )
                )
    if sets:
        return sets
    return [
        ProbeSet(
            f"{lang} question → answer",
            [replace(e, question="") for e in group],
            [e.question for e in group],
            list(range(len(group))),
        )
        for lang, group in by_lang.items()
    ]


class _Ranking(Retriever):
    """The assistant's own ranking, as a retriever for the shared metrics."""

    def __init__(self, assistant: Assistant) -> None:
        self.assistant = assistant

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        return self.assistant.scores(queries)[0]


@dataclass
class AssistantEvaluation:
    retrieval: list[dict[str, Any]]  # one row per probe set and retriever
    threshold: float
    tuned: bool  # tuned on half of the questions, or given
    held_out: ThresholdChoice  # measured on the other half (all questions when given)
    answered_right: float  # held-out in-domain questions answered with the right entry
    in_domain: list[float] = field(repr=False)  # best cosine of every in-domain question
    off_topic: list[float] = field(repr=False)  # best cosine of every off-topic question
    off_topic_count: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "retrieval": self.retrieval,
            "refusal": {
                "threshold": round(self.threshold, 4),
                "tuned": self.tuned,
                "in_domain_questions": len(self.in_domain),
                "off_topic_questions": self.off_topic_count,
                "held_out_answered_in_domain": round(self.held_out.answered_in_domain, 4),
                "held_out_refused_off_topic": round(self.held_out.refused_off_topic, 4),
                "held_out_balanced_accuracy": round(self.held_out.balanced_accuracy, 4),
                "held_out_answered_with_right_entry": round(self.answered_right, 4),
            },
        }


def evaluate_assistant(
    entries: Sequence[FaqEntry],
    embed: Embed,
    *,
    query_prefix: str = "",
    passage_prefix: str = "",
    threshold: float | None = None,
    seed: int = 0,
) -> AssistantEvaluation:
    """Retrieval (the assistant beside BM25 and TF-IDF) on every probe set, then the refusal
    threshold: tuned on half the questions when ``threshold`` is None, measured on the rest."""
    languages = sorted({e.lang for e in entries} & set(OFF_TOPIC_LANGUAGES)) or ["en"]
    off_questions = {lang: off_topic_questions(lang) for lang in languages}
    asked_off = [q for lang in languages for q in off_questions[lang]]
    retrieval: list[dict[str, Any]] = []
    in_domain: list[float] = []
    right: list[bool] = []
    off_topic: list[float] = []
    for probe in probe_sets(entries):
        assistant = Assistant(
            probe.entries, embed, query_prefix=query_prefix, passage_prefix=passage_prefix
        )
        passages = [e.passage.strip() for e in probe.entries]
        for name, retriever in (
            ("assistant", _Ranking(assistant)),
            ("BM25", Bm25Retriever(passages)),
            ("TF-IDF", TfidfRetriever(passages)),
        ):
            metrics = evaluate_retrieval(retriever, probe.questions, probe.gold)
            retrieval.append({"probe": probe.name, "retriever": name, **metrics.to_json()})
        ranking, cosines = assistant.scores(probe.questions)
        best = np.argmax(ranking, axis=1)
        in_domain += cosines[np.arange(len(best)), best].tolist()
        right += (best == np.asarray(probe.gold)).tolist()
        off_topic += [hits[0].score for hits in assistant.search(asked_off, k=1)]
    if not in_domain:
        raise DataError("the FAQ has no questions to evaluate", "give at least two entries")
    ins, offs = np.asarray(in_domain), np.asarray(off_topic)
    if threshold is None:
        rng = np.random.default_rng(seed)
        a, b = rng.permutation(len(ins)), rng.permutation(len(offs))
        tune_in, test_in, tune_off, test_off = a[::2], a[1::2], b[::2], b[1::2]
        if not len(test_in) or not len(tune_off):
            raise DataError(
                "too few questions to tune the refusal threshold on half and test it on the "
                "other half",
                "give an FAQ with at least two entries, or set assistant.threshold",
            )
        threshold = choose_threshold(ins[tune_in].tolist(), offs[tune_off].tolist()).threshold
        tuned = True
    else:
        test_in, test_off = np.arange(len(ins)), np.arange(len(offs))
        tuned = False
    held = evaluate_threshold(threshold, ins[test_in].tolist(), offs[test_off].tolist())
    answered_right = float(np.mean((ins[test_in] >= threshold) & np.asarray(right)[test_in]))
    return AssistantEvaluation(
        retrieval,
        threshold,
        tuned,
        held,
        answered_right,
        in_domain,
        off_topic,
        {lang: len(qs) for lang, qs in off_questions.items()},
    )
