"""The model pool under a client that cycles through more models than it holds: loads of
models not in memory are limited per key (429), and a model in steady use is not unloaded for
one requested once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import LiveServer, register_copy, serve_config
from lmforge.registry import Registry
from lmforge.serve import KeyStore
from lmforge.settings import Settings


@pytest.fixture(scope="module")
def home(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """tiny:v1 … tiny:v4 registered; nothing served at start (``models: []``)."""
    settings = Settings(home=tmp_path_factory.mktemp("pool-home"), database_url=None)
    register_copy(settings, tiny_model_dir, "tiny", stage="production")
    for _ in range(3):
        register_copy(settings, tiny_model_dir, "tiny")
    return settings


def server(settings: Settings, **limits: Any) -> LiveServer:
    config = serve_config(
        models=[], max_loaded=2, limits={"rate_per_second": None, **limits}, refresh_seconds=60
    )
    return LiveServer(config, settings)


@pytest.fixture
def keys(home: Settings) -> Iterator[dict[str, str]]:
    store = KeyStore(Registry(home).engine)
    created = {name: store.create(name, ["predict"]) for name in ("steady", "cycling")}
    yield {name: f"Bearer {secret}" for name, (_, secret) in created.items()}
    for key, _ in created.values():
        store.revoke(str(key.id))


def predict(live: LiveServer, key: str, model: str) -> httpx.Response:
    return httpx.post(
        live.url + "/v1/predict",
        json={"model": model, "inputs": ["fine"]},
        headers={"Authorization": key},
        timeout=60,
    )


def test_a_model_in_steady_use_is_not_unloaded_for_models_requested_once(
    home: Settings, keys: dict[str, str]
) -> None:
    with server(home, model_loads_per_minute=None) as live:
        for _ in range(10):
            assert predict(live, keys["steady"], "tiny:v1").status_code == 200
        for model in ("tiny:v2", "tiny:v3", "tiny:v4", "tiny:v2"):
            assert predict(live, keys["cycling"], model).status_code == 200
            loaded = set(live.state.pool.loaded)
            assert "tiny:v1" in loaded and model in loaded and len(loaded) == 2


def test_an_idle_model_is_unloaded_first(
    home: Settings, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the use of every request forgotten at once, eviction is least recently used.
    monkeypatch.setattr("lmforge.serve.models.USE_HALF_LIFE_S", 1e-9)
    with server(home, model_loads_per_minute=None) as live:
        for _ in range(10):
            assert predict(live, keys["steady"], "tiny:v1").status_code == 200
        assert predict(live, keys["cycling"], "tiny:v2").status_code == 200
        assert predict(live, keys["cycling"], "tiny:v3").status_code == 200
        assert set(live.state.pool.loaded) == {"tiny:v2", "tiny:v3"}


def test_loads_of_models_not_in_memory_are_limited_per_key(
    home: Settings, keys: dict[str, str]
) -> None:
    with server(home, model_loads_per_minute=2) as live:
        assert predict(live, keys["cycling"], "tiny:v1").status_code == 200
        assert predict(live, keys["cycling"], "tiny:v2").status_code == 200
        refused = predict(live, keys["cycling"], "tiny:v3")
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["Retry-After"]) >= 1
        error = refused.json()["error"]
        assert error["code"] == "load_rate_limited"
        assert "limits.model_loads_per_minute" in error["message"]
        assert "tiny:v3" not in live.state.pool.loaded
        # models already in memory still answer the same key, and another key may load
        assert predict(live, keys["cycling"], "tiny:v2").status_code == 200
        assert predict(live, keys["steady"], "tiny:v3").status_code == 200
