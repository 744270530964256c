"""The console's routes without a browser: /ui's files and headers, --no-ui, and the
/v1/console/ JSON (session, a version's details, monitor figures, drift) with their scopes."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from conftest import LiveServer, lmforge, serve_config
from lmforge.registry import Registry
from lmforge.serve import KeyStore, create_app
from lmforge.serve.config import with_command_line
from lmforge.serve.routes.console import CREATE_KEY
from lmforge.settings import Settings


def register(
    settings: Settings,
    folder: Path,
    name: str,
    *,
    stage: str = "candidate",
    parent: str | None = None,
    card: str | None = None,
    files: dict[str, str] | None = None,
) -> str:
    """Register a copy of a tiny classifier folder, with a model card and extra files."""
    registry = Registry(settings)
    staging = registry.new_staging_dir()
    shutil.copytree(folder, staging, dirs_exist_ok=True)
    if card is not None:
        (staging / "README.md").write_text(card, encoding="utf-8")
    for filename, text in (files or {}).items():
        (staging / filename).write_text(text, encoding="utf-8")
    labels = json.loads((staging / "lmforge.json").read_text())["labels"]
    version = registry.register(
        name,
        staging,
        task="classification",
        base_model="tiny",
        labels=labels,
        metrics={"macro_f1": 0.81, "accuracy": 0.84},
        baselines={"majority": {"macro_f1": 0.33, "accuracy": 0.5}},
        stage=stage,
        parent=parent,
    )
    return version.ref


TRADEOFF = {
    "variants": [
        {
            "structure": "full",
            "format": "torch-fp32",
            "name": "full/torch-fp32",
            "p50_ms": 9.0,
            "accuracy": 0.84,
            "macro_f1": 0.81,
            "within_budget": True,
            "error": None,
        },
        {
            "structure": "full",
            "format": "onnx-int8",
            "name": "full/onnx-int8",
            "p50_ms": 3.0,
            "accuracy": 0.83,
            "macro_f1": 0.80,
            "within_budget": True,
            "error": None,
        },
    ]
}


@pytest.fixture(scope="module")
def site(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    settings = Settings(home=tmp_path_factory.mktemp("console-home"), database_url=None)
    register(settings, tiny_model_dir, "tiny", stage="production", card="# tiny\n\n情感模型")
    register(
        settings,
        tiny_model_dir,
        "tiny",
        parent="tiny:v1",
        files={"tradeoff.json": json.dumps(TRADEOFF)},
    )
    store = KeyStore(Registry(settings).engine)
    keys = {
        "admin": store.create("boss", ["admin"])[1],
        "predict": store.create("reader", ["predict"])[1],
        "feedback": store.create("rater", ["feedback"])[1],
    }
    config = serve_config(
        models=["tiny"],
        limits={"rate_per_second": None},
        prediction_log={"flush_seconds": 0.05},
    )
    with LiveServer(config, settings) as server:
        server.keys = keys
        server.settings = settings
        yield server


def call(site: Any, path: str, scope: str | None = "predict", **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {site.keys[scope]}"} if scope else {}
    return httpx.get(site.url + path, headers=headers, params=params, timeout=120)


def test_the_page_has_a_strict_content_security_policy(site: Any) -> None:
    for path in ("/ui", "/ui/", "/ui/app.js", "/ui/app.css", "/ui/views.js", "/ui/finance.js"):
        r = httpx.get(site.url + path)
        assert r.status_code == 200, path
        policy = r.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert r.headers["x-content-type-options"] == "nosniff"
    page = httpx.get(site.url + "/ui").text
    assert '<script type="module" src="/ui/app.js"></script>' in page
    assert "<script>" not in page and re.search(r"\son[a-z]+\s*=", page) is None
    assert httpx.get(site.url + "/ui/app.js").headers["content-type"].startswith("text/javascript")


def test_only_the_console_files_are_served(site: Any) -> None:
    for name in ("..%2Fapp.py", "README.md", "%2e%2e%2fkeys.py", "x.js"):
        r = httpx.get(site.url + "/ui/" + name)
        assert r.status_code == 404, name
        assert r.json()["error"]["code"] == "not_found"


def test_no_ui_turns_the_console_off(home: Settings) -> None:
    assert "--no-ui" in lmforge("serve", "--help").stdout
    config = with_command_line(serve_config(models=[]), no_ui=True)
    assert config.ui is False
    off = TestClient(create_app(config, home))
    assert off.get("/ui").status_code == 404 and off.get("/ui/app.js").status_code == 404
    assert off.get("/v1/console/session").status_code == 200  # the JSON routes stay: API
    assert TestClient(create_app(serve_config(models=[]), home)).get("/ui").status_code == 200


def test_the_session_says_who_the_key_is(site: Any) -> None:
    anonymous = call(site, "/v1/console/session", scope=None).json()
    assert anonymous["auth"] is True and anonymous["keys_exist"] is True
    assert anonymous["key"] is None and anonymous["scopes"] == []
    assert anonymous["create_key"] == CREATE_KEY
    assert anonymous["served"] == {} and anonymous["decoders"] == []  # nothing without a key
    reader = call(site, "/v1/console/session").json()
    assert reader["key"] == {"name": "reader", "scopes": ["predict"]}
    assert reader["served"] == {"tiny": "tiny:v1"} and reader["explain"] is True
    assert reader["finance"] is False  # no --finance: the console shows no Finance view
    off = call(site, "/v1/finance/headlines")
    assert off.status_code == 404 and off.json()["error"]["code"] == "finance_off"
    wrong = httpx.get(
        site.url + "/v1/console/session", headers={"Authorization": "Bearer lmf_nope"}
    )
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_key"


def test_a_registry_without_keys_is_told_how_to_make_one(home: Settings) -> None:
    with LiveServer(serve_config(models=[]), home) as server:
        body = httpx.get(server.url + "/v1/console/session").json()
    assert body["keys_exist"] is False and body["create_key"] == CREATE_KEY
    with LiveServer(serve_config(models=[], auth={"enabled": False}), home) as server:
        body = httpx.get(server.url + "/v1/console/session").json()
    assert body["auth"] is False and body["scopes"] == ["admin"]  # every route is open


def test_a_version_with_its_card_baselines_and_tradeoff(site: Any) -> None:
    first = call(site, "/v1/console/models/tiny/versions/1").json()
    assert first["ref"] == "tiny:v1" and first["stage"] == "production"
    assert first["card"] == "# tiny\n\n情感模型" and first["tradeoff"] is None
    assert first["baseline_metrics"] == {"majority": {"macro_f1": 0.33, "accuracy": 0.5}}
    assert "path" not in first  # the server's folders are not a client's business
    second = call(site, "/v1/console/models/tiny/versions/2").json()
    assert second["parent"] == "tiny:v1" and second["card"] is None
    assert [v["name"] for v in second["tradeoff"]] == ["full/torch-fp32", "full/onnx-int8"]
    missing = call(site, "/v1/console/models/tiny/versions/9")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    assert call(site, "/v1/console/models/tiny/versions/1", scope=None).status_code == 401
    denied = call(site, "/v1/console/models/tiny/versions/1", scope="feedback")
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "missing_scope"


def test_monitor_figures_follow_the_traffic(site: Any) -> None:
    headers = {"Authorization": f"Bearer {site.keys['predict']}"}
    texts = ["a wonderful film", "a dull mess", "brilliant", "awful"]
    r = httpx.post(site.url + "/v1/predict", json={"inputs": texts}, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 60  # a bound on the log writer (flush_seconds 0.05)
    while True:
        body = call(site, "/v1/console/monitor/tiny", period=600, window=60).json()
        if sum(w["volume"] for w in body["windows"]) == 4 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert body["model"] == "tiny" and body["window_seconds"] == 60 and body["rules"] == []
    assert len(body["windows"]) == 10
    assert sum(w["volume"] for w in body["windows"]) == 4
    busy = [w for w in body["windows"] if w["volume"]]
    assert busy[-1]["requests_per_s"] == pytest.approx(busy[-1]["volume"] / 60, abs=1e-4)
    assert sum(busy[-1]["label_shares"].values()) == pytest.approx(1.0, abs=1e-3)
    assert busy[-1]["latency_p99_ms"] >= busy[-1]["latency_p50_ms"] > 0
    unknown = call(site, "/v1/console/monitor/nosuchmodel")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    assert "nosuchmodel" in unknown.json()["error"]["message"]
    too_many = call(site, "/v1/console/monitor/tiny", period=86400, window=10)
    assert too_many.status_code == 422 and too_many.json()["error"]["param"] == "window"
    drift = call(site, "/v1/console/monitor/tiny/drift", window=600).json()
    assert drift["volume"] == 4
    # this copy has no validation split to compare with, and the answer says so
    assert drift["drift"] is None and drift["drift_skipped"]
