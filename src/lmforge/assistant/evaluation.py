"""How well an assistant over an FAQ finds answers and knows when to refuse, measured on the
FAQ itself and on real off-topic questions.

Questions must not be answered by finding their own text, so each probe set asks questions of
an index that holds the right entry but not the question's wording: each language's questions
are asked of its own entries with every entry's question left out (the answers alone, as the
assistant searches a question in a language the FAQ holds) — these calibrate the refusal
threshold of that language; and where entries in two languages share a key (the Debian FAQ's
section numbers), the questions of one language are also asked of the entries of the other (the
assistant's search for a language the FAQ lacks; retrieval figures only). Each language's
threshold is tuned on one half of its in-domain and off-topic questions (the best balanced
accuracy) and measured on the other half.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.assistant.assistant import Assistant
from lmforge.assistant.faq import FaqEntry, off_topic_questions
from lmforge.assistant.retrieval import (
    Bm25Retriever,
    Embed,
    Retriever,
    TfidfRetriever,
    evaluate_retrieval,
)
from lmforge.assistant.thresholds import ThresholdChoice, choose_threshold, evaluate_threshold
from lmforge.errors import DataError


@dataclass(frozen=True)
class ProbeSet:
    """Questions, the entries they are asked of, and each question's right entry there."""

    name: str
    entries: list[FaqEntry]
    questions: list[str]
    gold: list[int]
    calibrates: str | None = None  # the question language whose threshold it tunes


def probe_sets(entries: Sequence[FaqEntry]) -> list[ProbeSet]:
    by_lang: dict[str, list[FaqEntry]] = {}
    for e in entries:
        by_lang.setdefault(e.lang, []).append(e)
    sets = [
        ProbeSet(
            f"{lang} question → answer",
            [replace(e, question="") for e in group],
            [e.question for e in group],
            list(range(len(group))),
            calibrates=lang,
        )
        for lang, group in by_lang.items()
    ]
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
    return sets


class _Ranking(Retriever):
    """The assistant's own ranking, as a retriever for the shared metrics."""

    def __init__(self, assistant: Assistant) -> None:
        self.assistant = assistant

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        return self.assistant.scores(queries)


@dataclass(frozen=True)
class LanguageRefusal:
    """One question language's threshold and its held-out shares."""

    threshold: float
    held_out: ThresholdChoice  # measured on the other half (all questions when given)
    answered_right: float  # held-out in-domain questions answered with the right entry
    in_domain: list[float] = field(repr=False)  # best score of every in-domain question
    off_topic: list[float] = field(repr=False)  # best score of every off-topic question

    def to_json(self) -> dict[str, Any]:
        return {
            "threshold": round(self.threshold, 4),
            "in_domain_questions": len(self.in_domain),
            "off_topic_questions": len(self.off_topic),
            "held_out_answered_in_domain": round(self.held_out.answered_in_domain, 4),
            "held_out_refused_off_topic": round(self.held_out.refused_off_topic, 4),
            "held_out_balanced_accuracy": round(self.held_out.balanced_accuracy, 4),
            "held_out_answered_with_right_entry": round(self.answered_right, 4),
        }


@dataclass
class AssistantEvaluation:
    retrieval: list[dict[str, Any]]  # one row per probe set and retriever
    languages: dict[str, LanguageRefusal]  # per question language
    tuned: bool  # tuned on half of the questions, or given

    @property
    def thresholds(self) -> dict[str, float]:
        return {lang: r.threshold for lang, r in self.languages.items()}

    @property
    def threshold(self) -> float:
        """The threshold of English questions, else of the first language (the one figure a
        registry row shows)."""
        return (self.languages.get("en") or next(iter(self.languages.values()))).threshold

    def pooled(self) -> dict[str, float]:
        """Held-out shares over every language's questions together (weighted by count)."""
        rows = list(self.languages.values())
        ins = sum(len(r.in_domain) for r in rows) or 1
        offs = sum(len(r.off_topic) for r in rows) or 1
        answered = sum(r.held_out.answered_in_domain * len(r.in_domain) for r in rows) / ins
        refused = sum(r.held_out.refused_off_topic * len(r.off_topic) for r in rows) / offs
        return {
            "answered_in_domain": answered,
            "refused_off_topic": refused,
            "balanced_accuracy": (answered + refused) / 2,
            "answered_right": sum(r.answered_right * len(r.in_domain) for r in rows) / ins,
        }

    def to_json(self) -> dict[str, Any]:
        pooled = self.pooled()
        return {
            "retrieval": self.retrieval,
            "refusal": {
                "threshold": round(self.threshold, 4),
                "thresholds": {lang: round(t, 4) for lang, t in self.thresholds.items()},
                "tuned": self.tuned,
                "in_domain_questions": sum(len(r.in_domain) for r in self.languages.values()),
                "off_topic_questions": {
                    lang: len(r.off_topic) for lang, r in self.languages.items()
                },
                "held_out_answered_in_domain": round(pooled["answered_in_domain"], 4),
                "held_out_refused_off_topic": round(pooled["refused_off_topic"], 4),
                "held_out_balanced_accuracy": round(pooled["balanced_accuracy"], 4),
                "held_out_answered_with_right_entry": round(pooled["answered_right"], 4),
                "languages": {lang: r.to_json() for lang, r in self.languages.items()},
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
    index_cache: Path | None = None,
    encoder_key: str = "",
    cross_lingual: bool = True,
) -> AssistantEvaluation:
    """Retrieval (the assistant beside BM25 and TF-IDF) on every probe set, then a refusal
    threshold per question language: tuned on half its questions when ``threshold`` is None,
    measured on the rest. ``index_cache``/``encoder_key``: see :class:`Assistant`;
    ``cross_lingual`` False skips the probes that only add retrieval figures."""
    retrieval: list[dict[str, Any]] = []
    languages: dict[str, LanguageRefusal] = {}
    for probe in probe_sets(entries):
        if probe.calibrates is None and not cross_lingual:
            continue
        assistant = Assistant(
            probe.entries,
            embed,
            query_prefix=query_prefix,
            passage_prefix=passage_prefix,
            index_cache=index_cache,
            encoder_key=encoder_key,
        )
        passages = [e.passage.strip() for e in probe.entries]
        for name, retriever in (
            ("assistant", _Ranking(assistant)),
            ("BM25", Bm25Retriever(passages)),
            ("TF-IDF", TfidfRetriever(passages)),
        ):
            metrics = evaluate_retrieval(retriever, probe.questions, probe.gold)
            retrieval.append({"probe": probe.name, "retriever": name, **metrics.to_json()})
        if probe.calibrates is None:
            continue
        scores = assistant.scores(probe.questions)
        best = np.argmax(scores, axis=1)
        in_domain = scores[np.arange(len(best)), best]
        right = best == np.asarray(probe.gold)
        asked_off = off_topic_questions(probe.calibrates, fallback="en")
        off_topic = np.max(assistant.scores(asked_off), axis=1)
        languages[probe.calibrates] = _refusal(in_domain, right, off_topic, threshold, seed)
    return AssistantEvaluation(retrieval, languages, threshold is None)


def _refusal(
    ins: np.ndarray, right: np.ndarray, offs: np.ndarray, threshold: float | None, seed: int
) -> LanguageRefusal:
    if threshold is None:
        rng = np.random.default_rng(seed)
        a, b = rng.permutation(len(ins)), rng.permutation(len(offs))
        tune_in, test_in, tune_off, test_off = a[::2], a[1::2], b[::2], b[1::2]
        if not len(test_in) or not len(tune_off):
            raise DataError(
                "too few questions to tune the refusal threshold on half and test it on the "
                "other half",
                "give an FAQ with at least two entries a language, or set assistant.threshold",
            )
        threshold = choose_threshold(ins[tune_in].tolist(), offs[tune_off].tolist()).threshold
    else:
        test_in, test_off = np.arange(len(ins)), np.arange(len(offs))
    held = evaluate_threshold(threshold, ins[test_in].tolist(), offs[test_off].tolist())
    answered_right = float(np.mean((ins[test_in] >= threshold) & right[test_in]))
    return LanguageRefusal(threshold, held, answered_right, ins.tolist(), offs.tolist())
