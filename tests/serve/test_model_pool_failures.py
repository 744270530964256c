"""The pool's record of failed loads: a version that failed is refused at once, without loading
it again, until a file of its folder changes; any exception a loader raises is a one-line
ModelUnavailableError, never an error that escapes as a 500 or stops the server."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import register_copy, serve_config
from lmforge.errors import ModelUnavailableError
from lmforge.registry import Registry
from lmforge.serve import models as pool_module
from lmforge.serve.metrics import ServeMetrics
from lmforge.serve.models import ModelPool
from lmforge.serve.unavailable import files_stamp
from lmforge.settings import Settings


def test_files_stamp_changes_with_any_file(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"12")
    first = files_stamp(tmp_path)
    assert [entry[0] for entry in first] == ["a.json", "sub/b.bin"]
    assert files_stamp(tmp_path) == first
    os.utime(tmp_path / "sub" / "b.bin", ns=(1, 1))  # the same content, touched
    assert files_stamp(tmp_path) != first
    touched = files_stamp(tmp_path)
    (tmp_path / "c.txt").write_text("")
    assert files_stamp(tmp_path) != touched


def test_an_unexpected_loader_error_is_unavailable_and_not_retried_until_files_change(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(home=tmp_path / "home", database_url=None)
    ref = register_copy(settings, tiny_model_dir, "tiny", stage="production")
    folder = Registry(settings).get(ref).path
    calls: list[Path] = []
    real = pool_module.Predictor

    def failing(path: Path, **kwargs: object) -> object:
        calls.append(path)
        if len(calls) == 1:
            raise ZeroDivisionError("a loader bug")  # nothing the loaders know
        return real(path, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pool_module, "Predictor", failing)

    async def scenario() -> list[str]:
        with ThreadPoolExecutor(1) as executor:
            pool = ModelPool(Registry(settings), settings, serve_config(), executor, ServeMetrics())
            messages = []
            for _ in range(2):
                with pytest.raises(ModelUnavailableError) as info:
                    await pool.classifier("tiny")
                messages.append(info.value.message)
            assert pool.unavailable.reason("tiny:v1") == messages[0]
            os.utime(folder / "lmforge.json")  # "fixed": a file changed
            served = await pool.classifier("tiny")
            assert served.ref == "tiny:v1" and pool.unavailable.reason("tiny:v1") is None
            await pool.close()
            return messages

    messages = asyncio.run(scenario())
    assert messages[0] == messages[1]
    assert "cannot load tiny:v1 (ZeroDivisionError: a loader bug)" in messages[0]
    assert "\n" not in messages[0]
    assert len(calls) == 2  # the second request did not load again; the one after the change did


def test_the_pool_promotes_an_embedding_model_only_once_it_loads(
    tmp_path: Path, tiny_base: Path
) -> None:
    import json
    import shutil

    settings = Settings(home=tmp_path / "home", database_url=None)
    registry = Registry(settings)
    staging = registry.new_staging_dir()
    shutil.copytree(tiny_base, staging, dirs_exist_ok=True)
    (staging / "lmforge.json").write_text(json.dumps({"task": "similarity", "max_length": 32}))
    version = registry.register(
        "pairs", staging, task="similarity", base_model="tiny", labels=[], metrics={}, baselines={}
    )
    weights = (version.path / "model.safetensors").read_bytes()
    (version.path / "model.safetensors").write_bytes(weights[: len(weights) // 2])

    async def promote() -> str:
        with ThreadPoolExecutor(1) as executor:
            pool = ModelPool(registry, settings, serve_config(), executor, ServeMetrics())
            try:
                with pytest.raises(ModelUnavailableError, match="cannot load the encoder"):
                    await pool.promote("pairs:v1")
                assert registry.get("pairs:v1").stage == "candidate"
                shutil.copy2(tiny_base / "model.safetensors", version.path / "model.safetensors")
                promoted = await pool.promote("pairs:v1")
                assert "embed:pairs:v1" in pool.loaded and "pairs" not in pool.aliases
                return promoted.stage
            finally:
                await pool.close()

    assert asyncio.run(promote()) == "production"
