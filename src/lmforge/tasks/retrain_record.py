"""What one retraining round produced (:class:`RetrainResult`), the registry key it is stored
under, and the recipe a registered version was trained from — shared by the classifier's
round (:mod:`lmforge.tasks.retrain`) and the recommender's
(:mod:`lmforge.tasks.retrain_recommendation`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from lmforge.errors import DataError, RecipeError
from lmforge.recipe import Recipe, load_recipe
from lmforge.registry import ModelVersion
from lmforge.tasks.gate import GateDecision, Scores

WarmStart = Literal["production", "base"]
RECORD = "retrain"  # the key of the retraining record in a version's registry metrics


@dataclass
class RetrainResult:
    """One retraining round: what was compared, the gate's decision, and where things went.
    ``challenger`` is the version the gate judged (the compressed one where production is
    compressed; ``trained`` is then its uncompressed parent)."""

    model: str
    champion: ModelVersion
    trained: ModelVersion
    challenger: ModelVersion
    decision: GateDecision
    promoted: bool
    scores: dict[str, Scores]  # "champion" / "challenger" -> slice -> metric -> value
    counts: dict[str, Any]
    weighting: dict[str, Any]  # the feedback weight used and how it was chosen
    warm_start: str
    run_dir: Path
    started_at: datetime
    wall_seconds: float

    def record(self) -> dict[str, Any]:
        """What is stored with the challenger in the registry (``metrics["retrain"]``)."""
        return {
            "champion": self.champion.ref,
            "trained": self.trained.ref,
            "warm_start": self.warm_start,
            "decision": "promoted" if self.promoted else "candidate",
            "gate": self.decision.to_json(),
            "scores": self.scores,
            "feedback": self.counts,
            "weight": self.weighting,
            "run_dir": str(self.run_dir),
            "started_at": self.started_at.isoformat(),
            "wall_seconds": round(self.wall_seconds, 1),
        }

    def to_json(self) -> dict[str, Any]:
        """The ``lmforge retrain --json`` document (docs/cli.md)."""
        return {"challenger": self.challenger.ref, "promoted": self.promoted, **self.record()}


def recipe_of(version: ModelVersion) -> Recipe:
    """The recipe ``version`` was trained from (its folder's recipe.yaml)."""
    path = version.path / "recipe.yaml"
    if not path.is_file():
        raise DataError(
            f"{version.ref} has no recipe.yaml, so its original data cannot be rebuilt",
            "retrain it with `lmforge run RECIPE`, then promote the new version",
        )
    try:
        return load_recipe(path)
    except RecipeError as exc:
        raise DataError(
            f"the recipe of {version.ref} is damaged ({exc.problem})",
            "retrain it with `lmforge run RECIPE`, then promote the new version",
        ) from exc
