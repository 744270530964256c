"""``lmforge evaluate`` (:func:`evaluate_version`) gives the figures registration reported for
the same version and split, without scikit-learn's "do not sum to one" warning."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from conftest import toy_recipe
from lmforge.errors import ModelNotFoundError
from lmforge.recipe import parse_recipe
from lmforge.runtime.versions import evaluate_version
from lmforge.settings import Settings
from lmforge.tasks import run_recipe


def test_evaluate_agrees_with_registration(toy_csv: Path, tiny_base: Path, home: Settings) -> None:
    result = run_recipe(parse_recipe(toy_recipe(toy_csv, tiny_base, epochs=4)))
    assert result.version is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluated = evaluate_version(result.version.ref)
    registered = result.version.metrics
    assert evaluated.ref == "toy:v1" and evaluated.backend == "torch-fp32"
    for key in ("accuracy", "macro_f1", "roc_auc"):
        # the same figure as printed (percent, two decimals), and within float noise
        assert f"{100 * evaluated.test_metrics[key]:.2f}" == f"{100 * registered[key]:.2f}", key
        assert evaluated.test_metrics[key] == pytest.approx(registered[key], abs=1e-6), key
    assert evaluated.test_metrics["confusion_matrix"] == registered["confusion_matrix"]
    assert evaluated.baseline_metrics == result.version.baselines
    doc = evaluated.to_json()
    assert set(doc) == {"ref", "backend", "test_metrics", "baseline_metrics"}


def test_evaluate_an_unknown_version_is_one_line(home: Settings) -> None:
    with pytest.raises(ModelNotFoundError, match="no registered model named 'ghost'"):
        evaluate_version("ghost")
