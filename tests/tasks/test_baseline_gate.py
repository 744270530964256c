"""A classifier that is no better than always answering the majority class is not registered
unless the recipe says ``registry.allow_below_baseline: true``; the comparison is reported
either way (the report's lines and ``--json``'s ``baseline_check``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import toy_recipe
from lmforge.data import PreparedData
from lmforge.evaluate import score_test_split
from lmforge.models.meta import read_model_meta
from lmforge.recipe import parse_recipe
from lmforge.registry import Registry
from lmforge.settings import Settings
from lmforge.tasks import BelowBaselineError, run_recipe
from lmforge.tasks import classification as classification_task


def _always_the_majority(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trained model scores as one that always answers the training majority class — the
    15-step run of the report, registered at exactly the majority's figures."""

    def evaluate(_: Any, __: Any, data: PreparedData, **___: Any) -> dict[str, Any]:
        majority = int(np.bincount(data.label_ids("train")).argmax())
        logits = np.zeros((len(data.test), len(data.labels)))
        logits[:, majority] = 5.0
        return score_test_split(data, logits)

    monkeypatch.setattr(classification_task, "evaluate_classifier", evaluate)


def _lines(result: Any) -> str:
    return "\n".join(line.text for line in result.report().lines)


def test_a_model_that_beats_the_majority_is_registered_and_says_so(
    toy_csv: Path, tiny_base: Path, home: Settings
) -> None:
    result = run_recipe(parse_recipe(toy_recipe(toy_csv, tiny_base, epochs=4)))
    check = result.summary()["baseline_check"]
    assert check["beats"] and check["baseline"] == "majority" and check["metric"] == "macro_f1"
    assert check["model"] == result.metrics["macro_f1"]
    assert check["baseline_score"] == result.baselines["majority"]["macro_f1"]
    assert result.version is not None
    assert "beats the majority baseline's" in _lines(result)


def test_a_model_no_better_than_the_majority_is_refused(
    toy_csv: Path, tiny_base: Path, home: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _always_the_majority(monkeypatch)
    raw = toy_recipe(toy_csv, tiny_base, max_steps=2)
    raw["evaluation"] = {"baselines": ["tfidf_lr"]}  # the gate scores the majority regardless
    with pytest.raises(BelowBaselineError) as info:
        run_recipe(parse_recipe(raw))
    message = info.value.message
    assert "\n" not in message
    figure = f"{100 * info.value.check.baseline_score:.2f}"
    assert f"test macro-F1 {figure} is no better than the majority baseline's {figure}" in message
    assert "not registered" in message and "registry.allow_below_baseline: true" in message
    assert Registry(home).list() == []
    model_dir = info.value.run_dir / "model"  # the finished run keeps its model
    assert read_model_meta(model_dir).task == "classification"
    assert (info.value.run_dir / "metrics.json").is_file()


def test_the_recipe_can_allow_it_and_the_report_says_so(
    toy_csv: Path, tiny_base: Path, home: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _always_the_majority(monkeypatch)
    raw = toy_recipe(toy_csv, tiny_base, max_steps=2)
    raw["registry"] = {"allow_below_baseline": True}
    result = run_recipe(parse_recipe(raw))
    assert result.version is not None and result.version.ref == "toy:v1"
    assert result.summary()["baseline_check"]["beats"] is False
    assert "registered anyway (registry.allow_below_baseline)" in _lines(result)
    # not registering at all (lmforge train) is no refusal: the comparison is still reported
    unregistered = run_recipe(parse_recipe(raw), register=False)
    assert "is no better than" in _lines(unregistered) and unregistered.version is None
