"""The FAQ assistant: find the entry that answers a question, cite it, or refuse politely.

One multilingual encoder (multilingual-e5-small by default) embeds every entry, whatever its
language. A question is searched among the entries in its own language when there are any —
there dense and BM25 rankings are fused, since both see the same words — and across languages
otherwise (dense alone: BM25 cannot match words across languages; fusing it there measurably
hurts, see docs/benchmarks.md). Whether to answer is decided by the best entry's cosine
similarity against a threshold tuned on real in-domain and off-topic questions.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmforge.assistant.faq import FaqEntry
from lmforge.assistant.retrieval import Bm25Retriever, DenseRetriever, Embed, reciprocal_ranks
from lmforge.errors import CheckpointError, DataError, ModelNotFoundError
from lmforge.models.meta import META_FILE, ClassificationMeta, SimilarityMeta, read_model_meta

if TYPE_CHECKING:
    from lmforge.registry import Registry
    from lmforge.runtime.generation import GenerationEngine, SamplingParams

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


def grounded_request(
    engine: GenerationEngine, answer: Answer, max_tokens: int
) -> tuple[list[int], SamplingParams]:
    """The prompt token ids and sampling of a retrieval-augmented answer (greedy, a light
    repetition penalty): the chat of grounded_messages through the model's chat template, or,
    for a base model without one (gemma3-270m), the same words as a document that ends where
    the answer starts — and the answer then ends at its first blank line, where a base model
    would go on to write more questions and answers of its own."""
    from lmforge.runtime.generation import SamplingParams

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

    def scores(self, questions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ranking scores, cosines), each of shape (questions, entries). A question in a
        language the FAQ holds ranks only that language's entries (fused dense + BM25; the
        others at -inf); otherwise every entry by cosine."""
        cosines = self._dense.scores(questions)
        ranking = np.full(cosines.shape, -np.inf, dtype=np.float64)
        for i, (question, row) in enumerate(zip(questions, cosines, strict=True)):
            lang = question_language(question)
            if lang in self._by_lang:
                members, bm25 = self._by_lang[lang]
                lexical = bm25.scores([question])[0]
                ranking[i, members] = reciprocal_ranks(row[members]) + reciprocal_ranks(lexical)
            else:
                ranking[i] = row
        return ranking, cosines

    def search(self, questions: Sequence[str], k: int = 3) -> list[list[Hit]]:
        """The ``k`` best entries per question, best first, each with its cosine similarity."""
        ranking, cosines = self.scores(questions)
        out = []
        for row, cos in zip(ranking, cosines, strict=True):
            order = np.argsort(-row, kind="stable")[: min(k, int(np.isfinite(row).sum()))]
            out.append([Hit(self.entries[i], float(cos[i])) for i in order])
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


@dataclass(frozen=True)
class EncoderChoice:
    """The encoder an assistant retrieves with, and the prefixes it was trained to see."""

    ref: str  # a catalogue name, a folder, or a registered similarity model's NAME:vN
    path: Path
    query_prefix: str
    passage_prefix: str
    in_catalogue: bool  # stored by name in a registered assistant; else copied into it


def resolve_encoder(ref: str, cache_dir: Path, registry: Registry | None = None) -> EncoderChoice:
    """A catalogue encoder, a local Hugging Face encoder folder, or a registered similarity
    model (from a similarity recipe), with the query/passage prefixes it expects."""
    from lmforge.models.catalogue import CATALOGUE, resolve_base

    entry = CATALOGUE.get(ref)
    if entry is not None:
        if entry.kind != "encoder":
            raise ModelNotFoundError(
                f"{ref} is a {entry.kind}; the assistant retrieves with an encoder",
                "use multilingual-e5-small, minilm-l6 or a registered similarity model",
            )
        base = resolve_base(ref, cache_dir)
        passage = "passage: " if base.text_prefix == "query: " else base.text_prefix
        return EncoderChoice(ref, base.path, base.text_prefix, passage, True)
    folder = Path(ref).expanduser()
    if not (folder / "config.json").is_file() and registry is not None:
        try:
            version = registry.get(ref)
        except ModelNotFoundError:
            version = None
        if version is not None:
            if version.task != "similarity":
                raise ModelNotFoundError(
                    f"{version.ref} (task {version.task}) is not a similarity model",
                    "use a version registered by a similarity recipe, or a catalogue encoder",
                )
            folder, ref = version.path, version.ref
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(
            f"unknown encoder '{ref}'",
            "use multilingual-e5-small, minilm-l6, a Hugging Face folder or a registered "
            "similarity model",
        )
    query = passage = ""  # a plain Hugging Face folder: no prefixes
    if (folder / META_FILE).is_file():
        meta = read_model_meta(folder)
        if isinstance(meta, SimilarityMeta):
            query, passage = meta.text_prefix, meta.passage
        elif isinstance(meta, ClassificationMeta):
            query = passage = meta.text_prefix
    return EncoderChoice(ref, folder, query, passage, False)


def build_assistant(
    faq: str,
    *,
    encoder: str = "multilingual-e5-small",
    threshold: float = DEFAULT_THRESHOLD,
    cache_dir: Path | None = None,
) -> Assistant:
    """An assistant over an FAQ source (built-in name or file) with an encoder (see
    :func:`resolve_encoder`)."""
    from lmforge.assistant.faq import load_faq
    from lmforge.registry import Registry
    from lmforge.runtime.embedder import Embedder
    from lmforge.settings import get_settings

    entries = load_faq(faq)
    choice = resolve_encoder(encoder, cache_dir or get_settings().cache_dir, Registry())
    return Assistant(
        entries,
        Embedder(choice.path).embed,
        query_prefix=choice.query_prefix,
        passage_prefix=choice.passage_prefix,
        threshold=threshold,
    )


ASSISTANT_FILE = "assistant.json"  # what a registered assistant's folder is read from


def save_assistant(
    folder: Path,
    entries: list[FaqEntry],
    encoder: EncoderChoice,
    threshold: float,
    top_k: int,
) -> None:
    """A self-contained assistant: its FAQ snapshot, its settings and, unless the encoder is a
    catalogue one, a copy of the encoder."""
    from lmforge.assistant.faq import save_faq

    folder.mkdir(parents=True, exist_ok=True)
    save_faq(entries, folder / "faq.jsonl")
    if not encoder.in_catalogue:
        shutil.copytree(encoder.path, folder / "encoder")
    spec = {
        "encoder": encoder.ref if encoder.in_catalogue else "encoder",
        "encoder_source": encoder.ref,
        "query_prefix": encoder.query_prefix,
        "passage_prefix": encoder.passage_prefix,
        "threshold": threshold,
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
    the registered values)."""
    from lmforge.assistant.faq import load_faq
    from lmforge.models.catalogue import resolve_base
    from lmforge.runtime.embedder import Embedder

    try:
        spec = json.loads((folder / ASSISTANT_FILE).read_text())
        encoder = spec["encoder"]
        path = folder / "encoder" if encoder == "encoder" else resolve_base(encoder, cache_dir).path
        entries = load_faq(folder / "faq.jsonl")
        assistant = Assistant(
            entries,
            Embedder(path).embed,
            query_prefix=str(spec["query_prefix"]),
            passage_prefix=str(spec["passage_prefix"]),
            threshold=float(spec["threshold"] if threshold is None else threshold),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"the assistant in {folder} cannot be opened ({type(exc).__name__}: {exc})",
            "register it again with `lmforge run` of its recipe",
        ) from exc
    return OpenedAssistant(assistant, int(top_k or spec["top_k"]), str(spec["encoder_source"]))
