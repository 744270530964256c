"""The typed lmforge.json: every file today's writers produce reads back and is written again
byte for byte; a missing file is "not a model", a damaged or unknown one is "unavailable"."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lmforge.errors import ModelNotFoundError, ModelUnavailableError
from lmforge.models.meta import (
    AssistantMeta,
    ClassificationMeta,
    GenerationMeta,
    SimilarityMeta,
    derived_meta,
    read_model_meta,
    require_classifier,
    write_model_meta,
)
from lmforge.recipe.schema import CleaningConfig

CLEANING = CleaningConfig().model_dump()
# Each file exactly as the writers before the typed metadata wrote it (same keys, same order).
WRITTEN: dict[str, dict[str, Any]] = {
    "classification": {
        "task": "classification",
        "labels": ["negative", "positive"],
        "base_model": "minilm-l6",
        "text_prefix": "",
        "max_length": 128,
        "cleaning": CLEANING,
        "precision": "fp32",
    },
    "compressed": {
        "task": "classification",
        "labels": ["negative", "positive"],
        "base_model": "minilm-l6",
        "text_prefix": "query: ",
        "max_length": 128,
        "cleaning": CLEANING,
        "precision": "bf16",
        "structure": {"kind": "pruned", "heads": 3, "training": {"epochs": 1, "loss": None}},
        "runtime": {"backend": "onnx-int8"},
        "compression": {"variant": "pruned/onnx-int8", "parent": "toy:v1"},
    },
    "similarity": {
        "task": "similarity",
        "labels": [],
        "base_model": "multilingual-e5-small",
        "text_prefix": "query: ",
        "passage_prefix": "passage: ",
        "max_length": 64,
        "cleaning": CLEANING,
    },
    "generation": {
        "task": "generation",
        "labels": [],
        "base_model": "smollm2-135m-instruct",
        "max_length": 256,
    },
    "assistant": {"task": "assistant", "labels": [], "base_model": "minilm-l6"},
}
TYPES = {
    "classification": ClassificationMeta,
    "compressed": ClassificationMeta,
    "similarity": SimilarityMeta,
    "generation": GenerationMeta,
    "assistant": AssistantMeta,
}


@pytest.mark.parametrize("kind", sorted(WRITTEN))
def test_todays_files_read_and_write_back_unchanged(kind: str, tmp_path: Path) -> None:
    text = json.dumps(WRITTEN[kind], indent=1)
    (tmp_path / "lmforge.json").write_text(text)
    meta = read_model_meta(tmp_path)
    assert type(meta) is TYPES[kind]
    out = tmp_path / "copy"
    out.mkdir()
    write_model_meta(out, meta)
    assert (out / "lmforge.json").read_text() == text


def test_the_runtime_view_of_each_file(tmp_path: Path) -> None:
    (tmp_path / "lmforge.json").write_text(json.dumps(WRITTEN["compressed"]))
    compressed = require_classifier(read_model_meta(tmp_path), tmp_path)
    assert compressed.backend == "onnx-int8" and compressed.max_length == 128
    plain = ClassificationMeta.model_validate({**WRITTEN["classification"], "cleaning": {}})
    assert plain.backend == "torch-fp32" and plain.cleaning == CleaningConfig()
    similarity = SimilarityMeta.model_validate({"task": "similarity", "max_length": 8})
    assert similarity.passage == similarity.text_prefix == ""


def test_unknown_keys_are_kept_through_a_compressed_copy() -> None:
    parent = ClassificationMeta.model_validate({**WRITTEN["compressed"], "calibrated": True})
    child = derived_meta(parent, compression={"variant": "original/onnx-fp32", "parent": "t:v2"})
    data = child.model_dump(mode="json", exclude_none=True)
    assert "runtime" not in data  # the variant registers its own backend
    assert data["calibrated"] is True and data["structure"] == WRITTEN["compressed"]["structure"]
    assert data["compression"] == {"variant": "original/onnx-fp32", "parent": "t:v2"}


def test_a_folder_without_lmforge_json_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not an lmforge model folder"):
        read_model_meta(tmp_path)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", r"lmforge\.json is damaged \(JSONDecodeError"),
        ('["a list"]', r"lmforge\.json is damaged \(the top level"),
        (
            '{"task": "classification", "labels": ["a", "b"]}',
            r"\(classification\.max_length",
        ),
        ('{"task": "classification", "labels": "x", "max_length": 8}', r"labels"),
        ('{"task": "ranking", "labels": []}', "task 'ranking', which this lmforge does not"),
        ('{"labels": []}', "discriminator 'task'"),
    ],
)
def test_a_damaged_or_unknown_file_is_unavailable_in_one_line(
    tmp_path: Path, content: str, needle: str
) -> None:
    (tmp_path / "lmforge.json").write_text(content)
    with pytest.raises(ModelUnavailableError, match=needle) as info:
        read_model_meta(tmp_path)
    assert "\n" not in info.value.message


@pytest.mark.parametrize("kind", ["similarity", "generation", "assistant"])
def test_only_a_classifier_passes_require_classifier(kind: str, tmp_path: Path) -> None:
    (tmp_path / "lmforge.json").write_text(json.dumps(WRITTEN[kind]))
    meta = read_model_meta(tmp_path)
    with pytest.raises(Exception, match=f"holds a {kind} model, not a classifier — serve it with"):
        require_classifier(meta, tmp_path)


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"max_length": "abc"}, r"max_length: Input should be a valid integer"),
        ({"max_length": -1}, r"max_length: Input should be greater than or equal to 1"),
        ({"max_length": 0}, r"max_length: Input should be greater than or equal to 1"),
        ({"labels": []}, r"labels: List should have at least 2 items"),
        ({"labels": ["only"]}, r"labels: List should have at least 2 items"),
        ({"labels": ["a", "a"]}, r"labels: Value error, labels must be distinct"),
        ({"labels": ["a", ""]}, r"labels\.1: String should have at least 1 character"),
        ({"labels": ["a", 2]}, r"labels\.1: Input should be a valid string"),
        ({"cleaning": "yes"}, r"cleaning: Input should be a valid dictionary"),
        ({"cleaning": {"max_chars": -5}}, r"cleaning\.max_chars: Input should be greater than 0"),
    ],
)
def test_values_a_classifier_cannot_run_with_are_refused(
    tmp_path: Path, changes: dict[str, Any], needle: str
) -> None:
    (tmp_path / "lmforge.json").write_text(json.dumps({**WRITTEN["classification"], **changes}))
    with pytest.raises(ModelUnavailableError, match=needle) as info:
        read_model_meta(tmp_path)
    assert "lmforge.json is damaged" in info.value.message and "\n" not in info.value.message


@pytest.mark.parametrize("kind", ["similarity", "generation"])
def test_a_non_positive_max_length_is_refused_for_every_task(kind: str, tmp_path: Path) -> None:
    (tmp_path / "lmforge.json").write_text(json.dumps({**WRITTEN[kind], "max_length": -1}))
    with pytest.raises(ModelUnavailableError, match=rf"{kind}\.max_length: Input should be"):
        read_model_meta(tmp_path)
