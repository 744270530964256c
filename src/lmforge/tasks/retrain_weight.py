"""Choosing the feedback weight of a retraining round (the recipe's ``feedback.weight: auto``).

One challenger is trained per value of ``feedback.weight_grid``; each, and production, is scored
on the two validation slices only — the feedback rows placed in validation and the original
validation split (:func:`validation_slices`). Never on the held-out feedback slice or the test
split: those are what the gate judges on, and a weight tuned on them would make the gate's
comparison optimistic. :func:`choose` keeps the weights whose challenger loses no more than
``gate.max_test_drop`` points on the original validation split (the gate's English guard, read
on validation) and takes the one best on the feedback validation rows; ties go to the smaller
weight, which moves the model least.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lmforge.recipe.schema import GateConfig
from lmforge.tasks.gate import Evaluation, Scores
from lmforge.tasks.retrain_data import RetrainData

ORIGINAL, FEEDBACK = "validation", "feedback_validation"  # the slices' names in the scores


def validation_slices(assembled: RetrainData) -> dict[str, pd.DataFrame]:
    """The slices a weight is chosen on: the original validation split (without the feedback
    rows the round added to it) and the feedback validation rows."""
    feedback = assembled.feedback_validation
    original = assembled.data.validation.iloc[: len(assembled.data.validation) - len(feedback)]
    return {ORIGINAL: original, FEEDBACK: feedback}


@dataclass(frozen=True)
class Candidate:
    """One weight's challenger and its scores on the validation slices."""

    weight: float
    scores: Scores


@dataclass(frozen=True)
class Choice:
    """The weight taken, why, and every candidate's validation scores (kept in the record)."""

    weight: float
    reason: str
    candidates: list[Candidate]
    champion: Scores | None

    def to_json(self, mode: str, replay: int | None) -> dict[str, Any]:
        return {
            "mode": mode,
            "chosen": self.weight,
            "replay": replay,
            "reason": self.reason,
            "champion": self.champion,
            "candidates": [{"weight": c.weight, "scores": c.scores} for c in self.candidates],
        }


def choose(candidates: list[Candidate], champion: Scores, gate: GateConfig) -> Choice:
    """The weight whose challenger scores best on the feedback validation rows among those
    within ``gate.max_test_drop`` of production on the original validation split; when none is,
    the one that keeps the original validation score best (the gate will say whether it is
    enough)."""
    m = gate.metric

    def drop(c: Candidate) -> float:
        return 100 * (champion[ORIGINAL][m] - c.scores[ORIGINAL][m])

    keeping = [c for c in candidates if drop(c) <= gate.max_test_drop]
    if keeping:
        best = max(keeping, key=lambda c: (c.scores[FEEDBACK][m], -c.weight))
        reason = (
            f"best {m} on the {int(best.scores[FEEDBACK]['rows'])} feedback validation rows "
            f"({100 * best.scores[FEEDBACK][m]:.2f}) of the {len(keeping)} of "
            f"{len(candidates)} weights within {gate.max_test_drop:g} points of production on "
            "the original validation split"
        )
    else:
        best = max(candidates, key=lambda c: (c.scores[ORIGINAL][m], -c.weight))
        reason = (
            f"every weight lost more than {gate.max_test_drop:g} points on the original "
            f"validation split; {best.weight:g} lost least ({drop(best):.2f})"
        )
    return Choice(best.weight, reason, candidates, champion)


def choose_folder(
    champion: Path, challengers: Mapping[float, Path], assembled: RetrainData, gate: GateConfig
) -> Choice:
    """Score production and each weight's challenger folder on the validation slices alone,
    and :func:`choose` among them."""
    slices = validation_slices(assembled)
    scores = Evaluation(champion, assembled, slices).scores
    candidates = [
        Candidate(weight, Evaluation(folder, assembled, slices).scores)
        for weight, folder in challengers.items()
    ]
    return choose(candidates, scores, gate)
