"""One dispatch for every task: the registry of tasks matches the recipe's task names, and
``lmforge.run_recipe`` runs whatever task the recipe names (a generation recipe used to fail
with an encoder error), writing lmforge.json and registering in one place."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import pytest
import yaml

import lmforge
from conftest import RecordedProgress, chat_recipe
from lmforge.errors import LmforgeError, RecipeError
from lmforge.models.meta import GenerationMeta, read_model_meta
from lmforge.recipe import load_recipe
from lmforge.recipe.schema import TaskName
from lmforge.registry import Registry
from lmforge.settings import Settings
from lmforge.tasks import TASKS
from lmforge.tasks.generation import GenerationOutput

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def tiny_chat(folder: Path, base: Path) -> Path:
    return chat_recipe(
        folder,
        base,
        adaptation={"method": "lora", "lora": {"r": 4, "alpha": 8}},
        training={"epochs": 1, "batch_size": 4, "learning_rate": 3e-3, "max_length": 64},
    )


def test_every_task_a_recipe_can_name_has_one_entry() -> None:
    assert sorted(TASKS) == sorted(get_args(TaskName))
    assert all(name == task.name for name, task in TASKS.items())


def test_the_faq_chat_example_is_a_generation_task_and_passes_its_check() -> None:
    recipe = load_recipe(EXAMPLES / "faq-chat.yaml")
    TASKS[recipe.task].check(recipe)  # a decoder: the encoder check refused it before
    with pytest.raises(RecipeError, match="needs an encoder"):
        TASKS["similarity"].check(recipe)


def test_lmforge_run_recipe_runs_a_generation_recipe(
    home: Settings,
    tmp_path: Path,
    tiny_decoder_dir: Path,
    one_thread: None,
    capfd: pytest.CaptureFixture[str],
) -> None:
    result = lmforge.run_recipe(load_recipe(tiny_chat(tmp_path, tiny_decoder_dir)))
    # from Python, a run shows its progress on stderr by default (as transformers' Trainer)
    shown = capfd.readouterr()
    steps = result.output.outcome.steps  # type: ignore[attr-defined]
    assert "scoring the base model" in shown.err and f"{steps}/{steps}" in shown.err
    assert shown.out == ""
    assert isinstance(result.output, GenerationOutput) and len(result.output.samples) == 3
    version = result.version
    assert version is not None and version.task == "generation"
    assert Registry(home).get("tiny-chat").ref == version.ref
    meta = read_model_meta(version.path)
    assert isinstance(meta, GenerationMeta) and meta.max_length == 64
    assert json.loads((version.path / "lmforge.json").read_text()) == {
        "task": "generation",
        "labels": [],
        "base_model": str(tiny_decoder_dir),
        "max_length": 64,
    }
    summary = result.summary()
    assert list(summary) == [
        "run_dir",
        "version",
        "test_metrics",
        "baseline_metrics",
        "data",
        "training",
        "samples",
    ]
    lines = [line.text for line in result.report().lines]
    assert lines[-1] == f"registered [bold]{version.ref}[/bold]; serve with --decoder tiny-chat"


def test_resume_is_refused_where_the_task_cannot_resume(home: Settings, tmp_path: Path) -> None:
    recipe = load_recipe(EXAMPLES / "faq-assistant.yaml")
    with pytest.raises(
        LmforgeError,
        match="--resume is for classification, similarity, generation, pretrain, multitask runs",
    ):
        lmforge.run_recipe(recipe, resume=tmp_path)
    with pytest.raises(LmforgeError, match="not found"):
        lmforge.run_recipe(recipe, resume=tmp_path / "gone")


def test_generation_validates_on_loss_and_resumes(
    home: Settings,
    tmp_path: Path,
    tiny_decoder_dir: Path,
    one_thread: None,
    capfd: pytest.CaptureFixture[str],
) -> None:
    path = tiny_chat(tmp_path, tiny_decoder_dir)
    raw = yaml.safe_load(path.read_text())
    raw["training"].update(
        epochs=4, eval_every_steps=1, early_stopping={"metric": "loss", "patience": 1}
    )
    path.write_text(yaml.safe_dump(raw))
    recipe = load_recipe(path)
    events = RecordedProgress()
    first = lmforge.run_recipe(recipe, register=False, progress=events)
    assert isinstance(first.output, GenerationOutput)
    # the caller's reporter gets the run's events: a bar over the training steps and notes
    assert first.output.outcome.steps in events.totals
    assert events.advances >= first.output.outcome.steps
    assert any("scoring the base model" in note for note in events.notes)
    outcome = first.output.outcome
    assert outcome.history, "validation ran"
    assert [row["step"] for row in outcome.history] == list(range(1, outcome.steps + 1))
    assert outcome.best["val_loss"] == min(row["val_loss"] for row in outcome.history)
    # resuming the finished run folder continues from its last checkpoint: nothing is lost
    capfd.readouterr()
    again = lmforge.run_recipe(recipe, register=False, resume=first.run_dir, progress=False)
    assert capfd.readouterr().err == ""  # progress=False: silent
    assert isinstance(again.output, GenerationOutput)
    assert again.run_dir == first.run_dir
    assert again.output.outcome.steps == outcome.steps
    assert again.output.metrics == first.output.metrics


def test_loss_tasks_refuse_a_classification_metric_for_early_stopping(
    tmp_path: Path, tiny_decoder_dir: Path
) -> None:
    path = tiny_chat(tmp_path, tiny_decoder_dir)
    raw = yaml.safe_load(path.read_text())
    raw["training"]["early_stopping"] = {"metric": "accuracy"}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(RecipeError, match="generation validates on the held-out loss"):
        TASKS["generation"].check(load_recipe(path))
    raw["task"], raw["model"]["base"] = "similarity", "minilm-l6"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(RecipeError, match="similarity validates on the held-out loss"):
        TASKS["similarity"].check(load_recipe(path))
