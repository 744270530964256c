"""A registered version through the runtime, as ``lmforge predict/evaluate/bench`` call it:
the texts to classify, predictions, and the bench's baseline lookup."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from conftest import register_copy
from lmforge.errors import LmforgeError
from lmforge.registry import Registry
from lmforge.runtime import versions
from lmforge.runtime.versions import predict_version, texts_to_classify
from lmforge.settings import Settings


def test_texts_come_from_arguments_then_the_files_non_blank_lines(tmp_path: Path) -> None:
    file = tmp_path / "texts.txt"
    file.write_text("first line\n\n   \nsecond line\n", encoding="utf-8")
    assert texts_to_classify(["given"], file) == ["given", "first line", "second line"]
    assert texts_to_classify(["only"]) == ["only"]


def test_a_missing_file_or_no_text_is_refused_naming_the_fix(tmp_path: Path) -> None:
    with pytest.raises(LmforgeError, match=r"input file .* not found") as missing:
        texts_to_classify([], tmp_path / "nope.txt")
    assert "--file" in missing.value.message
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n")
    with pytest.raises(LmforgeError, match="no texts to classify"):
        texts_to_classify([], blank)


def test_predict_version_names_the_version_and_backend(
    home: Settings, tiny_model_dir: Path
) -> None:
    ref = register_copy(home, tiny_model_dir, "toy")
    result = predict_version("toy", ["good", "bad"], settings=home)
    doc = result.to_json()
    assert doc["model"] == ref and doc["backend"] == result.backend
    assert [p["text"] for p in doc["predictions"]] == ["good", "bad"]
    assert {p["label"] for p in doc["predictions"]} <= {"negative", "positive"}


def test_bench_compares_a_compressed_version_with_its_parent(
    home: Settings, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent_ref = register_copy(home, tiny_model_dir, "toy")
    registry = Registry(home)
    staging = registry.new_staging_dir()
    shutil.copytree(tiny_model_dir, staging, dirs_exist_ok=True)
    child = registry.register(
        "toy",
        staging,
        task="classification",
        base_model="tiny",
        labels=["negative", "positive"],
        metrics={},
        baselines={},
        parent=parent_ref,
    )
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(versions, "bench_model", lambda folder, **kw: seen.append(kw))
    versions.bench_version(child.ref, settings=home)
    versions.bench_version(parent_ref, settings=home)
    assert seen[0]["baseline_folder"] == registry.get(parent_ref).path
    assert seen[1]["baseline_folder"] is None
