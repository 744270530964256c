"""The FAQ assistant: find the entry that answers a question, cite it, or refuse politely.

One multilingual encoder (multilingual-e5-small by default) embeds every entry, whatever its
language. A question is searched among the entries in its own language when there are any —
there dense and BM25 rankings are fused, since both see the same words — and across languages
otherwise (dense alone: BM25 cannot match words across languages; fusing it there measurably
hurts, see docs/benchmarks.md). Whether to answer is decided by the best entry's cosine
similarity against a threshold tuned on real in-domain and off-topic questions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.assistant.faq import FaqEntry
from lmforge.assistant.retrieval import Bm25Retriever, DenseRetriever, Embed, reciprocal_ranks
from lmforge.errors import DataError

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
REFUSALS = {
    "en": "Sorry, I could not find an answer to that in the FAQ. Try rephrasing the question, "
    "or contact support.",
    "zh": "抱歉，常见问题中没有找到相关的答案。请换一种问法，或联系客服。",
}
# multilingual-e5-small's cosines sit in a narrow band (≈ 0.7–0.95): the threshold below was
# tuned on the Debian FAQ against off-topic chatterbot questions (benchmarks/retrieval.py).
DEFAULT_THRESHOLD = 0.81


def question_language(text: str) -> str:
    return "zh" if _CJK.search(text) else "en"


@dataclass(frozen=True)
class Hit:
    entry: FaqEntry
    score: float  # cosine similarity of the question and the entry

    def to_json(self) -> dict[str, Any]:
        return {
            "question": self.entry.question,
            "citation": self.entry.citation,
            "lang": self.entry.lang,
            "score": round(self.score, 4),
        }


@dataclass(frozen=True)
class Answer:
    question: str
    answered: bool
    text: str  # the entry's answer, or the refusal
    hits: list[Hit]  # best first
    threshold: float
    generated: str | None = None  # an answer written by a decoder from the top entries

    @property
    def language(self) -> str:
        return question_language(self.question)

    def to_json(self) -> dict[str, Any]:
        best = self.hits[0] if self.hits else None
        return {
            "question": self.question,
            "answered": self.answered,
            "answer": self.text,
            "citation": best.entry.citation if best and self.answered else None,
            "score": round(best.score, 4) if best else None,
            "threshold": self.threshold,
            "sources": [h.to_json() for h in self.hits],
            "generated_answer": self.generated,
        }


GROUNDING = (
    "You are a customer-service assistant. Answer the customer's question in two or three "
    "sentences, using only the FAQ entries below. If they do not contain the answer, say that "
    "you do not know."
)


def grounded_messages(answer: Answer, entries: int = 2, chars: int = 1200) -> list[dict[str, str]]:
    """The chat for a retrieval-augmented answer: the best entries, then the question. Entries
    are cut to `chars` characters so that the prompt fits a small model's context."""
    context = "\n\n".join(
        f"[{i}] Q: {hit.entry.question}\nA: {hit.entry.answer[:chars]}"
        for i, hit in enumerate(answer.hits[:entries], 1)
    )
    return [
        {"role": "system", "content": GROUNDING},
        {"role": "user", "content": f"FAQ entries:\n{context}\n\nQuestion: {answer.question}"},
    ]


class Assistant:
    def __init__(
        self,
        entries: Sequence[FaqEntry],
        embed: Embed,
        *,
        query_prefix: str = "query: ",
        passage_prefix: str = "passage: ",
        threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        if not entries:
            raise DataError("the FAQ has no entries", "give a file with question/answer rows")
        self.entries = list(entries)
        self.threshold = threshold
        passages = [e.passage for e in self.entries]
        self._dense = DenseRetriever(
            passages, embed, query_prefix=query_prefix, passage_prefix=passage_prefix
        )
        self._by_lang: dict[str, tuple[np.ndarray, Bm25Retriever]] = {}
        for lang in sorted({e.lang for e in self.entries}):
            members = np.array([i for i, e in enumerate(self.entries) if e.lang == lang])
            self._by_lang[lang] = (members, Bm25Retriever([passages[i] for i in members]))

    def search(self, questions: Sequence[str], k: int = 3) -> list[list[Hit]]:
        """The ``k`` best entries per question, best first, each with its cosine similarity."""
        cosines = self._dense.scores(questions)
        out = []
        for question, row in zip(questions, cosines, strict=True):
            lang = question_language(question)
            if lang in self._by_lang:
                members, bm25 = self._by_lang[lang]
                lexical = bm25.scores([question])[0]
                fused = reciprocal_ranks(row[members]) + reciprocal_ranks(lexical)
                order = members[np.argsort(-fused, kind="stable")]
            else:
                order = np.argsort(-row, kind="stable")
            out.append([Hit(self.entries[i], float(row[i])) for i in order[:k]])
        return out

    def ask(self, questions: Sequence[str], k: int = 3) -> list[Answer]:
        answers = []
        for question, hits in zip(questions, self.search(questions, k), strict=True):
            answered = bool(hits) and hits[0].score >= self.threshold
            text = hits[0].entry.answer if answered else REFUSALS[question_language(question)]
            answers.append(Answer(question, answered, text, hits, self.threshold))
        return answers


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float
    answered_in_domain: float  # share of in-domain questions answered
    refused_off_topic: float  # share of off-topic questions refused

    @property
    def balanced_accuracy(self) -> float:
        return (self.answered_in_domain + self.refused_off_topic) / 2


def choose_threshold(in_domain: Sequence[float], off_topic: Sequence[float]) -> ThresholdChoice:
    """The cut on the best entry's score that best separates answerable questions from
    off-topic ones (balanced accuracy; the midpoint between neighbouring scores)."""
    if not in_domain or not off_topic:
        raise ValueError("need scores of in-domain and of off-topic questions")
    values = np.sort(np.concatenate([in_domain, off_topic]))
    candidates = np.concatenate([[values[0] - 1e-6], (values[1:] + values[:-1]) / 2])
    best: ThresholdChoice | None = None
    for t in candidates:
        choice = ThresholdChoice(
            float(t),
            float(np.mean(np.asarray(in_domain) >= t)),
            float(np.mean(np.asarray(off_topic) < t)),
        )
        if best is None or choice.balanced_accuracy > best.balanced_accuracy:
            best = choice
    assert best is not None
    return best


def evaluate_threshold(
    threshold: float, in_domain: Sequence[float], off_topic: Sequence[float]
) -> ThresholdChoice:
    return ThresholdChoice(
        threshold,
        float(np.mean(np.asarray(in_domain) >= threshold)),
        float(np.mean(np.asarray(off_topic) < threshold)),
    )


def build_assistant(
    faq: str,
    *,
    encoder: str = "multilingual-e5-small",
    threshold: float = DEFAULT_THRESHOLD,
    cache_dir: Path | None = None,
) -> Assistant:
    """An assistant over an FAQ source (built-in name or file) with a catalogue encoder."""
    from lmforge.assistant.faq import load_faq
    from lmforge.models.catalogue import resolve_base
    from lmforge.runtime.embedder import Embedder
    from lmforge.settings import get_settings

    entries = load_faq(faq)
    base = resolve_base(encoder, cache_dir or get_settings().cache_dir)
    embedder = Embedder(base.path)
    e5 = base.entry is not None and base.entry.text_prefix == "query: "
    return Assistant(
        entries,
        embedder.embed,
        query_prefix="query: " if e5 else "",
        passage_prefix="passage: " if e5 else "",
        threshold=threshold,
    )
