"""Questions as users type them, to measure an FAQ assistant on: the shipped Debian FAQ set
(``data/debian_faq_questions.jsonl``, its card beside it), the figures reported on it
(answer-correct@1, off-topic refusal, per language) and the per-language threshold tuned on its
tuning part.

A question is in-domain (the FAQ answers it; its right sections are listed) or off-topic (it
must be refused). Answer-correct@1 is the share of in-domain questions answered with a right
section: a refusal counts as wrong. Every row carries a stable ``split`` (``tune`` or
``test``); anything tuned is tuned on ``tune`` rows, figures are reported on ``test`` rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lmforge.errors import DataError

QUESTIONS_FILE = Path(__file__).parent / "data" / "debian_faq_questions.jsonl"
Split = Literal["tune", "test"]


@dataclass(frozen=True)
class UserQuestion:
    id: str
    split: str  # "tune" or "test"
    lang: str
    kind: str  # "in_domain" or "off_topic"
    question: str
    sections: tuple[str, ...]  # the FAQ keys that answer it; empty when off-topic

    @property
    def in_domain(self) -> bool:
        return self.kind == "in_domain"


def load_questions(path: Path = QUESTIONS_FILE, split: Split | None = None) -> list[UserQuestion]:
    """The rows of a question file (JSONL, the format of the shipped one), of one split or all;
    a one-line error naming the first bad row."""
    questions: list[UserQuestion] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(
            f"cannot read the question file {path} ({exc})", "give a JSONL file"
        ) from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            question = UserQuestion(
                str(row["id"]),
                str(row["split"]),
                str(row["lang"]),
                str(row["kind"]),
                str(row["question"]),
                tuple(str(s) for s in row.get("sections") or ()),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"{path.name} line {number} is not a question row ({type(exc).__name__}: {exc})",
                "each line needs id, split, lang, kind, question and, in-domain, sections",
            ) from exc
        if question.kind not in ("in_domain", "off_topic") or question.split not in (
            "tune",
            "test",
        ):
            raise DataError(
                f"{path.name} line {number}: kind {question.kind!r} / split {question.split!r}",
                "kind is in_domain or off_topic, split is tune or test",
            )
        if question.in_domain != bool(question.sections):
            raise DataError(
                f"{path.name} line {number}: an in-domain question needs sections, an "
                "off-topic one none",
                "list the FAQ sections that answer it, or mark it off_topic",
            )
        questions.append(question)
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):
        raise DataError(f"{path.name} repeats question ids", "give every row its own id")
    return [q for q in questions if split is None or q.split == split]


@dataclass(frozen=True)
class Outcome:
    """What an assistant did with one question: the best entry's key and score, and whether it
    answered (the score reached the threshold)."""

    key: str | None
    score: float
    answered: bool


@dataclass(frozen=True)
class LanguageFigures:
    in_domain: int
    off_topic: int
    correct_at_1: float  # in-domain questions answered with a right section
    answered_in_domain: float  # in-domain questions answered at all
    refused_off_topic: float

    def to_json(self) -> dict[str, Any]:
        return {
            "in_domain": self.in_domain,
            "off_topic": self.off_topic,
            "correct@1": round(self.correct_at_1, 4),
            "answered_in_domain": round(self.answered_in_domain, 4),
            "refused_off_topic": round(self.refused_off_topic, 4),
        }


def figures(
    questions: Sequence[UserQuestion], outcomes: Sequence[Outcome]
) -> dict[str, LanguageFigures]:
    """Answer-correct@1 and off-topic refusal per question language."""
    if len(questions) != len(outcomes):
        raise ValueError("one outcome per question")
    out: dict[str, LanguageFigures] = {}
    for lang in sorted({q.lang for q in questions}):
        ins = [
            (q, o)
            for q, o in zip(questions, outcomes, strict=True)
            if q.lang == lang and q.in_domain
        ]
        offs = [
            o
            for q, o in zip(questions, outcomes, strict=True)
            if q.lang == lang and not q.in_domain
        ]
        out[lang] = LanguageFigures(
            len(ins),
            len(offs),
            _mean(o.answered and o.key in q.sections for q, o in ins),
            _mean(o.answered for _, o in ins),
            _mean(not o.answered for o in offs),
        )
    return out


def _mean(values: Iterable[bool]) -> float:
    items = list(values)
    return float(np.mean(items)) if items else float("nan")


def tune_threshold(in_domain: Sequence[tuple[float, bool]], off_topic: Sequence[float]) -> float:
    """The cut on the best entry's score that answers the most in-domain questions rightly and
    refuses the most off-topic ones (the mean of the two shares; ``in_domain`` is (score, the
    best entry is right)); where a range of cuts does equally well, its middle, which leaves the
    widest margin on both sides."""
    if not in_domain or not off_topic:
        raise ValueError("need in-domain and off-topic questions to tune a threshold on")
    scores = np.array([s for s, _ in in_domain])
    right = np.array([r for _, r in in_domain])
    offs = np.asarray(off_topic, dtype=np.float64)
    values = np.unique(np.concatenate([scores, offs]))
    cuts = np.concatenate([[values[0] - 1e-3], (values[1:] + values[:-1]) / 2, [values[-1] + 1e-3]])
    objective = np.array(
        [np.mean(right & (scores >= t)) + np.mean(offs < t) for t in cuts], dtype=np.float64
    )
    best = np.flatnonzero(np.isclose(objective, objective.max()))
    # The longest run of consecutive best cuts: every t in (values[first - 1], values[last]]
    # does as well; take the middle of that interval (its open ends: the outermost cuts).
    runs = np.split(best, np.flatnonzero(np.diff(best) > 1) + 1)
    run = max(runs, key=len)
    first, last = int(run[0]), int(run[-1])
    low = values[first - 1] if first > 0 else cuts[0]
    high = values[last] if last < len(values) else cuts[-1]
    return float((low + high) / 2)
