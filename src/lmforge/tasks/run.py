"""Running a recipe, whatever its task: the one dispatch and the steps every task shares.

:func:`run_recipe` looks the recipe's task up in :data:`TASKS`, lets it refuse what it cannot
run, runs it in a :class:`RunContext`, then — the same for every task — writes the model's
``lmforge.json`` and model card, registers the model folder, and compresses the registered
version when the recipe asks for it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.compress.stage import CompressResult, compress_version
from lmforge.errors import LmforgeError
from lmforge.models.meta import write_model_meta
from lmforge.progress import ProgressArg, resolve_progress
from lmforge.recipe import Recipe
from lmforge.registry import ModelVersion, Registry
from lmforge.settings import Settings, get_settings
from lmforge.tasks.assistant import AssistantTask
from lmforge.tasks.base import (
    BelowBaselineError,
    Report,
    ReportLine,
    RunContext,
    Task,
    TaskOutput,
)
from lmforge.tasks.classification import ClassificationTask
from lmforge.tasks.generation import GenerationTask
from lmforge.tasks.multitask import MultitaskTask
from lmforge.tasks.pretrain import PretrainTask
from lmforge.tasks.recommendation import RecommendationTask
from lmforge.tasks.similarity import SimilarityTask
from lmforge.train.distributed import is_main_process, wait_for_everyone

#: Every task a recipe can name, by its ``task`` value.
TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        ClassificationTask(),
        SimilarityTask(),
        GenerationTask(),
        AssistantTask(),
        PretrainTask(),
        RecommendationTask(),
        MultitaskTask(),
    )
}


@dataclass
class RunResult:
    """A finished run: the task's output, the registered version (None when not registered)
    and, for a compressible task asked to, the compression of that version."""

    recipe: Recipe
    task: Task
    run_dir: Path
    output: TaskOutput
    version: ModelVersion | None
    compression: CompressResult | None = None

    @property
    def metrics(self) -> dict[str, Any]:
        return self.output.metrics

    @property
    def baselines(self) -> dict[str, dict[str, Any]]:
        return self.output.baselines

    def summary(self) -> dict[str, Any]:
        """The ``--json`` report (docs/cli.md): the keys every task shares, then the task's."""
        card = self.output.card
        shared: dict[str, Any] = {
            "run_dir": str(self.run_dir),
            "version": self.version.to_json() if self.version else None,
            "test_metrics": self.metrics,
            "baseline_metrics": self.baselines,
            "data": {k: card[k] for k in ("rows_raw", "rows_used", "removed")},
        }
        if self.task.compressible:
            shared["compression"] = self.compression.to_json() if self.compression else None
        check = self.output.baseline_check
        if check is not None:
            shared["baseline_check"] = check.to_json()
        return {**shared, **self.output.summary}

    def report(self) -> Report:
        """The task's tables and lines, then where the version was registered."""
        report = self.output.report
        lines = list(report.lines)
        check = self.output.baseline_check
        if check is not None:
            if check.beats:
                lines.append(ReportLine(check.describe()))
            elif self.version is not None:
                allowed = "registered anyway (registry.allow_below_baseline)"
                lines.append(ReportLine(f"[bold]{check.describe()}[/bold]; {allowed}"))
            else:
                lines.append(ReportLine(f"[bold]{check.describe()}[/bold]: not registered"))
        if self.version is not None:
            v = self.version
            registered = self.task.registered.format(
                ref=v.ref, name=v.name, stage=v.stage, path=v.path
            )
            lines.append(ReportLine(registered))
        return Report(report.tables, lines)


def run_recipe(
    recipe: Recipe,
    *,
    settings: Settings | None = None,
    register: bool | None = None,
    resume: Path | None = None,
    progress: ProgressArg = None,
) -> RunResult:
    """Run every stage the recipe names and return the :class:`RunResult`.

    Data, training and evaluation (beside the baselines) into a new run folder; then
    registration — unless ``register`` is False, or the recipe's ``registry.enabled`` is when
    ``register`` is None — and compression when the recipe's ``compress.enabled`` is set.

    ``settings`` says where state lives (default: ``LMFORGE_HOME``); ``resume`` continues the
    run folder of an interrupted run. ``progress``: by default a progress bar on stderr
    (live in a notebook) with a line for each stage; ``False`` (or the ``lmforge`` logger set
    above INFO) for silence, or any :class:`~lmforge.progress.ProgressReporter` to receive the
    events yourself.

    Raises :class:`~lmforge.LmforgeError` (one line naming the problem and the fix) for what
    the user can fix — an invalid recipe for this task, unusable data, an unknown base model —
    and its subclass ``BelowBaselineError`` when a classifier no better than the majority
    baseline is not registered (the run folder keeps it; ``registry.allow_below_baseline``
    allows it). Example::

        result = lmforge.run_recipe(lmforge.load_recipe("examples/sentiment-en.yaml"))
        print(result.version.ref, result.metrics["accuracy"])
    """
    settings = settings or get_settings()
    progress = resolve_progress(progress)
    register = recipe.registry.enabled if register is None else register
    task = TASKS[recipe.task]
    if resume is not None:
        if not resume.is_dir():
            raise LmforgeError(
                f"run folder {resume} not found", "give a folder under ~/.lmforge/runs"
            )
        if not task.resumable:
            resumable = ", ".join(name for name, t in TASKS.items() if t.resumable)
            raise LmforgeError(f"--resume is for {resumable} runs", "run the recipe again")
    task.check(recipe)
    ctx = RunContext(recipe, settings, progress, resume)
    output = task.run(ctx)
    # Under torchrun every process has run the task into one run folder (the same files,
    # identical); once all are done, only the main one writes the rest and registers.
    wait_for_everyone()
    if not is_main_process():
        return RunResult(recipe, task, ctx.run_dir, output, None)

    write_model_meta(output.model_dir, output.meta)
    if output.model_card is not None:
        (output.model_dir / "README.md").write_text(output.model_card, encoding="utf-8")
    version = None
    if register:
        _check_baseline(ctx, output)
        version = _register_folder(ctx, output)
    compression = None
    if version is not None and task.compressible and recipe.compress.enabled:
        progress.note(f"compressing {version.ref}")
        compression = compress_version(
            version.ref, recipe.compress, settings=settings, progress=progress
        )
    return RunResult(recipe, task, ctx.run_dir, output, version, compression)


def _check_baseline(ctx: RunContext, output: TaskOutput) -> None:
    """Refuse to register a model that does not beat its baseline, unless the recipe allows
    it; the finished run folder keeps the model either way."""
    check = output.baseline_check
    if check is None or check.beats or ctx.recipe.registry.allow_below_baseline:
        return
    raise BelowBaselineError(
        f"{check.describe()}, so {ctx.recipe.model_name} was not registered "
        f"(the model stays in {output.model_dir})",
        "train longer or on more data, or set registry.allow_below_baseline: true in the "
        "recipe to register it anyway",
        check,
        ctx.run_dir,
    )


def _register_folder(ctx: RunContext, output: TaskOutput) -> ModelVersion:
    """Register a run's finished model folder with the run's recipe, metrics, data card and the
    task's reports. The folder moves into the registry (no second copy on disk); if registering
    fails it moves back, so the run folder keeps it."""
    recipe, run_dir, model_dir = ctx.recipe, ctx.run_dir, output.model_dir
    registry = Registry(ctx.settings)
    staging = registry.new_staging_dir()
    staging.rmdir()
    shutil.move(model_dir, staging)
    added = ["recipe.yaml", "metrics.json", "data_card.json", *output.reports]
    try:
        for name in added:
            shutil.copy2(run_dir / name, staging / name)
        return registry.register(
            recipe.model_name,
            staging,
            task=recipe.task,
            base_model=output.meta.base_model,
            labels=output.meta.labels,
            metrics=output.metrics,
            baselines=output.baselines,
            stage=recipe.registry.stage,
        )
    except BaseException:
        if staging.exists():
            for name in added:
                (staging / name).unlink(missing_ok=True)
            shutil.move(staging, model_dir)
        raise
