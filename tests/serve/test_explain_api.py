"""POST /v1/explain through a real client: auth, the bounds (tokens, steps, characters, body,
queue), and an explanation computed in the worker process."""

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
def site(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    settings = Settings(home=tmp_path_factory.mktemp("explain-home"), database_url=None)
    register_copy(settings, tiny_model_dir, "tiny", stage="production")
    store = KeyStore(Registry(settings).engine)
    keys = {scope: store.create(scope, [scope])[1] for scope in ("predict", "feedback")}
    config = serve_config(
        limits={"max_chars": 200, "max_body_bytes": 2048, "rate_per_second": None},
        explain={
            "max_tokens": 12,
            "max_steps": 8,
            "concurrency": 1,
            "max_queue": 0,
            "timeout_s": 600,  # a spawned worker imports torch; the test machine is shared
        },
    )
    with LiveServer(config, settings) as server:
        server.keys = keys
        yield server


def post(site: Any, body: dict[str, Any], scope: str | None = "predict") -> httpx.Response:
    headers = {"Authorization": f"Bearer {site.keys[scope]}"} if scope else {}
    return httpx.post(site.url + "/v1/explain", json=body, headers=headers, timeout=700)


def assert_error(response: httpx.Response, status: int, code: str, *needles: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and "\n" not in error["message"]
    for needle in needles:
        assert needle in error["message"], error["message"]


def test_an_explanation_in_the_worker(site: Any) -> None:
    r = post(site, {"input": "a wonderful film", "method": "ig", "steps": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "tiny:v1" and body["explained_with"] == "tiny:v1 (torch-fp32)"
    assert [w["word"] for w in body["words"]] == ["a", "wonderful", "film"]
    assert body["steps"] == 4 and body["baseline"] == "[PAD]" and body["agrees"] is True
    total = sum(w["score"] for w in body["words"])
    assert abs(total - body["logit_difference"]) == pytest.approx(
        body["completeness_error"], abs=1e-4
    )
    r = post(
        site, {"model": "tiny:v1", "input": "dull", "method": "occlusion", "target": "positive"}
    )
    assert r.status_code == 200 and r.json()["target"] == "positive"
    assert "steps" not in r.json()


def test_auth_and_scope(site: Any) -> None:
    assert_error(post(site, {"input": "x"}, scope=None), 401, "missing_key")
    assert_error(post(site, {"input": "x"}, scope="feedback"), 403, "missing_scope", "predict")


def test_bounds(site: Any) -> None:
    assert_error(
        post(site, {"input": "a b", "steps": 9}), 422, "too_many_steps", "explain.max_steps"
    )
    assert_error(
        post(site, {"input": "a b", "method": "occlusion", "steps": 4}),
        422,
        "invalid_field",
        "integrated gradients only",
    )
    long = " ".join(["film"] * 20)  # 20 words, 22 tokens: over explain.max_tokens
    assert_error(post(site, {"input": long}), 422, "invalid_request", "explain.max_tokens")
    assert_error(post(site, {"input": "a" * 201}), 422, "input_too_long", "limits.max_chars")
    assert_error(post(site, {"input": "a" * 3000}), 413, "body_too_large")
    assert_error(post(site, {"input": "a", "method": "shap"}), 422, "invalid_field", "method")
    assert_error(post(site, {"input": "a", "extra": 1}), 422, "unknown_field")
    assert_error(post(site, {"input": "a", "target": "neutral"}), 422, "invalid_request", "neutral")
    assert_error(post(site, {"model": "nosuch", "input": "a"}), 404, "model_not_found")


def test_a_full_queue_answers_429(site: Any) -> None:
    service = site.app.state.explain
    service.pending = service.capacity  # as if that many explanations were running or waiting
    try:
        r = post(site, {"input": "a wonderful film"})
    finally:
        service.pending = 0
    assert_error(r, 429, "queue_full", "explain.max_queue")
    assert int(r.headers["Retry-After"]) >= 1
