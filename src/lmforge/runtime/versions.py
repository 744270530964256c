"""A registered classifier version through the runtime: asked to classify texts (``lmforge
predict``), re-scored on its recipe's test split beside the recipe's baselines (``lmforge
evaluate``), and benchmarked beside the model it was compressed from (``lmforge bench``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.data import prepare_data
from lmforge.errors import LmforgeError
from lmforge.evaluate import score_baselines, score_test_split
from lmforge.progress import ProgressReporter
from lmforge.recipe import load_recipe
from lmforge.registry import Registry
from lmforge.runtime.bench import bench_model
from lmforge.runtime.bench_report import BenchReport
from lmforge.runtime.predictor import Prediction, Predictor
from lmforge.settings import Settings


def texts_to_classify(texts: Sequence[str], file: Path | None = None) -> list[str]:
    """``texts``, then each non-blank line of ``file``; refuses a missing file and an empty
    result, naming ``lmforge predict``'s arguments in the fix."""
    items = list(texts)
    if file is not None:
        if not file.is_file():
            raise LmforgeError(f"input file {file} not found", "check the path given to --file")
        items += [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not items:
        raise LmforgeError("no texts to classify", "pass texts as arguments or --file FILE")
    return items


@dataclass
class VersionPredictions:
    """A version's predictions for some texts, through one backend."""

    ref: str
    backend: str
    predictions: list[Prediction]

    def to_json(self) -> dict[str, Any]:
        """The ``lmforge predict --json`` document."""
        return {
            "model": self.ref,
            "backend": self.backend,
            "predictions": [p.to_json() for p in self.predictions],
        }


def predict_version(
    ref: str, texts: Sequence[str], backend: str | None = None, settings: Settings | None = None
) -> VersionPredictions:
    """Classify ``texts`` with the registered version ``ref`` through ``backend`` (default: the
    one it was registered for)."""
    version = Registry(settings).get(ref)
    predictor = Predictor(version.path, backend=backend)
    return VersionPredictions(version.ref, predictor.backend.name, predictor.predict(texts))


@dataclass
class VersionEvaluation:
    """A version's metrics on its recipe's test split, through one backend, beside baselines."""

    ref: str
    backend: str
    test_metrics: dict[str, Any]
    baseline_metrics: dict[str, dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        """The ``lmforge evaluate --json`` document."""
        return {
            "ref": self.ref,
            "backend": self.backend,
            "test_metrics": self.test_metrics,
            "baseline_metrics": self.baseline_metrics,
        }


def evaluate_version(
    ref: str, backend: str | None = None, settings: Settings | None = None
) -> VersionEvaluation:
    """Re-evaluate the registered version ``ref`` on its recipe's test split (the data prepared
    again from the recipe it was trained from) with ``backend`` (default: the one it was
    registered for), and score the recipe's baselines on the same split. The scores go through
    the same logits → probabilities step as at registration, so the same version and backend
    give the same figures as its registered metrics."""
    version = Registry(settings).get(ref)
    recipe = load_recipe(version.path / "recipe.yaml")
    data = prepare_data(recipe.data)
    predictor = Predictor(version.path, backend=backend)
    logits = predictor.logits_for_ids(predictor.tokenize(data.test["text"].tolist()))
    return VersionEvaluation(
        ref=version.ref,
        backend=predictor.backend.name,
        test_metrics=score_test_split(data, logits),
        baseline_metrics=score_baselines(data, recipe.evaluation.baselines),
    )


def bench_version(
    ref: str,
    *,
    backends: Sequence[str] | None = None,
    lengths: Sequence[int] = (64, 128),
    batch_size: int = 32,
    latency_runs: int = 50,
    min_seconds: float = 1.0,
    baselines: bool = True,
    rounds: int = 1,
    progress: ProgressReporter | None = None,
    settings: Settings | None = None,
) -> BenchReport:
    """:func:`bench_model` on the registered version ``ref``; a compressed version's baselines
    run the model it was compressed from, so its speed-ups are against what the user had."""
    registry = Registry(settings)
    version = registry.get(ref)
    parent = registry.get(version.parent).path if version.parent else None
    return bench_model(
        version.path,
        baseline_folder=parent,
        backends=backends,
        lengths=lengths,
        batch_size=batch_size,
        latency_runs=latency_runs,
        min_seconds=min_seconds,
        baselines=baselines,
        rounds=rounds,
        progress=progress,
    )
