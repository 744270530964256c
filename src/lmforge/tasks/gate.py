"""The promotion gate of retraining: production (the champion) and a challenger scored on the
original test split and on the held-out feedback slice, and the rules that decide whether the
challenger replaces production (:func:`judge`, configured by the recipe's ``feedback.gate``).

A margin alone is not enough on a small slice — a challenger that learned nothing beats a
1-point margin by chance about as often as not on 30 rows — so the gain must also be
significant: a one-sided exact McNemar test on the rows the two models disagree on
(:func:`mcnemar_p`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError
from scipy.stats import binomtest

from lmforge.errors import RecipeError
from lmforge.evaluate.metrics import classification_metrics
from lmforge.recipe.schema import GateConfig
from lmforge.runtime.predictor import Predictor
from lmforge.tasks.retrain_data import RetrainData


@dataclass(frozen=True)
class GateDecision:
    """What the gate decided and why; gains and drops are in points of ``metric``, and
    ``p_value`` is the one-sided McNemar test of the gain on the feedback slice."""

    promote: bool
    reason: str
    metric: str
    feedback_gain: float
    test_drop: float
    p_value: float
    holdout_rows: int

    def to_json(self) -> dict[str, Any]:
        return {
            "promote": self.promote,
            "reason": self.reason,
            "metric": self.metric,
            "feedback_gain": self.feedback_gain,
            "test_drop": self.test_drop,
            "p_value": self.p_value,
            "holdout_rows": self.holdout_rows,
        }


Scores = dict[str, dict[str, float]]  # slice ("test", "feedback") -> metric -> value (0-1)


def mcnemar_p(champion_right: np.ndarray, challenger_right: np.ndarray) -> float:
    """One-sided exact McNemar test: how likely the challenger wins at least this many of the
    rows the two models disagree on, were neither better (1.0 when they never disagree)."""
    wins = int(np.sum(challenger_right & ~champion_right))
    losses = int(np.sum(champion_right & ~challenger_right))
    if wins + losses == 0:
        return 1.0
    return float(binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue)


def with_changes(config: GateConfig, changes: Mapping[str, Any] | None) -> GateConfig:
    """``config`` with some of its keys changed (a command's options), validated."""
    if not changes:
        return config
    try:
        return GateConfig.model_validate({**config.model_dump(), **changes})
    except ValidationError as exc:
        first = exc.errors()[0]
        at = ".".join(str(p) for p in first["loc"])
        raise RecipeError(f"feedback.gate.{at}: {first['msg']}", "fix the gate setting") from exc


def judge(
    champion: Scores,
    challenger: Scores,
    gate: GateConfig,
    holdout_rows: int,
    p_value: float,
    *,
    metric: str | None = None,
) -> GateDecision:
    """The promotion gate: at least ``gate.min_gain`` points better on the feedback slice and
    significantly so (``p_value`` at most ``gate.max_p_value``), at most ``gate.max_test_drop``
    points worse on the original test split, and a feedback slice of at least
    ``gate.min_eval_rows`` rows. The first rule that fails is the reason. ``metric`` (default
    ``gate.metric``) is the score compared."""
    m = metric or gate.metric
    gain = round(100 * (challenger["feedback"][m] - champion["feedback"][m]), 2)
    drop = round(100 * (champion["test"][m] - challenger["test"][m]), 2)
    p = round(p_value, 6)

    def decide(promote: bool, reason: str) -> GateDecision:
        return GateDecision(promote, reason, m, gain, drop, p, holdout_rows)

    # a little slack for float noise in the subtractions, as the compress stage's budget has
    if holdout_rows < gate.min_eval_rows:
        return decide(
            False,
            f"the held-out feedback slice has {holdout_rows} rows, fewer than "
            f"feedback.gate.min_eval_rows {gate.min_eval_rows}",
        )
    if gain < gate.min_gain - 1e-9:
        return decide(
            False, f"{m} on the feedback slice changed {gain:+.2f} points, under +{gate.min_gain:g}"
        )
    if p_value > gate.max_p_value:
        return decide(
            False,
            f"the {gain:+.2f}-point gain on the feedback slice is not significant "
            f"(p={p_value:.3g} > {gate.max_p_value:g})",
        )
    if drop > gate.max_test_drop + 1e-9:
        return decide(
            False,
            f"{m} on the original test split fell {drop:.2f} points, over {gate.max_test_drop:g}",
        )
    return decide(
        True,
        f"{m} {gain:+.2f} points on the feedback slice (p={p_value:.3g}), {-drop:+.2f} on the "
        "original test split",
    )


class Evaluation:
    """A model folder scored through the backend that serves it on named slices (by default the
    original test split and the held-out feedback slice): accuracy, macro-F1 and which rows it
    got right. It reads only the slices it is given."""

    def __init__(
        self,
        folder: Path,
        assembled: RetrainData,
        slices: Mapping[str, pd.DataFrame] | None = None,
    ) -> None:
        if slices is None:
            slices = {"test": assembled.data.test, "feedback": assembled.holdout}
        predictor = Predictor(folder)
        labels = assembled.data.labels
        ids = {label: i for i, label in enumerate(labels)}
        self.scores: Scores = {}
        self.right: dict[str, np.ndarray] = {}
        for name, frame in slices.items():
            if frame.empty:
                self.scores[name] = {"accuracy": 0.0, "macro_f1": 0.0, "rows": 0}
                self.right[name] = np.zeros(0, dtype=bool)
                continue
            logits = predictor.logits_for_ids(predictor.tokenize(frame["text"].tolist()))
            y = np.array([ids[v] for v in frame["label"]], dtype=np.int64)
            metrics = classification_metrics(y, logits, labels, detail=False)
            self.scores[name] = {
                "accuracy": metrics["accuracy"],
                "macro_f1": metrics["macro_f1"],
                "rows": len(frame),
            }
            self.right[name] = logits.argmax(axis=-1) == y

    def judge(self, challenger: Evaluation, gate: GateConfig) -> GateDecision:
        """The gate with this (production) model as the champion."""
        p = mcnemar_p(self.right["feedback"], challenger.right["feedback"])
        rows = len(self.right["feedback"])
        return judge(self.scores, challenger.scores, gate, rows, p)
