"""What an explanation holds: the prediction, one score per word, and how far to trust it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Method = Literal["ig", "attention", "occlusion"]
METHODS: tuple[Method, ...] = ("ig", "attention", "occlusion")

#: Integrated-gradients steps when none are asked for: completeness error at 32 steps is
#: measured in docs/benchmarks.md (explain).
DEFAULT_STEPS = 32


@dataclass
class WordScore:
    """One word and its attribution to the target label (positive: pushes towards it)."""

    word: str
    start: int
    end: int
    score: float

    def to_json(self) -> dict[str, Any]:
        return {"word": self.word, "start": self.start, "end": self.end, "score": self.score}


@dataclass
class Explanation:
    """Why ``model`` gives ``text`` the label it does.

    ``label``/``score`` are the served prediction (the version through its own backend);
    ``target`` is the label explained (the predicted one unless another was asked for);
    ``explained_with`` names the weights and backend the method ran on, and ``agrees`` whether
    that model predicts the same label as the served one (a gradient method on a compressed
    version runs on fp32 torch weights). For integrated gradients, ``completeness_error`` is
    |sum of attributions - (target logit of the text - target logit of the baseline)|:
    large against ``logit_difference`` means more ``steps`` are needed.
    """

    model: str
    backend: str
    method: Method
    text: str
    label: str
    score: float
    target: str
    explained_with: str
    agrees: bool
    words: list[WordScore]
    steps: int | None = None
    baseline: str | None = None
    completeness_error: float | None = None
    logit_difference: float | None = None
    truncated: bool = False
    attention: dict[str, Any] | None = field(default=None, repr=False)  # layers x heads x T x T

    def ranking(self) -> list[int]:
        """Word indices from the most to the least important (by score, ties by position)."""
        return sorted(range(len(self.words)), key=lambda i: (-self.words[i].score, i))

    def to_json(self) -> dict[str, Any]:
        """The ``lmforge explain --json`` document and the POST /v1/explain answer."""
        out: dict[str, Any] = {
            "model": self.model,
            "backend": self.backend,
            "method": self.method,
            "text": self.text,
            "label": self.label,
            "score": self.score,
            "target": self.target,
            "explained_with": self.explained_with,
            "agrees": self.agrees,
            "words": [w.to_json() for w in self.words],
            "truncated": self.truncated,
        }
        if self.method == "ig":
            out |= {
                "steps": self.steps,
                "baseline": self.baseline,
                "completeness_error": self.completeness_error,
                "logit_difference": self.logit_difference,
            }
        return out
