"""POST /v1/predict with a multi-task version: task picks the head, tasks answers several from
one encoder pass, and a request that names none (or a wrong one) gets a 422 naming the tasks."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from transformers import AutoTokenizer

from conftest import LiveServer, register_copy, serve_config
from lmforge.models.loading import MODEL_BUILD_LOCK
from lmforge.models.meta import HeadMeta, MultitaskMeta, write_model_meta
from lmforge.models.multitask import build_multitask, save_multitask
from lmforge.registry import Registry
from lmforge.runtime.multitask import MultitaskPredictor
from lmforge.settings import Settings

HEADS = {"english": ["negative", "positive"], "topic": ["food", "sport", "weather"]}


def multitask_folder(base: Path, folder: Path) -> Path:
    """An untrained multi-task version folder on ``base`` (two heads), as the task writes it."""
    with MODEL_BUILD_LOCK:
        model = build_multitask(base, HEADS)
    save_multitask(model, folder)
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(folder))
    meta = MultitaskMeta(
        task="multitask",
        tasks=[HeadMeta(name=n, labels=labels) for n, labels in HEADS.items()],
        base_model="tiny",
        max_length=32,
    )
    write_model_meta(folder, meta)
    return folder


@pytest.fixture(scope="module")
def site(
    tiny_base: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    settings = Settings(home=tmp_path_factory.mktemp("multi-home"), database_url=None)
    folder = multitask_folder(tiny_base, tmp_path_factory.mktemp("multi-model"))
    registry = Registry(settings)
    staging = registry.new_staging_dir()
    shutil.copytree(folder, staging, dirs_exist_ok=True)
    registry.register(
        "multi",
        staging,
        task="multitask",
        base_model="tiny",
        labels=[],
        metrics={"accuracy": 0.5},
        baselines={},
        stage="production",
    )
    register_copy(settings, tiny_model_dir, "single", stage="production")
    config = serve_config(auth={"enabled": False}, prediction_log={"sample_rate": 1.0})
    with LiveServer(config, settings) as server:
        server.folder = folder
        yield server


def predict(site: Any, **body: Any) -> httpx.Response:
    return httpx.post(site.url + "/v1/predict", json=body, timeout=60)


def assert_422(response: httpx.Response, code: str, *needles: str) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code
    for needle in needles:
        assert needle in error["message"], error["message"]


def test_task_picks_the_head(site: Any) -> None:
    r = predict(site, model="multi", task="topic", inputs=["snow in the north", "a goal"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["task"] == "topic" and body["backend"] == "torch-fp32"
    assert [set(p["scores"]) for p in body["predictions"]] == [{"food", "sport", "weather"}] * 2
    expected = MultitaskPredictor(site.folder).predict(["snow in the north"], "topic")[0]
    assert body["predictions"][0]["score"] == pytest.approx(expected.score, abs=1e-5)


def test_tasks_answers_each_asked_head(site: Any) -> None:
    r = predict(site, model="multi", tasks=["english", "topic"], inputs=["a wonderful film"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["predictions"] == []
    assert set(body["tasks"]) == {"english", "topic"}
    assert set(body["tasks"]["english"][0]["scores"]) == {"negative", "positive"}
    ids = {body["tasks"][t][0]["prediction_id"] for t in ("english", "topic")}
    assert len(ids) == 2  # each head's answer is its own logged prediction


def test_a_multitask_model_without_task_is_422_naming_the_tasks(site: Any) -> None:
    assert_422(predict(site, model="multi", inputs=["x"]), "missing_task", "english, topic")
    assert_422(
        predict(site, model="multi", task="colour", inputs=["x"]),
        "unknown_task",
        "'colour'",
        "english, topic",
    )
    assert_422(
        predict(site, model="multi", task="topic", tasks=["topic"], inputs=["x"]),
        "invalid_task",
        "not both",
    )


def test_a_single_task_model_refuses_task(site: Any) -> None:
    assert_422(
        predict(site, model="single", task="english", inputs=["x"]),
        "invalid_task",
        "single-task",
    )
    assert predict(site, model="single", inputs=["a wonderful film"]).status_code == 200
