"""Why an alert's headlines were scored negative: each one explained by occlusion — the drop in
the negative probability when a word is removed — by the version that scored it, through its
own backend. Of the methods measured, occlusion was the most faithful on this kind of model and
the cheapest, and it needs no torch weights (docs/benchmarks.md, "Faithfulness").

An explanation that fails (the version is gone, a damaged folder) is recorded as its error:
it never keeps an alert from being raised.
"""

from __future__ import annotations

from typing import Any

from lmforge.errors import LmforgeError
from lmforge.explain import Explainer, load_explainer
from lmforge.finance.store import ScoredHeadline
from lmforge.settings import Settings

__all__ = ["HeadlineExplainer"]

TARGET = "negative"  # a surge alert is about the negative share


class HeadlineExplainer:
    """Explains headlines by the versions that scored them (each loaded once): the ``words``
    words that pushed a headline most towards negative."""

    def __init__(self, settings: Settings | None = None, words: int = 5) -> None:
        self.settings = settings
        self.words = words
        self._explainers: dict[str, Explainer] = {}

    def __call__(self, headline: ScoredHeadline) -> dict[str, Any] | None:
        """``{"method", "target", "words": [{"word", "score"}]}`` (words that raised the
        negative probability, strongest first), ``{"error"}``, or None for a headline no
        registered version scored (a lexicon's)."""
        if headline.version is None:
            return None
        ref = f"{headline.model}:v{headline.version}"
        try:
            if ref not in self._explainers:
                self._explainers[ref] = load_explainer(ref, self.settings)
            explanation = self._explainers[ref].explain(headline.text, "occlusion", target=TARGET)
        except LmforgeError as exc:
            return {"error": exc.problem}
        pushing = sorted((w for w in explanation.words if w.score > 0), key=lambda w: -w.score)
        return {
            "method": "occlusion",
            "target": TARGET,
            "words": [{"word": w.word, "score": w.score} for w in pushing[: self.words]],
        }
