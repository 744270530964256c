"""A registered version that exists but cannot be loaded — damaged lmforge.json, truncated
weights — is answered 503 model_unavailable with one line, never 404, while others serve."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from conftest import LiveServer, register_copy, serve_config
from lmforge.registry import Registry
from lmforge.settings import Settings


def _damage_meta(folder: Path) -> None:
    (folder / "lmforge.json").write_text('{"task": "classification", "labels": ')


def _truncate_weights(folder: Path) -> None:
    weights = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(weights[: len(weights) // 3])


@pytest.mark.parametrize("damage", [_damage_meta, _truncate_weights])
def test_a_damaged_version_is_503_model_unavailable(
    tmp_path: Path, tiny_model_dir: Path, damage: Callable[[Path], None]
) -> None:
    settings = Settings(home=tmp_path / "home", database_url=None)
    register_copy(settings, tiny_model_dir, "tiny", stage="production")
    broken = register_copy(settings, tiny_model_dir, "broken", stage="production")
    damage(Registry(settings).get(broken).path)
    with LiveServer(serve_config(auth={"enabled": False}), settings) as server:
        url = server.url + "/v1/predict"
        r = httpx.post(url, json={"model": "broken", "inputs": ["x"]}, timeout=60)
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert error["code"] == "model_unavailable"
        assert "broken" in error["message"] and "\n" not in error["message"]
        ok = httpx.post(url, json={"model": "tiny", "inputs": ["x"]}, timeout=60)
        assert ok.status_code == 200
