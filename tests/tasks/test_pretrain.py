"""task: pretrain on tiny models: masked-LM and next-token runs register a version whose loss
fell, the version is a base for classification, and recipe mistakes fail in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

import lmforge
from conftest import NEGATIVE, POSITIVE, toy_recipe
from conftest import lmforge as cli
from lmforge.errors import LmforgeError, RecipeError
from lmforge.models.meta import PretrainMeta, read_model_meta
from lmforge.recipe import load_recipe
from lmforge.settings import Settings
from lmforge.tasks import TASKS
from lmforge.tasks.pretrain import PretrainOutput
from lmforge.tasks.promote import promote_version

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def corpus_csv(folder: Path) -> Path:
    """120 short unlabelled texts (variants of the toy reviews)."""
    texts = [f"{t} number {i}" for i in range(8) for t in (*POSITIVE, *NEGATIVE)]
    path = folder / "corpus.csv"
    pd.DataFrame({"text": texts}).to_csv(path, index=False)
    return path


def pretrain_recipe(folder: Path, base: Path, **overrides: Any) -> Path:
    recipe: dict[str, Any] = {
        "name": "tiny-pre",
        "task": "pretrain",
        "data": {"source": {"path": str(corpus_csv(folder))}, "split": {"test": 0.2}},
        "model": {"base": str(base)},
        "pretrain": {"objective": "mlm", "head_steps": 10, "eval_texts": 8},
        "training": {"epochs": 6, "batch_size": 16, "learning_rate": 3e-3, "max_length": 32},
        **overrides,
    }
    path = folder / "pretrain.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_mlm_pretraining_lowers_the_held_out_loss_and_registers_a_base(
    home: Settings, tmp_path: Path, tiny_base: Path, one_thread: None
) -> None:
    result = lmforge.run_recipe(load_recipe(pretrain_recipe(tmp_path, tiny_base)), progress=False)
    assert isinstance(result.output, PretrainOutput)
    (before,) = result.baselines  # tiny_base has no head: the "before" trains one
    assert before == "base + head (10 steps)"
    outcome = result.output.outcome
    assert outcome.losses[-1] < outcome.losses[0]
    assert result.metrics["loss"] < result.baselines[before]["loss"]
    assert result.metrics["pseudo_perplexity"] < result.baselines[before]["pseudo_perplexity"]
    version = result.version
    assert version is not None and version.task == "pretrain"
    meta = read_model_meta(version.path)
    assert isinstance(meta, PretrainMeta) and meta.objective == "mlm" and meta.kind == "encoder"
    summary = result.summary()
    assert summary["training"]["objective"] == "mlm"
    assert json.loads((version.path / "metrics.json").read_text())["test"] == result.metrics
    # promotion loads the version as what it is, an encoder (it once took it for an assistant)
    assert promote_version(version.ref, home).version.stage == "production"

    # the pretrained version is a base for classification, named NAME:vN
    csv = tmp_path / "reviews.csv"
    rows = [{"review": f"{t} ({i})", "sentiment": "positive"} for i in range(5) for t in POSITIVE]
    rows += [{"review": f"{t} [{i}]", "sentiment": "negative"} for i in range(5) for t in NEGATIVE]
    pd.DataFrame(rows).to_csv(csv, index=False)
    spec = toy_recipe(csv, tiny_base)
    spec["model"] = {"base": version.ref}
    spec["registry"] = {"allow_below_baseline": True}
    path = tmp_path / "classify.yaml"
    path.write_text(yaml.safe_dump(spec))
    classified = lmforge.run_recipe(load_recipe(path), progress=False)
    assert classified.version is not None
    assert classified.version.base_model == version.ref
    assert 0 <= classified.metrics["accuracy"] <= 1


def test_clm_pretraining_on_packed_blocks_lowers_perplexity(
    home: Settings, tmp_path: Path, tiny_decoder_dir: Path, one_thread: None
) -> None:
    path = pretrain_recipe(
        tmp_path,
        tiny_decoder_dir,
        pretrain={"objective": "clm"},
        training={"epochs": 4, "batch_size": 4, "learning_rate": 3e-3, "max_length": 32},
    )
    result = lmforge.run_recipe(load_recipe(path), progress=False)
    assert result.metrics["perplexity"] < result.baselines["base"]["perplexity"]
    assert result.version is not None
    meta = read_model_meta(result.version.path)
    assert isinstance(meta, PretrainMeta) and meta.kind == "decoder"
    assert promote_version(result.version.ref, home).version.stage == "production"


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"pretrain": {"objective": "span"}}, "pretrain.objective"),
        (
            {"data": {"source": {"builtin": "rotten_tomatoes", "label_column": "label"}}},
            "learns from unlabelled text only",
        ),
    ],
)
def test_recipe_mistakes_are_one_line_errors(
    tmp_path: Path, tiny_base: Path, changes: dict[str, Any], needle: str
) -> None:
    with pytest.raises(RecipeError, match=needle) as info:
        load_recipe(pretrain_recipe(tmp_path, tiny_base, **changes))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("base", "objective", "needle"),
    [
        ("smollm2-135m-instruct", "mlm", "is a decoder, and pretrain.objective mlm needs an enc"),
        ("minilm-l6", "clm", "is an encoder, and pretrain.objective clm needs a decoder"),
    ],
)
def test_a_base_of_the_wrong_kind_for_the_objective_is_refused(
    tmp_path: Path, tiny_base: Path, base: str, objective: str, needle: str
) -> None:
    recipe = load_recipe(
        pretrain_recipe(
            tmp_path, tiny_base, model={"base": base}, pretrain={"objective": objective}
        )
    )
    with pytest.raises(RecipeError, match=needle):
        TASKS["pretrain"].check(recipe)


def test_a_local_folder_of_the_wrong_kind_is_refused_before_training(
    home: Settings, tmp_path: Path, tiny_decoder_dir: Path
) -> None:
    recipe = load_recipe(pretrain_recipe(tmp_path, tiny_decoder_dir))  # mlm on a Llama
    with pytest.raises(LmforgeError, match="needs an encoder"):
        lmforge.run_recipe(recipe, progress=False)
    assert not home.runs_dir.exists() or not any(home.runs_dir.iterdir())


@pytest.mark.parametrize("name", ["pretrain-headlines.yaml", "pretrain-faq-decoder.yaml"])
def test_the_pretrain_examples_load_and_pass_their_check(name: str) -> None:
    recipe = load_recipe(EXAMPLES / name)
    assert recipe.task == "pretrain"
    TASKS["pretrain"].check(recipe)


def test_mlm_pretraining_with_lora_merges_into_a_plain_masked_lm_folder(
    home: Settings, tmp_path: Path, tiny_base: Path, one_thread: None
) -> None:
    path = pretrain_recipe(
        tmp_path,
        tiny_base,
        adaptation={"method": "lora", "lora": {"r": 4, "alpha": 8}},
        pretrain={"objective": "mlm", "head_steps": 5, "eval_texts": 4, "whole_word": False},
        training={"epochs": 2, "batch_size": 16, "learning_rate": 3e-3, "max_length": 32},
    )
    result = lmforge.run_recipe(load_recipe(path), progress=False)
    training = result.summary()["training"]
    assert training["trainable_parameters"] < training["total_parameters"]
    assert result.version is not None
    assert not (result.version.path / "adapter_config.json").exists()  # merged
    assert json.loads((result.version.path / "config.json").read_text())["architectures"] == [
        "BertForMaskedLM"
    ]


def test_mlm_pretraining_validates_on_loss_and_resumes(
    home: Settings, tmp_path: Path, tiny_base: Path, one_thread: None
) -> None:
    path = pretrain_recipe(
        tmp_path,
        tiny_base,
        pretrain={"objective": "mlm", "head_steps": 3, "eval_texts": 4},
        training={
            "epochs": 2,
            "batch_size": 32,
            "learning_rate": 3e-3,
            "max_length": 32,
            "eval_every_steps": 2,
            "early_stopping": {"metric": "loss", "patience": 3},
        },
    )
    recipe = load_recipe(path)
    first = lmforge.run_recipe(recipe, register=False, progress=False)
    outcome = first.output.outcome  # type: ignore[attr-defined]
    assert outcome.history and "val_loss" in outcome.best
    assert (first.run_dir / "checkpoints").is_dir()
    again = lmforge.run_recipe(recipe, register=False, resume=first.run_dir, progress=False)
    assert again.run_dir == first.run_dir
    assert again.output.outcome.steps == outcome.steps  # type: ignore[attr-defined]
    assert again.metrics == first.metrics


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        (
            {"data": {"source": {"builtin": "rotten_tomatoes", "label_column": "label"}}},
            "data.source.label_column: task pretrain learns from unlabelled text only",
        ),
        ({"pretrain": {"objective": "span"}}, "pretrain.objective"),
        ({"model": {"base": "smollm2-135m-instruct"}}, "pretrain.objective mlm needs an encoder"),
        (
            {"model": {"base": "minilm-l6"}, "pretrain": {"objective": "clm"}},
            "pretrain.objective clm needs a decoder",
        ),
    ],
)
def test_the_cli_answers_recipe_mistakes_in_one_line(
    home: Settings, tmp_path: Path, tiny_base: Path, changes: dict[str, Any], needle: str
) -> None:
    result = cli("run", str(pretrain_recipe(tmp_path, tiny_base, **changes)))
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr
