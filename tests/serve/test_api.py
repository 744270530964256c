"""The HTTP API through a real client against the real app on a loopback port (tiny models)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from sqlalchemy.orm import Session

from conftest import LiveServer, register_copy, serve_config
from lmforge.errors import ModelUnavailableError
from lmforge.monitor import PredictionLogRow
from lmforge.registry import Registry
from lmforge.serve import KeyStore
from lmforge.settings import Settings


@pytest.fixture(scope="module")
def site(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One server for the module: tiny:v1 in production, tiny:v2 a candidate, and keys."""
    settings = Settings(home=tmp_path_factory.mktemp("serve-home"), database_url=None)
    register_copy(settings, tiny_model_dir, "tiny", stage="production")
    register_copy(settings, tiny_model_dir, "tiny")
    store = KeyStore(Registry(settings).engine)
    keys = {scope: store.create(scope, [scope])[1] for scope in ("predict", "feedback", "admin")}
    config = serve_config(
        limits={"max_inputs": 4, "max_chars": 50, "max_body_bytes": 2048, "rate_per_second": None},
        prediction_log={"sample_rate": 1.0, "flush_seconds": 0.1},
    )
    with LiveServer(config, settings) as server:
        server.keys = keys
        server.store = store
        server.settings = settings
        yield server


def call(site: Any, method: str, path: str, scope: str | None = "predict", **kw: Any) -> Any:
    headers = kw.pop("headers", {})
    if scope:
        headers["Authorization"] = f"Bearer {site.keys[scope]}"
    return httpx.request(method, site.url + path, headers=headers, timeout=30, **kw)


def assert_error(response: httpx.Response, status: int, *needles: str) -> None:
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"]
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_predict_with_the_production_version(site: Any) -> None:
    r = call(site, "POST", "/v1/predict", json={"inputs": ["a wonderful film", "dull"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "tiny:v1" and body["backend"] == "torch-fp32"
    assert len(body["predictions"]) == 2
    for p in body["predictions"]:
        assert p["label"] in ("negative", "positive")
        assert sum(p["scores"].values()) == pytest.approx(1, abs=1e-4)
        assert p["score"] == max(p["scores"].values())


def test_predict_a_pinned_version_and_the_same_scores_as_the_runtime(
    site: Any, tiny_model_dir: Path
) -> None:
    from lmforge.runtime import Predictor

    r = call(site, "POST", "/v1/predict", json={"model": "tiny:v2", "inputs": ["brilliant"]})
    assert r.json()["model"] == "tiny:v2"
    expected = Predictor(tiny_model_dir).predict(["brilliant"])[0]
    assert r.json()["predictions"][0]["score"] == pytest.approx(expected.score, abs=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "status", "needles"),
    [
        ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, ["JSON"]),
        ({"content": b"[1, 2]", "headers": {"Content-Type": "application/json"}}, 400, ["object"]),
        ({"json": {"inputs": "one text"}}, 422, ["inputs"]),
        ({"json": {"inputs": [1, 2]}}, 422, ["inputs.0"]),
        ({"json": {"inputs": []}}, 422, ["inputs", "at least 1"]),
        ({"json": {}}, 422, ["'inputs' is missing"]),
        ({"json": {"inputs": ["x"], "temperature": 1}}, 422, ["unknown field 'temperature'"]),
        ({"json": {"model": "nope", "inputs": ["x"]}}, 404, ["no registered model named 'nope'"]),
        ({"json": {"model": "tiny:v9", "inputs": ["x"]}}, 404, ["no version 9"]),
        ({"json": {"model": "../../etc", "inputs": ["x"]}}, 404, ["not a model reference"]),
        ({"json": {"inputs": ["x"] * 5}}, 422, ["limit of 4", "limits.max_inputs"]),
        ({"json": {"inputs": ["x" * 51]}}, 422, ["51 characters", "limits.max_chars"]),
        ({"json": {"inputs": ["x" * 40] * 60}}, 413, ["2048 bytes", "limits.max_body_bytes"]),
    ],
)
def test_bad_requests_are_4xx_naming_the_problem(
    site: Any, kwargs: dict[str, Any], status: int, needles: list[str]
) -> None:
    assert_error(call(site, "POST", "/v1/predict", **kwargs), status, *needles)


def test_an_oversize_streamed_body_is_refused_too(site: Any) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"inputs": ["'
        for _ in range(10):
            yield b"x" * 500
        yield b'"]}'

    r = call(
        site, "POST", "/v1/predict", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert_error(r, 413, "limits.max_body_bytes")


def test_unknown_routes_and_methods(site: Any) -> None:
    assert_error(call(site, "GET", "/v1/nothing"), 404, "no route GET /v1/nothing")
    assert_error(call(site, "GET", "/v1/predict"), 405, "method not allowed")


@pytest.mark.parametrize(
    ("headers", "status", "needle"),
    [
        ({}, 401, "missing API key"),
        ({"Authorization": "Bearer lmf_wrong"}, 401, "invalid or revoked"),
        ({"Authorization": "Basic abc"}, 401, "missing API key"),
    ],
)
def test_requests_without_a_valid_key_are_refused(
    site: Any, headers: dict[str, str], status: int, needle: str
) -> None:
    r = call(site, "POST", "/v1/predict", scope=None, headers=headers, json={"inputs": ["x"]})
    assert_error(r, status, needle)
    assert r.headers["WWW-Authenticate"] == "Bearer"


def test_scopes_are_enforced(site: Any) -> None:
    r = call(site, "POST", "/v1/predict", scope="feedback", json={"inputs": ["x"]})
    assert_error(r, 403, "lacks the 'predict' scope")
    r = call(site, "POST", "/v1/models/tiny/versions/1/promote", scope="predict")
    assert_error(r, 403, "lacks the 'admin' scope")
    assert (
        call(site, "POST", "/v1/predict", scope="admin", json={"inputs": ["x"]}).status_code == 200
    )


def test_a_revoked_key_stops_working(site: Any) -> None:
    key, secret = site.store.create("short-lived", ["predict"])
    headers = {"Authorization": f"Bearer {secret}"}
    ok = call(
        site, "POST", "/v1/predict", scope=None, headers=dict(headers), json={"inputs": ["x"]}
    )
    assert ok.status_code == 200
    site.store.revoke(key.name)
    r = call(site, "POST", "/v1/predict", scope=None, headers=dict(headers), json={"inputs": ["x"]})
    assert_error(r, 401, "invalid or revoked")


def test_models_routes(site: Any) -> None:
    listing = call(site, "GET", "/v1/models").json()["data"]
    assert [m["name"] for m in listing] == ["tiny"]
    one = call(site, "GET", "/v1/models/tiny").json()
    assert one["serving"] == "tiny:v1"
    assert [(v["version"], v["stage"]) for v in one["versions"]] == [
        (1, "production"),
        (2, "candidate"),
    ]
    assert one["versions"][0]["test_metrics"] == {"accuracy": 0.5}
    assert_error(call(site, "GET", "/v1/models/nope"), 404, "no registered model")


def test_embed_from_a_registered_version(site: Any) -> None:
    r = call(site, "POST", "/v1/embed", json={"model": "tiny:v1", "inputs": ["a", "b c d"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "tiny:v1" and body["dimensions"] == 32
    for vector in body["embeddings"]:
        assert sum(x * x for x in vector) == pytest.approx(1, abs=1e-4)
    assert_error(
        call(site, "POST", "/v1/embed", json={"model": "nope", "inputs": ["a"]}), 404, "nope"
    )


def test_a_model_that_exists_but_cannot_be_used_is_503_wherever_it_surfaces(
    site: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = site.state.pool
    damaged = ModelUnavailableError("tiny:v1 is damaged: model.safetensors is truncated")

    async def classifier(ref: str | None, requester: str | None = None) -> Any:
        raise damaged

    def decoder(ref: str | None) -> Any:
        raise damaged

    # Loading a model to classify with (the routes' load()), and a lookup outside it (the
    # generic LmforgeError handler): both answer 503 model_unavailable, never 404 or 422.
    monkeypatch.setattr(pool, "classifier", classifier)
    monkeypatch.setattr(pool, "decoder", decoder)
    chat = {"model": "any", "messages": [{"role": "user", "content": "hi"}]}
    for path, body in [("/v1/predict", {"inputs": ["x"]}), ("/v1/chat/completions", chat)]:
        r = call(site, "POST", path, json=body)
        assert_error(r, 503, "tiny:v1 is damaged")
        assert r.json()["error"]["code"] == "model_unavailable"
        assert r.json()["error"]["type"] == "server_error"
    text = call(site, "GET", "/metrics", scope=None).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    rejected = {
        s.labels["reason"]: s.value
        for s in families["lmforge_rejected_requests"].samples
        if s.name.endswith("_total")
    }
    assert rejected["model_unavailable"] >= 2


def test_health_readiness_and_metrics(site: Any) -> None:
    assert call(site, "GET", "/healthz", scope=None).json() == {"status": "ok"}
    ready = call(site, "GET", "/readyz", scope=None)
    assert ready.status_code == 200 and ready.json()["models"] == {"tiny": "tiny:v1"}
    call(site, "POST", "/v1/predict", json={"inputs": ["x"]})
    call(site, "POST", "/v1/predict", json={"inputs": []})
    text = call(site, "GET", "/metrics", scope=None).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = {
        (s.labels["route"], s.labels["status"]): s.value
        for s in families["lmforge_http_requests"].samples
        if s.name.endswith("_total")
    }
    assert requests[("/v1/predict", "200")] >= 1 and requests[("/v1/predict", "422")] >= 1
    assert "lmforge_http_request_duration_seconds" in families
    assert any(s.value >= 1 for s in families["lmforge_batch_size"].samples)
    assert "lmforge_queue_depth" in families
    caps = [s.value for s in families["lmforge_batch_cap"].samples]
    assert caps and all(1 <= cap <= 32 for cap in caps)  # the default max_batch is 32
    info = families["lmforge_model_info"].samples
    assert any(
        s.labels
        == {
            "model": "tiny",
            "version": "1",
            "kind": "classifier",
            "backend": "torch-fp32",
            "alias": "tiny",
        }
        for s in info
    )
    rejected = {s.labels["reason"] for s in families["lmforge_rejected_requests"].samples}
    assert "invalid_field" in rejected


def test_sampled_predictions_reach_the_database(site: Any) -> None:
    call(site, "POST", "/v1/predict", json={"inputs": ["logged text"]})
    engine = Registry(site.settings).engine
    deadline = time.monotonic() + 10
    rows: list[PredictionLogRow] = []
    while time.monotonic() < deadline and not rows:
        with Session(engine) as session:
            rows = list(
                session.scalars(
                    select(PredictionLogRow).where(PredictionLogRow.key_name == "predict")
                )
            )
        time.sleep(0.1)
    assert rows, "no prediction was logged"
    row = rows[-1]
    assert row.model == "tiny" and row.version in (1, 2) and row.label in ("negative", "positive")
    assert 0 <= row.score <= 1 and row.latency_ms > 0
    assert row.text is None  # texts are kept only when prediction_log.include_text is on


def test_the_openapi_document_describes_routes_and_auth(site: Any) -> None:
    doc = call(site, "GET", "/openapi.json", scope=None).json()
    assert {"/v1/predict", "/v1/embed", "/v1/models", "/healthz", "/metrics"} <= set(doc["paths"])
    reload = doc["paths"]["/v1/models/{name}/versions/{version}/reload"]["post"]
    assert reload["security"] == [{"apiKey": []}]
    assert doc["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert doc["paths"]["/v1/predict"]["post"]["security"] == [{"apiKey": []}]
    assert "429" in doc["paths"]["/v1/predict"]["post"]["responses"]


def test_concurrent_clients_are_batched_together(site: Any) -> None:
    results: list[int] = []

    def client(i: int) -> None:
        with httpx.Client(timeout=30) as http:
            headers = {"Authorization": f"Bearer {site.keys['predict']}"}
            for j in range(5):
                r = http.post(
                    site.url + "/v1/predict", json={"inputs": [f"text {i} {j}"]}, headers=headers
                )
                results.append(r.status_code)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 40
    sizes = list(site.state.pool.loaded["tiny:v1"].batcher.stats.last_sizes)
    assert max(sizes) > 1, sizes


def test_json_error_shape_is_the_openai_one(site: Any) -> None:
    body = call(site, "POST", "/v1/predict", json={"inputs": []}).json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert json.dumps(body)  # plain JSON
