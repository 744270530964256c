"""Promotion goes through one library function for the CLI and the server: a version becomes
production only once it loads completely; a refused promotion leaves the registry unchanged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import register_copy
from lmforge.errors import ModelUnavailableError
from lmforge.registry import Registry
from lmforge.settings import Settings
from lmforge.tasks.promote import check_version, promote_version


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", database_url=None)


def _stages(registry: Registry, name: str) -> list[str]:
    return [v.stage for v in registry.list(name)]


def _edit_meta(folder: Path, **changes: object) -> None:
    meta = json.loads((folder / "lmforge.json").read_text())
    (folder / "lmforge.json").write_text(json.dumps({**meta, **changes}))


def test_a_truncated_onnx_version_is_not_promoted(settings: Settings, tiny_model_dir: Path) -> None:
    register_copy(settings, tiny_model_dir, "tiny", stage="production")
    registry = Registry(settings)
    folder = registry.get(register_copy(settings, tiny_model_dir, "tiny")).path
    data = (folder / "model.int8.onnx").read_bytes()
    (folder / "model.int8.onnx").write_bytes(data[: len(data) // 3])
    _edit_meta(folder, runtime={"backend": "onnx-int8"})
    with pytest.raises(ModelUnavailableError, match=r"v2/model\.int8\.onnx") as info:
        promote_version("tiny:v2", settings)
    assert "\n" not in info.value.message
    assert _stages(registry, "tiny") == ["production", "candidate"]
    assert registry.get("tiny").version == 1


def test_labels_that_do_not_match_the_head_are_not_promoted(
    settings: Settings, tiny_model_dir: Path
) -> None:
    registry = Registry(settings)
    folder = registry.get(register_copy(settings, tiny_model_dir, "tiny")).path
    _edit_meta(folder, labels=["a", "b", "c"])
    with pytest.raises(ModelUnavailableError, match="lists 3 labels but the model's head has 2"):
        promote_version("tiny:v1", settings, registry=registry)
    assert _stages(registry, "tiny") == ["candidate"]


def test_a_version_that_loads_is_promoted_and_the_old_one_archived(
    settings: Settings, tiny_model_dir: Path
) -> None:
    register_copy(settings, tiny_model_dir, "tiny", stage="production")
    register_copy(settings, tiny_model_dir, "tiny")
    promoted = promote_version("tiny:v2", settings)
    assert promoted.stage == "production" and promoted.ref == "tiny:v2"
    assert _stages(Registry(settings), "tiny") == ["archived", "production"]


def _register(settings: Settings, source: Path, name: str, meta: dict[str, object]) -> Path:
    registry = Registry(settings)
    staging = registry.new_staging_dir()
    shutil.copytree(source, staging, dirs_exist_ok=True)
    (staging / "lmforge.json").write_text(json.dumps(meta))
    task = str(meta["task"])
    version = registry.register(
        name, staging, task=task, base_model="tiny", labels=[], metrics={}, baselines={}
    )
    return version.path


def test_similarity_and_generation_versions_are_checked_by_loading_them(
    settings: Settings, tiny_base: Path, tiny_decoder_dir: Path
) -> None:
    encoder = _register(
        settings, tiny_base, "pairs", {"task": "similarity", "labels": [], "max_length": 32}
    )
    decoder = _register(
        settings, tiny_decoder_dir, "chat", {"task": "generation", "labels": [], "max_length": 64}
    )
    registry = Registry(settings)
    for folder in (encoder, decoder):
        weights = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    for ref in ("pairs:v1", "chat:v1"):
        with pytest.raises(ModelUnavailableError, match=r"cannot load the (encoder|decoder)"):
            promote_version(ref, settings)
        assert _stages(registry, ref.split(":")[0]) == ["candidate"]
    shutil.copy2(tiny_base / "model.safetensors", encoder / "model.safetensors")
    shutil.copy2(tiny_decoder_dir / "model.safetensors", decoder / "model.safetensors")
    assert promote_version("pairs:v1", settings).stage == "production"
    assert promote_version("chat:v1", settings).stage == "production"


def test_a_registry_row_and_a_file_of_different_tasks_are_unavailable(
    settings: Settings, tiny_model_dir: Path
) -> None:
    registry = Registry(settings)
    version = registry.get(register_copy(settings, tiny_model_dir, "tiny"))
    _edit_meta(version.path, task="similarity")
    with pytest.raises(ModelUnavailableError, match="says task similarity, the registry row"):
        check_version(version, settings)
