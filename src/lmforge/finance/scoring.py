"""Scoring headlines with a registered three-class sentiment model, in batches.

The model is resolved through :func:`lmforge.registry.refs.resolve_model` (``NAME``,
``NAME:vN``, ``NAME:production``) as a classifier and must have exactly the labels negative,
neutral and positive; any other model — another task, or a classifier of other labels — is
refused by name before anything is scored. Scoring runs through the runtime's
:class:`~lmforge.runtime.predictor.Predictor` (the version's own backend, batching by length)
and adds each headline's entities from the gazetteer.
"""

from __future__ import annotations

from collections.abc import Sequence

from lmforge.errors import LmforgeError
from lmforge.finance.entities import Gazetteer, load_gazetteer
from lmforge.finance.ingest import Headline
from lmforge.finance.store import ScoredHeadline
from lmforge.registry.refs import resolve_model
from lmforge.registry.store import ModelVersion
from lmforge.runtime.predictor import Prediction, Predictor
from lmforge.settings import Settings

__all__ = ["SENTIMENT_LABELS", "Scorer", "check_sentiment_model", "scored_headlines"]

SENTIMENT_LABELS = ("negative", "neutral", "positive")


def check_sentiment_model(ref: str, settings: Settings | None = None) -> ModelVersion:
    """The registered version ``ref`` names, if it is a negative/neutral/positive classifier;
    otherwise a one-line error naming it and what it is."""
    found = resolve_model(ref, "classifier", settings, folders=False)
    version = found.version
    if version is None:  # a classifier is only ever registered
        raise LmforgeError(
            f"'{ref}' is not a registered model", "name one from lmforge models list"
        )
    if sorted(version.labels) != sorted(SENTIMENT_LABELS):
        raise LmforgeError(
            f"{version.ref} is not a three-class sentiment model: its labels are "
            f"{', '.join(version.labels) or 'none'}",
            "the finance monitor needs exactly negative, neutral and positive — train one with "
            "examples/finance-sentiment.yaml",
        )
    return version


def scored_headlines(
    headlines: Sequence[Headline],
    predictions: Sequence[Prediction],
    model: str,
    version: int | None,
    gazetteer: Gazetteer | None = None,
) -> list[ScoredHeadline]:
    """Headlines joined with their predictions (in order) and their entities."""
    names = gazetteer or load_gazetteer()
    return [
        ScoredHeadline(
            id=h.id,
            time=h.time,
            text=h.text,
            label=p.label,
            score=p.score,
            scores=dict(p.scores),
            model=model,
            version=version,
            entities=names.find(h.text),
        )
        for h, p in zip(headlines, predictions, strict=True)
    ]


class Scorer:
    """A sentiment model loaded once, scoring batches of headlines."""

    def __init__(
        self,
        ref: str,
        settings: Settings | None = None,
        *,
        backend: str | None = None,
        batch_size: int = 64,
    ) -> None:
        self.version = check_sentiment_model(ref, settings)
        self.predictor = Predictor(self.version.path, backend=backend, batch_size=batch_size)
        self.gazetteer = load_gazetteer()

    @property
    def model(self) -> str:
        return self.version.name

    @property
    def ref(self) -> str:
        return self.version.ref

    def score(self, headlines: Sequence[Headline]) -> list[ScoredHeadline]:
        """Each headline with its label, probabilities and entities."""
        predictions = self.predictor.predict([h.text for h in headlines])
        return scored_headlines(
            headlines, predictions, self.version.name, self.version.version, self.gazetteer
        )
