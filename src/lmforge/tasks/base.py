"""The protocol every task implements, and what passes between a task and the shared run step.

A task (one file per task in this package) does two things: :meth:`Task.check` refuses a recipe
it cannot run, with one line, before anything is written; :meth:`Task.run` prepares the data,
opens the run folder through its :class:`RunContext`, trains and evaluates, saves the model
files, and returns a :class:`TaskOutput`. Everything after that — ``lmforge.json``, the model
card, registration, compression — is :func:`lmforge.tasks.run.run_recipe`'s, the same for all.
The output also says how to report the run: the ``--json`` document's task-specific keys and
the tables and lines the CLI prints (:class:`Report`), so the CLI has one printer for all.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol

from lmforge.data import data_card_markdown
from lmforge.errors import LmforgeError, RecipeError
from lmforge.models.catalogue import CATALOGUE
from lmforge.models.meta import ModelMeta
from lmforge.progress import ProgressReporter
from lmforge.recipe import Recipe, dump_recipe
from lmforge.settings import Settings
from lmforge.train.distributed import agree, is_main_process, wait_for_everyone


@dataclass(frozen=True)
class ReportTable:
    """A table of figures: the first ``text_columns`` columns name things (left-aligned), the
    rest are numbers (right-aligned); every cell is already formatted."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    text_columns: int = 1


@dataclass(frozen=True)
class ReportLine:
    """A line of text in console markup (``[bold]…[/bold]``); ``highlight`` lets the console
    colour numbers and paths in it."""

    text: str
    highlight: bool = True


@dataclass(frozen=True)
class Report:
    """What a run prints in a terminal: its tables, then its lines."""

    tables: list[ReportTable]
    lines: list[ReportLine] = field(default_factory=list)


@dataclass(frozen=True)
class BaselineCheck:
    """The trained model beside the baseline it must beat to be registered: a model no better
    than always answering the majority class is refused (unless the recipe's
    ``registry.allow_below_baseline`` says otherwise). This gate decides only whether a version
    is registered at all; comparing a challenger with the current champion is another question
    (one that decides its stage), so it belongs elsewhere and never blocks registration."""

    metric: str  # the metrics key compared, e.g. "macro_f1"
    model: float  # the model's test score (0–1)
    baseline: str  # the baseline's name, e.g. "majority"
    baseline_score: float  # its test score on the same split (0–1)

    @property
    def beats(self) -> bool:
        return self.model > self.baseline_score

    def describe(self) -> str:
        """ "macro-F1 36.17 is no better than the majority baseline's 36.17" (percent)."""
        name = {"macro_f1": "macro-F1"}.get(self.metric, self.metric)
        verdict = "beats" if self.beats else "is no better than"
        return (
            f"test {name} {100 * self.model:.2f} {verdict} the {self.baseline} baseline's "
            f"{100 * self.baseline_score:.2f}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "model": self.model,
            "baseline": self.baseline,
            "baseline_score": self.baseline_score,
            "beats": self.beats,
        }


class BelowBaselineError(LmforgeError):
    """A finished run whose model does not beat its baseline, so it was not registered; the
    run folder keeps the model, and ``check`` holds the figures."""

    def __init__(self, problem: str, fix: str, check: BaselineCheck, run_dir: Path) -> None:
        super().__init__(problem, fix)
        self.check = check
        self.run_dir = run_dir


@dataclass(kw_only=True)
class TaskOutput:
    """What a task's run hands to the shared run step. Each task subclasses it with the
    objects a caller may want to inspect (the prepared data, the training outcome, …)."""

    model_dir: Path  # the finished model folder in the run folder: registered as it is
    meta: ModelMeta  # written into model_dir as lmforge.json
    metrics: dict[str, Any]  # the test metrics of the trained model
    baselines: dict[str, dict[str, Any]]  # the same metrics for each baseline
    card: dict[str, Any]  # the data card (rows_raw, rows_used, removed, …)
    reports: tuple[str, ...]  # run-folder files copied into the registered version
    summary: dict[str, Any]  # the task's own keys of the --json report, after the common ones
    report: Report  # the tables and lines the CLI prints
    model_card: str | None = None  # the version's README.md, for tasks that write one
    baseline_check: BaselineCheck | None = None  # the registration gate, for tasks that have one


class RunContext:
    """Where a task runs: the recipe, the settings, progress, and the run folder — opened by
    :meth:`open_run_dir` once the data is ready (so a data error leaves nothing behind), or
    the folder of an interrupted run when resuming."""

    def __init__(
        self,
        recipe: Recipe,
        settings: Settings,
        progress: ProgressReporter,
        resume: Path | None = None,
    ) -> None:
        self.recipe = recipe
        self.settings = settings
        self.progress = progress
        self.resume = resume
        self._run_dir: Path | None = None

    @property
    def run_dir(self) -> Path:
        if self._run_dir is None:
            raise RuntimeError("the run folder is opened by open_run_dir() first")
        return self._run_dir

    def open_run_dir(
        self,
        card: dict[str, Any],
        markdown: Callable[[dict[str, Any]], str] = data_card_markdown,
    ) -> Path:
        """A new run folder (or the one resumed) with the recipe and the data card in it."""
        # under torchrun every process uses the main one's folder; only the main one writes
        stamp = agree(datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f"))
        run_dir = self.resume or self.settings.runs_dir / f"{self.recipe.name}-{stamp}"
        main = is_main_process()
        if main:
            run_dir.mkdir(parents=True, exist_ok=self.resume is not None)
        wait_for_everyone()  # the others use the folder only once the main one has made it
        self._run_dir = run_dir
        if not main:
            return run_dir
        (run_dir / "recipe.yaml").write_text(dump_recipe(self.recipe), encoding="utf-8")
        (run_dir / "data_card.json").write_text(json.dumps(card, indent=1, ensure_ascii=False))
        (run_dir / "data_card.md").write_text(markdown(card), encoding="utf-8")
        self._run_dir = run_dir
        return run_dir


class Task(Protocol):
    """One task a recipe can name (``task:``)."""

    name: ClassVar[str]
    #: whether an interrupted run can be resumed (``--resume``)
    resumable: ClassVar[bool]
    #: whether the recipe's ``compress`` section applies (the version is compressed after
    #: registration, and the report carries a ``compression`` key)
    compressible: ClassVar[bool]
    #: how the CLI names a registered version: formatted with its ``ref``, ``name``, ``stage``
    #: and ``path``
    registered: ClassVar[str]

    def check(self, recipe: Recipe) -> None:
        """Refuse, with one line, what this task cannot run — before any work starts."""
        ...

    def run(self, ctx: RunContext) -> TaskOutput:
        """Prepare the data, open the run folder, train, evaluate, save the model files."""
        ...


def check_encoder_base(recipe: Recipe) -> None:
    """A catalogue base model that is not an encoder is refused (a local folder is checked
    when it is loaded)."""
    entry = CATALOGUE.get(recipe.model.base)
    if entry is not None and entry.kind != "encoder":
        raise RecipeError(
            f"model.base '{entry.name}' is a {entry.kind}, and {recipe.task} needs an encoder",
            "use minilm-l6 or multilingual-e5-small (see `lmforge models catalogue`)",
        )


def check_loss_validation(recipe: Recipe) -> None:
    """Tasks that validate on held-out loss only (similarity, generation) refuse another
    early-stopping metric named in the recipe (``macro_f1``, the default, is classification's)."""
    stopping = recipe.training.early_stopping
    if "metric" in stopping.model_fields_set and stopping.metric != "loss":
        raise RecipeError(
            f"training.early_stopping.metric '{stopping.metric}' is a classification metric; "
            f"{recipe.task} validates on the held-out loss",
            "set training.early_stopping.metric: loss, or leave it out",
        )


def loss_patience(recipe: Recipe) -> int | None:
    """Early-stopping patience for a task that validates on loss: only where the recipe asks
    for it by ``metric: loss`` (otherwise these tasks train their epochs through, as before
    early stopping reached them, and keep the last weights)."""
    stopping = recipe.training.early_stopping
    return stopping.patience if stopping.enabled and stopping.metric == "loss" else None


def check_decoder_base(recipe: Recipe) -> None:
    """A catalogue base model that is not a decoder is refused."""
    entry = CATALOGUE.get(recipe.model.base)
    if entry is not None and entry.kind != "decoder":
        raise RecipeError(
            f"model.base '{entry.name}' is an {entry.kind}, and generation needs a decoder",
            "use smollm2-135m-instruct or a local causal-LM folder",
        )
