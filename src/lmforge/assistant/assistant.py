"""The FAQ assistant: find the entry that answers a question, cite it, answer with its most
relevant passage, or refuse politely.

One multilingual encoder (multilingual-e5-small by default) embeds every entry and every passage
of its answer (see :mod:`lmforge.assistant.passages`), whatever its language. A question is
searched among the entries in its own language when there are any, and across languages
otherwise. An entry's score is the mean of the question's cosine similarity with the entry's
best passage (the whole entry counting as one) and with the entry's own question, embedded as a
question (users mostly paraphrase an FAQ's questions; on the tuning questions this lifted
English hit@1 from 74 % to 96 %): that one score orders the entries, is shown with each of them,
and is compared with the threshold of the question's language to answer or refuse.
The thresholds are per language because one encoder's cosines sit higher for some languages
than for others (multilingual-e5-small: Chinese small talk scores ~0.85 against the Chinese FAQ,
English small talk ~0.83 against the English one); they were tuned on the tuning part of the
shipped user questions (``benchmarks/assistant_questions.py``, docs/benchmarks.md). Lexical
(BM25) scores are not mixed in: a fused rank has no scale a threshold could apply to, and on the
tuning questions it ranked worse than passage-level dense scores.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmforge.assistant.explanation import Explanation, explain_match
from lmforge.assistant.faq import FaqEntry, load_faq, save_faq
from lmforge.assistant.passages import cached_embed, split_passages
from lmforge.assistant.retrieval import Embed
from lmforge.assistant.thresholds import (
    DEFAULT_THRESHOLD,
    DEFAULT_THRESHOLDS,
    LANGUAGES,
    Threshold,
    ThresholdChoice,
    choose_threshold,
    evaluate_threshold,
    language_thresholds,
)
from lmforge.errors import CheckpointError, DataError
from lmforge.registry import Registry
from lmforge.registry.refs import resolve_model
from lmforge.runtime.embedder import Embedder
from lmforge.settings import get_settings

__all__ = [  # the threshold names are re-exported: callers import them from here
    "DEFAULT_THRESHOLD",
    "DEFAULT_THRESHOLDS",
    "LANGUAGES",
    "Assistant",
    "Threshold",
    "ThresholdChoice",
    "build_assistant",
    "choose_threshold",
    "evaluate_threshold",
    "language_thresholds",
    "open_assistant",
]

if TYPE_CHECKING:
    from lmforge.runtime.generation import GenerationEngine, SamplingParams

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
REFUSALS = {
    "en": "Sorry, I could not find an answer to that in the FAQ. Try rephrasing the question, "
    "or contact support.",
    "zh": "抱歉，常见问题中没有找到相关的答案。请换一种问法，或联系客服。",
}


def question_language(text: str) -> str:
    return "zh" if _CJK.search(text) else "en"


@dataclass(frozen=True)
class Hit:
    entry: FaqEntry
    score: float  # the entry's score (see the module docstring): orders the hits
    passage: str = ""  # that passage of the entry's answer (the whole answer if not split)

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
    text: str  # the best passage of the cited entry's answer, or the refusal
    hits: list[Hit]  # best first, by the score compared with the threshold
    threshold: float  # the threshold of the question's language
    generated: str | None = None  # an answer written by a decoder from the top entries
    explanation: Explanation | None = None  # the winner, runner-up and shared words

    @property
    def language(self) -> str:
        return question_language(self.question)

    def to_json(self, explain: bool = False) -> dict[str, Any]:
        """The answer as JSON; with `explain`, its explanation under "explanation"."""
        best = self.hits[0] if self.hits else None
        why = self.explanation.to_json() if explain and self.explanation else None
        return {
            "question": self.question,
            "answered": self.answered,
            "answer": self.text,
            "full_answer": best.entry.answer if best and self.answered else None,
            "citation": best.entry.citation if best and self.answered else None,
            "score": round(best.score, 4) if best else None,
            "threshold": self.threshold,
            "language": self.language,
            "sources": [h.to_json() for h in self.hits],
            "generated_answer": self.generated,
            **({"explanation": why} if explain else {}),
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


def grounded_request(
    engine: GenerationEngine, answer: Answer, max_tokens: int
) -> tuple[list[int], SamplingParams]:
    """The prompt token ids and sampling of a retrieval-augmented answer (greedy, a light
    repetition penalty): the chat of grounded_messages through the model's chat template, or,
    for a base model without one (gemma3-270m), the same words as a document that ends where
    the answer starts — and the answer then ends at its first blank line, where a base model
    would go on to write more questions and answers of its own."""
    from lmforge.runtime.generation import SamplingParams  # torch: only when generating

    messages = grounded_messages(answer)
    chat = bool(getattr(engine.tokenizer, "chat_template", None))
    if chat:
        prompt = engine.encode_chat(messages)
    else:
        prompt = engine.encode("\n\n".join(m["content"] for m in messages) + "\nAnswer:")
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=0,
        repetition_penalty=1.1,
        stop=() if chat else ("\n\n", "\nQ:", "\nQuestion:"),
    )
    return prompt, params


class Assistant:
    def __init__(
        self,
        entries: Sequence[FaqEntry],
        embed: Embed,
        *,
        query_prefix: str = "query: ",
        passage_prefix: str = "passage: ",
        threshold: Threshold | None = None,
        index_cache: Path | None = None,
        encoder_key: str = "",
    ) -> None:
        """``threshold``: see :func:`language_thresholds`. ``index_cache``: a folder where the
        embedded passages are kept for the next start, named by ``encoder_key`` (what
        identifies the encoder's weights) and the texts."""
        if not entries:
            raise DataError("the FAQ has no entries", "give a file with question/answer rows")
        self.entries = list(entries)
        self.thresholds = language_thresholds(threshold)
        self._embed = embed
        self.query_prefix = query_prefix
        self.passages = [split_passages(e.answer, e.lang) or [e.answer] for e in self.entries]
        texts = [passage_prefix + e.passage.strip() for e in self.entries]
        owner: list[int] = []
        for i, (entry, parts) in enumerate(zip(self.entries, self.passages, strict=True)):
            texts += [passage_prefix + f"{entry.question}\n{p}".strip() for p in parts]
            owner += [i] * len(parts)
        vectors = cached_embed(embed, texts, index_cache, f"{encoder_key}|{query_prefix}")
        self._entry_vectors = vectors[: len(self.entries)]
        self._passage_vectors = vectors[len(self.entries) :]
        self._owner = np.asarray(owner)
        # An entry's question is also embedded as a question (the query prefix): a user's
        # question is most often a paraphrase of it, which symmetric matching finds best.
        self._titled = np.flatnonzero([bool(e.question.strip()) for e in self.entries])
        titles = [query_prefix + self.entries[i].question for i in self._titled]
        self._title_vectors = (
            cached_embed(embed, titles, index_cache, f"{encoder_key}|titles")
            if titles
            else np.zeros((0, vectors.shape[1]), dtype=vectors.dtype)
        )
        self._by_lang = {
            lang: np.array([i for i, e in enumerate(self.entries) if e.lang == lang])
            for lang in sorted({e.lang for e in self.entries})
        }

    @property
    def threshold(self) -> float:
        """The threshold of English questions (the one value older callers read)."""
        return self.thresholds["en"]

    def _passage_scores(self, questions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(entry scores, passage cosines): an entry's score is the mean of two cosines — with
        its best text (the whole entry or one of its passages) and with its question asked as a
        question — or the first alone for an entry without a question; entries outside a
        question's language (when the FAQ holds that language) are at -inf."""
        queries = self._embed([self.query_prefix + q for q in questions])
        passages = np.asarray(queries @ self._passage_vectors.T, dtype=np.float64)
        scores = np.asarray(queries @ self._entry_vectors.T, dtype=np.float64)
        for row, cosines in zip(scores, passages, strict=True):
            np.maximum.at(row, self._owner, cosines)
        if len(self._titled):
            titles = np.asarray(queries @ self._title_vectors.T, dtype=np.float64)
            scores[:, self._titled] = (scores[:, self._titled] + titles) / 2
        for i, question in enumerate(questions):
            members = self._by_lang.get(question_language(question))
            if members is not None:
                outside = np.ones(len(self.entries), dtype=bool)
                outside[members] = False
                scores[i, outside] = -np.inf
        return scores, passages

    def scores(self, questions: Sequence[str]) -> np.ndarray:
        """Each entry's score for each question, shape (questions, entries): the cosine with
        its best passage, -inf for entries outside the question's language when the FAQ holds
        that language (see the module docstring)."""
        return self._passage_scores(questions)[0]

    def search(self, questions: Sequence[str], k: int = 3) -> list[list[Hit]]:
        """The ``k`` best entries per question, best first, each with its score and best
        passage."""
        scores, passages = self._passage_scores(questions)
        out = []
        for row, cosines in zip(scores, passages, strict=True):
            order = np.argsort(-row, kind="stable")[: min(k, int(np.isfinite(row).sum()))]
            hits = []
            for i in order:
                mine = np.flatnonzero(self._owner == i)
                best = self.passages[i][int(np.argmax(cosines[mine]))]
                hits.append(Hit(self.entries[i], float(row[i]), best))
            out.append(hits)
        return out

    def ask(self, questions: Sequence[str], k: int = 3) -> list[Answer]:
        """Each question's answer with its ``k`` best hits and its explanation (which needs the
        runner-up, so two entries are always searched)."""
        answers = []
        for question, hits in zip(questions, self.search(questions, max(k, 2)), strict=True):
            lang = question_language(question)
            threshold = self.thresholds[lang]
            answered = bool(hits) and hits[0].score >= threshold
            text = hits[0].passage if answered else REFUSALS[lang]
            ranked = [(h.entry, h.score) for h in hits[:2]]
            why = explain_match(question, ranked, threshold, answered, lang)
            answers.append(Answer(question, answered, text, hits[:k], threshold, explanation=why))
        return answers


@dataclass(frozen=True)
class EncoderChoice:
    """The encoder an assistant retrieves with, and the prefixes it was trained to see."""

    ref: str  # a catalogue name, a folder, or a registered similarity model's NAME:vN
    path: Path
    query_prefix: str
    passage_prefix: str
    in_catalogue: bool  # stored by name in a registered assistant; else copied into it


def resolve_encoder(ref: str, cache_dir: Path, registry: Registry | None = None) -> EncoderChoice:
    """A catalogue encoder, a local Hugging Face encoder folder, or (given a registry) a
    registered similarity model (from a similarity recipe), with the query/passage prefixes it
    expects (see :func:`lmforge.registry.refs.resolve_model`)."""
    found = resolve_model(ref, "encoder", registry=registry, registered=registry is not None)
    return EncoderChoice(
        found.ref,
        found.locate(cache_dir),
        found.text_prefix,
        found.passage_prefix,
        found.source == "catalogue",
    )


def index_cache_dir(cache_dir: Path) -> Path:
    """Where embedded FAQ passages are kept between starts (see :func:`cached_embed`)."""
    return cache_dir / "assistant-index"


def encoder_key(path: Path) -> str:
    """What names an encoder's weights in the index cache: the file's path, size and time."""
    weights = path / "model.safetensors"
    try:
        stat = weights.stat()
    except OSError:
        return str(weights)
    return f"{weights.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def build_assistant(
    faq: str,
    *,
    encoder: str = "multilingual-e5-small",
    threshold: Threshold | None = None,
    cache_dir: Path | None = None,
) -> Assistant:
    """An assistant over an FAQ source (built-in name or file) with an encoder (see
    :func:`resolve_encoder`); ``threshold`` None: the per-language defaults."""
    entries = load_faq(faq)
    cache = cache_dir or get_settings().cache_dir
    choice = resolve_encoder(encoder, cache, Registry())
    return Assistant(
        entries,
        Embedder(choice.path).embed,
        query_prefix=choice.query_prefix,
        passage_prefix=choice.passage_prefix,
        threshold=threshold,
        index_cache=index_cache_dir(cache),
        encoder_key=encoder_key(choice.path),
    )


ASSISTANT_FILE = "assistant.json"  # what a registered assistant's folder is read from


def save_assistant(
    folder: Path,
    entries: list[FaqEntry],
    encoder: EncoderChoice,
    thresholds: Mapping[str, float],
    top_k: int,
) -> None:
    """A self-contained assistant: its FAQ snapshot, its settings (a threshold per question
    language) and, unless the encoder is a catalogue one, a copy of the encoder."""
    folder.mkdir(parents=True, exist_ok=True)
    save_faq(entries, folder / "faq.jsonl")
    if not encoder.in_catalogue:
        shutil.copytree(encoder.path, folder / "encoder")
    spec = {
        "encoder": encoder.ref if encoder.in_catalogue else "encoder",
        "encoder_source": encoder.ref,
        "query_prefix": encoder.query_prefix,
        "passage_prefix": encoder.passage_prefix,
        "threshold": language_thresholds(thresholds)["en"],  # read by older versions
        "thresholds": dict(thresholds),
        "top_k": top_k,
    }
    (folder / ASSISTANT_FILE).write_text(json.dumps(spec, indent=1, ensure_ascii=False))


@dataclass(frozen=True)
class OpenedAssistant:
    assistant: Assistant
    top_k: int
    encoder: str


def open_assistant(
    folder: Path, cache_dir: Path, threshold: float | None = None, top_k: int | None = None
) -> OpenedAssistant:
    """A registered assistant's folder, ready to answer (``threshold`` and ``top_k`` override
    the registered values; a registered assistant from before per-language thresholds has one
    for all languages)."""
    try:
        spec = json.loads((folder / ASSISTANT_FILE).read_text())
        encoder = spec["encoder"]
        path = (
            folder / "encoder"
            if encoder == "encoder"
            else resolve_model(encoder, "encoder", registered=False).locate(cache_dir)
        )
        entries = load_faq(folder / "faq.jsonl")
        registered: Threshold = spec.get("thresholds") or float(spec["threshold"])
        assistant = Assistant(
            entries,
            Embedder(path).embed,
            query_prefix=str(spec["query_prefix"]),
            passage_prefix=str(spec["passage_prefix"]),
            threshold=registered if threshold is None else threshold,
            index_cache=index_cache_dir(cache_dir),
            encoder_key=encoder_key(path),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"the assistant in {folder} cannot be opened ({type(exc).__name__}: {exc})",
            "register it again with `lmforge run` of its recipe",
        ) from exc
    return OpenedAssistant(assistant, int(top_k or spec["top_k"]), str(spec["encoder_source"]))
