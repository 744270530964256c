"""The models a server is told to hold: checked before it starts against the server's own
settings, and a request naming a model of the wrong kind is refused before anything loads."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import serve_config
from lmforge.errors import ModelNotFoundError
from lmforge.registry import Registry
from lmforge.serve.metrics import ServeMetrics
from lmforge.serve.models import ModelPool
from lmforge.serve.server import check_bind
from lmforge.settings import Settings


@pytest.fixture
def elsewhere(tmp_path: Path, home: Settings) -> Iterator[Settings]:
    """A home other than the environment's, holding a registered assistant and decoder."""
    settings = Settings(home=tmp_path / "elsewhere")
    registry = Registry(settings)
    for name, task in (("help-desk", "assistant"), ("chat", "generation")):
        staging = registry.new_staging_dir()
        (staging / "config.json").write_text("{}")
        (staging / "lmforge.json").write_text(json.dumps({"task": task}))
        registry.register(
            name, staging, task=task, base_model="x", labels=[], metrics={}, baselines={}
        )
    yield settings
    registry.engine.dispose()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_the_start_checks_use_the_servers_settings(elsewhere: Settings) -> None:
    config = serve_config(
        port=free_port(), assistant={"model": "help-desk"}, generation={"models": ["chat"]}
    )
    check_bind(config, elsewhere)  # registered there, not in the environment's home
    with pytest.raises(ModelNotFoundError, match="no registered model named 'help-desk'"):
        check_bind(config)
    wrong = serve_config(port=free_port(), generation={"models": ["help-desk"]})
    with pytest.raises(ModelNotFoundError, match=r"\(task assistant\) is not a generation model"):
        check_bind(wrong, elsewhere)


def test_embedding_refuses_a_decoder_or_an_assistant_before_loading(elsewhere: Settings) -> None:
    async def embed(ref: str) -> None:
        with ThreadPoolExecutor(1) as executor:
            pool = ModelPool(
                Registry(elsewhere), elsewhere, serve_config(), executor, ServeMetrics()
            )
            await pool.embedder(ref)

    for ref, task in (("chat", "generation"), ("help-desk:v1", "assistant")):
        with pytest.raises(ModelNotFoundError, match=rf"\(task {task}\) is not a similarity or"):
            asyncio.run(embed(ref))
    with pytest.raises(ModelNotFoundError, match="smollm2-135m-instruct is a decoder"):
        asyncio.run(embed("smollm2-135m-instruct"))
    with pytest.raises(ModelNotFoundError, match="is not a model reference"):
        asyncio.run(embed(str(elsewhere.home)))  # a request never makes the server read a path
