"""task: classification — fine-tune an encoder with a classifier head on labelled texts,
evaluate it on the test split beside simple baselines (majority, TF-IDF + logistic regression,
…), and hand over the model folder (registered, then optionally compressed, by the run step).

The walk-through in docs/architecture.md follows this file. (``lmforge evaluate`` re-scores a
registered classifier through the same metrics step: lmforge.runtime.versions.)
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from lmforge.compress.stage import check_compress_config
from lmforge.data import PreparedData, prepare_data
from lmforge.evaluate import evaluate_classifier, score_baselines
from lmforge.evaluate.baselines import check_baselines
from lmforge.evaluate.plots import plot_confusion_matrix, plot_training_curve
from lmforge.models.catalogue import ResolvedBase
from lmforge.models.classifier import quiet_transformers
from lmforge.models.meta import ClassificationMeta
from lmforge.recipe import Recipe
from lmforge.registry.card import model_card, percent
from lmforge.registry.refs import resolve_base
from lmforge.tasks.base import (
    BaselineCheck,
    Report,
    ReportLine,
    ReportTable,
    RunContext,
    TaskOutput,
    check_encoder_base,
)
from lmforge.train.loop import TrainOutcome, fine_tune, read_checkpoint_state


@dataclass(kw_only=True)
class ClassificationOutput(TaskOutput):
    data: PreparedData
    outcome: TrainOutcome


def training_summary(outcome: TrainOutcome) -> dict[str, Any]:
    """The report's ``training`` block (also written to metrics.json and the model card)."""
    return {
        "steps": outcome.steps,
        "precision": outcome.precision,
        "stopped_early": outcome.stopped_early,
        "best": outcome.best,
        "train_seconds": round(outcome.train_seconds, 1),
        "samples_per_second": round(outcome.samples_per_second, 1),
        "trainable_parameters": outcome.trainable_parameters,
        "total_parameters": outcome.total_parameters,
    }


class ClassificationTask:
    name: ClassVar[str] = "classification"
    resumable: ClassVar[bool] = True
    compressible: ClassVar[bool] = True
    registered: ClassVar[str] = "registered [bold]{ref}[/bold] ({stage}) at {path}"

    def check(self, recipe: Recipe) -> None:
        check_encoder_base(recipe)

    def run(self, ctx: RunContext) -> ClassificationOutput:
        recipe, progress = ctx.recipe, ctx.progress
        # Everything a user could get wrong is checked before the run folder exists.
        data = prepare_data(recipe.data)
        check_baselines(recipe.evaluation.baselines, data.labels)
        base = resolve_base(recipe.model.base, "encoder", ctx.settings.cache_dir, progress)
        if recipe.compress.enabled:
            check_compress_config(recipe.compress, base.path)
        if ctx.resume is not None:
            read_checkpoint_state(ctx.resume / "checkpoints", recipe)
        return self.fit(ctx, data, base)

    def fit(self, ctx: RunContext, data: PreparedData, base: ResolvedBase) -> ClassificationOutput:
        """Train on prepared ``data`` from ``base`` (a base encoder, or a classifier folder to
        warm-start from), evaluate and save: what :meth:`run` does once the data is checked
        (retraining calls it with the data and weights of its own)."""
        recipe, progress = ctx.recipe, ctx.progress
        progress.note(
            f"data: {len(data.train)} train / {len(data.validation)} validation / "
            f"{len(data.test)} test rows, labels {', '.join(data.labels)}"
        )
        run_dir = ctx.open_run_dir(data.card)

        outcome = fine_tune(
            recipe, data, base, run_dir, resume=ctx.resume is not None, progress=progress
        )
        progress.note("evaluating on the test split beside baselines")
        metrics = evaluate_classifier(
            outcome.model,
            outcome.tokenizer,
            data,
            max_length=recipe.training.max_length,
            text_prefix=outcome.text_prefix,
        )
        baselines = score_baselines(data, recipe.evaluation.baselines)
        # the registration gate: the majority class, scored even when not listed as a baseline
        majority = baselines.get("majority") or score_baselines(data, ["majority"])["majority"]
        check = BaselineCheck("macro_f1", metrics["macro_f1"], "majority", majority["macro_f1"])
        training = training_summary(outcome)
        report = {"test": metrics, "baselines": baselines, "training": training}
        (run_dir / "metrics.json").write_text(json.dumps(report, indent=1))
        if outcome.history:
            plot_training_curve(outcome.history, run_dir / "training_curve.png")
        plot_confusion_matrix(
            metrics["confusion_matrix"], data.labels, run_dir / "confusion_matrix.png"
        )

        model_dir = run_dir / "model"
        model_dir.mkdir(parents=True, exist_ok=True)
        with quiet_transformers():
            outcome.model.save_pretrained(str(model_dir))
            outcome.tokenizer.save_pretrained(str(model_dir))
        if outcome.adapter_dir is not None:
            shutil.copytree(outcome.adapter_dir, model_dir / "adapter", dirs_exist_ok=True)
        meta = ClassificationMeta(
            task="classification",
            labels=data.labels,
            base_model=base.name,
            text_prefix=outcome.text_prefix,
            max_length=recipe.training.max_length,
            cleaning=recipe.data.cleaning,
            precision=outcome.precision,
        )
        plots = [
            n for n in ("training_curve.png", "confusion_matrix.png") if (run_dir / n).exists()
        ]
        return ClassificationOutput(
            model_dir=model_dir,
            meta=meta,
            metrics=metrics,
            baselines=baselines,
            card=data.card,
            reports=("data_card.md", *plots),
            summary={"training": training},
            report=_report(recipe, metrics, baselines, outcome, run_dir),
            model_card=model_card(recipe, data.card, metrics, baselines, training, base.name),
            baseline_check=check,
            data=data,
            outcome=outcome,
        )


def _report(
    recipe: Recipe,
    metrics: dict[str, Any],
    baselines: dict[str, dict[str, Any]],
    outcome: TrainOutcome,
    run_dir: Path,
) -> Report:
    rows = [
        [name, *(percent(v) for v in (m["accuracy"], m["macro_f1"], m.get("roc_auc")))]
        for name, m in [("this model", metrics), *baselines.items()]
    ]
    table = ReportTable(
        f"{recipe.name}: test split", ["model", "accuracy", "macro-F1", "ROC-AUC"], rows
    )
    trained = (
        f"trained {outcome.steps} steps at {outcome.samples_per_second:.1f} samples/s"
        + (" (stopped early)" if outcome.stopped_early else "")
        + f"; run folder {run_dir}"
    )
    return Report([table], [ReportLine(trained)])
