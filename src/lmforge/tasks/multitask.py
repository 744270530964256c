"""task: multitask — one shared encoder with a classification head per sub-task, trained on
every sub-task's labelled source at once (train/multitask.py: the sampling rule and the loss),
each sub-task evaluated on its own test split beside its own baselines.

The version is served by torch only (runtime/multitask.py, POST /v1/predict with ``task`` or
``tasks``): lmforge's ONNX export and compress stage carry one classifier head, so a recipe
asking for compression is refused before any work starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

from lmforge.data import PreparedData, data_card_markdown, prepare_data
from lmforge.errors import RecipeError
from lmforge.evaluate import score_baselines
from lmforge.evaluate.baselines import check_baselines
from lmforge.evaluate.metrics import classification_metrics
from lmforge.models.classifier import pad_token_id, quiet_transformers, tokenize
from lmforge.models.meta import HeadMeta, MultitaskMeta
from lmforge.models.multitask import multitask_logits, save_multitask
from lmforge.recipe import Recipe
from lmforge.recipe.schema import DataConfig, SourceConfig
from lmforge.registry.card import percent
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
from lmforge.train.loop import read_checkpoint_state
from lmforge.train.multitask import MultitaskOutcome, SubTask, train_multitask


@dataclass(kw_only=True)
class MultitaskOutput(TaskOutput):
    data: dict[str, PreparedData]  # sub-task name → its prepared data
    outcome: MultitaskOutcome


def subtask_data(recipe: Recipe) -> dict[str, tuple[DataConfig, float]]:
    """Each sub-task's data section (its source; data's cleaning and split) and loss weight,
    data.source's first."""
    section = recipe.multitask
    out = {section.name: (recipe.data, section.loss_weight)}
    for t in section.tasks:
        fields = t.model_dump(exclude={"name", "loss_weight"}, exclude_unset=True)
        source = SourceConfig.model_validate(fields)
        out[t.name] = (recipe.data.model_copy(update={"source": source}), t.loss_weight)
    return out


class MultitaskTask:
    name: ClassVar[str] = "multitask"
    resumable: ClassVar[bool] = True
    compressible: ClassVar[bool] = False
    registered: ClassVar[str] = "registered [bold]{ref}[/bold] ({stage}) at {path}"

    def check(self, recipe: Recipe) -> None:
        check_encoder_base(recipe)
        if recipe.compress.enabled:
            raise RecipeError(
                "compress: a multitask version is served by torch only (the ONNX export and "
                "the compress stage carry a single classifier head)",
                "remove the compress section; serve the version as it is",
            )

    def run(self, ctx: RunContext) -> MultitaskOutput:
        recipe, progress = ctx.recipe, ctx.progress
        data: dict[str, PreparedData] = {}
        weights: dict[str, float] = {}
        for name, (data_cfg, weight) in subtask_data(recipe).items():
            data[name] = prepare_data(data_cfg)
            weights[name] = weight
            try:
                check_baselines(recipe.evaluation.baselines, data[name].labels)
            except RecipeError as exc:
                raise RecipeError(f"sub-task {name}: {exc.problem}", exc.fix) from exc
        base = resolve_base(recipe.model.base, "encoder", ctx.settings.cache_dir, progress)
        if ctx.resume is not None:
            read_checkpoint_state(ctx.resume / "checkpoints", recipe)
        for name, d in data.items():
            progress.note(
                f"{name}: {len(d.train)} train / {len(d.validation)} validation / "
                f"{len(d.test)} test rows, labels {', '.join(d.labels)}"
            )
        card = _card(data)
        run_dir = ctx.open_run_dir(card, _card_markdown)
        subtasks = [
            SubTask(
                name,
                d.labels,
                d.train["text"].tolist(),
                d.label_ids("train"),
                d.validation["text"].tolist(),
                d.label_ids("validation"),
                weights[name],
            )
            for name, d in data.items()
        ]
        outcome, tokenizer = train_multitask(
            recipe, subtasks, base, run_dir, resume=ctx.resume is not None, progress=progress
        )

        progress.note("evaluating each sub-task on its test split beside baselines")
        cfg = recipe.training
        per_task: dict[str, dict[str, Any]] = {}
        baselines: dict[str, dict[str, Any]] = {}
        checks = []
        for name, d in data.items():
            ids = tokenize(tokenizer, d.test["text"].tolist(), cfg.max_length, outcome.text_prefix)
            logits = multitask_logits(
                outcome.model, ids, pad_id=pad_token_id(tokenizer), precision=outcome.precision
            )[name]
            per_task[name] = classification_metrics(d.label_ids("test"), logits, d.labels)
            scored = score_baselines(d, recipe.evaluation.baselines)
            majority = scored.get("majority") or score_baselines(d, ["majority"])["majority"]
            checks.append(
                BaselineCheck(
                    "macro_f1", per_task[name]["macro_f1"], f"{name} majority", majority["macro_f1"]
                )
            )
            baselines.update({f"{name}/{b}": m for b, m in scored.items()})
        metrics: dict[str, Any] = {
            k: sum(m[k] for m in per_task.values()) / len(per_task)
            for k in ("accuracy", "macro_f1")
        }
        metrics["tasks"] = per_task
        # The registration gate: every head must beat its majority class; the closest one speaks.
        check = min(checks, key=lambda c: c.model - c.baseline_score)
        result = outcome.result
        training = {
            "steps": result.steps,
            "precision": outcome.precision,
            "stopped_early": result.stopped_early,
            "best": result.best,
            "train_seconds": round(result.seconds, 1),
            "trainable_parameters": outcome.trainable_parameters,
            "total_parameters": outcome.total_parameters,
        }
        report = {"test": metrics, "baselines": baselines, "training": training}
        (run_dir / "metrics.json").write_text(json.dumps(report, indent=1))

        model_dir = run_dir / "model"
        model_dir.mkdir(parents=True, exist_ok=True)
        save_multitask(outcome.model, model_dir)
        with quiet_transformers():
            tokenizer.save_pretrained(str(model_dir))
        meta = MultitaskMeta(
            task="multitask",
            tasks=[HeadMeta(name=n, labels=d.labels) for n, d in data.items()],
            base_model=base.name,
            text_prefix=outcome.text_prefix,
            max_length=cfg.max_length,
            cleaning=recipe.data.cleaning,
            precision=outcome.precision,
        )
        return MultitaskOutput(
            model_dir=model_dir,
            meta=meta,
            metrics=metrics,
            baselines=baselines,
            card=card,
            reports=("data_card.md",),
            summary={"training": training},
            report=_report(recipe, per_task, baselines, outcome, str(run_dir)),
            baseline_check=check,
            data=data,
            outcome=outcome,
        )


def _card(data: dict[str, PreparedData]) -> dict[str, Any]:
    """One data card for the run: the sums every task's report shows, then each sub-task's."""
    removed: dict[str, int] = {}
    for d in data.values():
        for reason, n in d.card["removed"].items():
            removed[reason] = removed.get(reason, 0) + n
    return {
        "rows_raw": sum(d.card["rows_raw"] for d in data.values()),
        "rows_used": sum(d.card["rows_used"] for d in data.values()),
        "removed": removed,
        "tasks": {name: d.card for name, d in data.items()},
    }


def _card_markdown(card: dict[str, Any]) -> str:
    parts = [f"# Sub-task {name}\n\n" + data_card_markdown(c) for name, c in card["tasks"].items()]
    return "\n".join(parts)


def _report(
    recipe: Recipe,
    per_task: dict[str, dict[str, Any]],
    baselines: dict[str, dict[str, Any]],
    outcome: MultitaskOutcome,
    run_dir: str,
) -> Report:
    rows = []
    for name, m in per_task.items():
        rows.append([name, "this model", percent(m["accuracy"]), percent(m["macro_f1"])])
        prefix = f"{name}/"
        rows += [
            [name, b.removeprefix(prefix), percent(s["accuracy"]), percent(s["macro_f1"])]
            for b, s in baselines.items()
            if b.startswith(prefix)
        ]
    table = ReportTable(
        f"{recipe.name}: test split of each sub-task",
        ["sub-task", "model", "accuracy", "macro-F1"],
        rows,
        text_columns=2,
    )
    result = outcome.result
    trained = (
        f"trained {result.steps} steps"
        + (" (stopped early)" if result.stopped_early else "")
        + f"; run folder {run_dir}"
    )
    return Report([table], [ReportLine(trained)])
