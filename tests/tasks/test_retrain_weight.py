"""The feedback weight of a retraining round: the training data of a weight (feedback rows
repeated, a seeded sample of the original rows beside them), the weight chosen on the two
validation slices only — never on the held-out feedback slice or the test split the gate
judges on — and bad values refused in one line."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from lmforge.data import PreparedData
from lmforge.errors import RecipeError
from lmforge.recipe import parse_recipe
from lmforge.recipe.schema import CleaningConfig, FeedbackConfig, GateConfig
from lmforge.tasks import gate as gate_module
from lmforge.tasks.retrain_data import Example, FeedbackExamples, RetrainData, assemble, weighted
from lmforge.tasks.retrain_weight import Candidate, choose, choose_folder, validation_slices

LABELS = ["negative", "positive"]
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def frame(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["text", "label"])


def round_data(n_original: int = 40, n_feedback: int = 200) -> RetrainData:
    original = PreparedData(
        frame([(f"original review {i}", LABELS[i % 2]) for i in range(n_original)]),
        frame([(f"original validation {i}", LABELS[i % 2]) for i in range(10)]),
        frame([(f"original test {i}", LABELS[i % 2]) for i in range(10)]),
        LABELS,
        {"splits": {}},
    )
    made = [Example(f"feedback text {i}", LABELS[i % 2], T0) for i in range(n_feedback)]
    config = FeedbackConfig(holdout_share=0.2, validation_share=0.2)
    return assemble(original, FeedbackExamples(made, len(made)), config, CleaningConfig())


def counts(texts: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in texts.value_counts().items()}


def test_a_weight_repeats_the_feedback_rows_beside_a_sample_of_the_original() -> None:
    data = round_data()
    feedback = set(data.feedback_train["text"])
    original = set(data.original_train["text"])
    assert feedback and len(original) == 40

    train = weighted(data, 3, replay=None, seed=0).train
    seen = counts(train["text"])
    assert all(seen[t] == 3 for t in feedback) and all(seen[t] == 1 for t in original)
    assert len(train) == 40 + 3 * len(feedback)

    # a fraction repeats that share of the feedback rows once more, each row at most once more
    train = weighted(data, 2.5, replay=None, seed=0).train
    seen = counts(train["text"])
    assert sorted({seen[t] for t in feedback}) == [2, 3]
    assert sum(seen[t] == 3 for t in feedback) == round(0.5 * len(feedback))

    # rehearsal: a seeded sample of the original training rows, the feedback rows all there
    train = weighted(data, 1, replay=15, seed=0).train
    kept = set(train["text"]) & original
    assert len(kept) == 15 and set(train["text"]) - kept == feedback
    assert kept == set(weighted(data, 1, replay=15, seed=0).train["text"]) & original
    assert kept != set(weighted(data, 1, replay=15, seed=1).train["text"]) & original
    # more replay rows than there are: all of them, once
    assert len(weighted(data, 1, replay=1000, seed=0).train) == 40 + len(feedback)

    # validation and test are never weighted or sampled
    result = weighted(data, 4, replay=5, seed=0)
    assert result.validation.equals(data.data.validation) and result.test.equals(data.data.test)


def test_the_validation_slices_hold_no_held_out_or_test_text() -> None:
    data = round_data()
    slices = validation_slices(data)
    original, feedback = slices["validation"], slices["feedback_validation"]
    assert list(original["text"]) == [f"original validation {i}" for i in range(10)]
    assert feedback.equals(data.feedback_validation) and len(feedback) > 10
    used = set(original["text"]) | set(feedback["text"])
    assert not used & set(data.holdout["text"]) and not used & set(data.data.test["text"])


def scores(original: float, feedback: float) -> dict[str, dict[str, float]]:
    return {
        "validation": {"accuracy": original, "macro_f1": original, "rows": 100},
        "feedback_validation": {"accuracy": feedback, "macro_f1": feedback, "rows": 50},
    }


def test_the_rule_best_on_feedback_validation_within_the_english_guard() -> None:
    champion = scores(0.85, 0.70)
    gate = GateConfig(max_test_drop=1.0)
    # the best on feedback validation that keeps the original validation score within 1 point
    picked = choose(
        [
            Candidate(1, scores(0.85, 0.75)),
            Candidate(4, scores(0.845, 0.80)),
            Candidate(16, scores(0.80, 0.90)),  # best on feedback, loses 5 points: not taken
        ],
        champion,
        gate,
    )
    assert picked.weight == 4 and "feedback validation" in picked.reason
    # a tie goes to the smaller weight
    tie = [Candidate(4, scores(0.85, 0.8)), Candidate(1, scores(0.85, 0.8))]
    assert choose(tie, champion, gate).weight == 1
    # none within the guard: the one that keeps the original validation score best
    worse = [Candidate(1, scores(0.80, 0.75)), Candidate(4, scores(0.82, 0.70))]
    fallback = choose(worse, champion, gate)
    assert fallback.weight == 4 and "lost more than 1" in fallback.reason
    record = fallback.to_json("auto", 1000)
    assert record["chosen"] == 4 and [c["weight"] for c in record["candidates"]] == [1, 4]


class FakePredictor:
    """A "model folder" whose answers are fixed per text: ``right`` texts get their true label,
    every other text the wrong one; every text it is asked about is recorded."""

    asked: ClassVar[list[str]] = []
    truth: ClassVar[dict[str, str]] = {}
    right: ClassVar[dict[str, set[str]]] = {}

    def __init__(self, folder: Path) -> None:
        self.folder = folder.name

    def tokenize(self, texts: list[str]) -> list[str]:
        FakePredictor.asked += texts
        return texts

    def logits_for_ids(self, texts: list[str]) -> np.ndarray:
        rows = []
        for text in texts:
            label = self.truth[text]
            if text not in self.right[self.folder]:
                label = LABELS[1 - LABELS.index(label)]
            rows.append([1.0, 0.0] if label == LABELS[0] else [0.0, 1.0])
        return np.array(rows, dtype=np.float32)


def test_the_weight_is_chosen_on_validation_never_on_the_held_out_slice_or_the_test_split(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = round_data()
    everything = pd.concat([data.data.validation, data.data.test, data.holdout])
    FakePredictor.truth = dict(zip(everything["text"], everything["label"], strict=True))
    validation = set(data.data.validation["text"])
    gated = set(data.holdout["text"]) | set(data.data.test["text"])
    # weight 1's challenger is right on every validation text and wrong on the held-out slice
    # and the test split; weight 4's the reverse. Were the gate's slices read, 4 would win.
    FakePredictor.right = {"production": set(), "w1": validation, "w4": gated}
    FakePredictor.asked = []
    monkeypatch.setattr(gate_module, "Predictor", FakePredictor)

    folders = {1.0: Path("w1"), 4.0: Path("w4")}
    choice = choose_folder(Path("production"), folders, data, GateConfig())
    assert choice.weight == 1
    assert FakePredictor.asked and not set(FakePredictor.asked) & gated
    assert set(FakePredictor.asked) == validation


@pytest.mark.parametrize(
    ("feedback", "named"),
    [
        ({"weight": 0.5}, "feedback.weight"),
        ({"weight": "heavy"}, "feedback.weight"),
        ({"weight_grid": []}, "feedback.weight_grid"),
        ({"weight_grid": [1, 0]}, "feedback.weight_grid"),
        ({"replay": 0}, "feedback.replay"),
    ],
)
def test_bad_weight_settings_are_one_line_recipe_errors(
    feedback: dict[str, object], named: str, tmp_path: Path
) -> None:
    raw = {
        "name": "toy",
        "task": "classification",
        "data": {"source": {"path": str(tmp_path / "x.csv")}},
        "model": {"base": "minilm-l6"},
        "feedback": feedback,
    }
    with pytest.raises(RecipeError) as caught:
        parse_recipe(raw)
    assert named in str(caught.value) and "\n" not in caught.value.problem


def test_the_defaults_and_a_fixed_weight_parse() -> None:
    assert FeedbackConfig().weight == "auto" and FeedbackConfig().replay == 1000
    assert FeedbackConfig.model_validate({"weight": 4, "replay": None}).weight == 4
