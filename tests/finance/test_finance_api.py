"""The finance routes on a live server: POST /v1/finance/headlines (scope, 422s naming the
field, limits, stored once, corrections through /v1/feedback), GET /v1/finance/timeline and
/alerts, the surge rule on the server's monitor loop, a wrong model refused at start."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fin_helpers import LABELS, KeywordScorer, build_sentiment_dir, register

from conftest import LiveServer, serve_config
from lmforge.errors import LmforgeError
from lmforge.finance import FinanceMonitor, Headline
from lmforge.registry import Registry
from lmforge.serve import KeyStore
from lmforge.settings import Settings


@pytest.fixture(scope="module")
def sentiment_dir(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sentiment_dir(tiny_base, tmp_path_factory.mktemp("tiny-sentiment"))


def surge_before(settings: Settings, now: datetime) -> None:
    """Stored (not judged) headlines of 'fin': 30% negative for 27 days, then 80% for 3."""
    rows = []
    for days_ago in range(30, 0, -1):
        when = now - timedelta(days=days_ago) + timedelta(hours=1)
        negative = 16 if days_ago <= 3 else 6
        rows += [
            Headline(f"{days_ago}-{j}", when, "Shares crash" if j < negative else "Tesco opens")
            for j in range(20)
        ]
    monitor = FinanceMonitor("fin", Registry(settings).engine)
    monitor.store(KeywordScorer("fin").score(rows))


@pytest.fixture
def server(tmp_path: Path, sentiment_dir: Path) -> Iterator[Any]:
    settings = Settings(home=tmp_path / "home", database_url=None)
    register(settings, sentiment_dir, "fin", LABELS)
    surge_before(settings, datetime.now(UTC))
    config = serve_config(
        prediction_log={"flush_seconds": 0.05},
        limits={"rate_per_second": None},
        finance={"model": "fin", "interval": "0.1s", "max_headlines": 3},
    )
    store = KeyStore(Registry(settings).engine)
    with LiveServer(config, settings) as live:
        live.keys = {s: store.create(s, [s])[1] for s in ("predict", "feedback")}
        yield live


def call(server: Any, method: str, path: str, scope: str | None, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.keys[scope]}"} if scope else {}
    headers.update(kw.pop("headers", {}))
    return httpx.request(method, server.url + path, headers=headers, timeout=60, **kw)


BATCH = {
    "headlines": [
        {"id": "a1", "text": "Tesco profits crash", "time": "2020-03-02T09:30:00Z"},
        {"text": "FTSE 100 rallies", "time": "2020-03-02"},
    ]
}


def test_headlines_are_scored_stored_once_and_correctable(server: Any) -> None:
    assert call(server, "POST", "/v1/finance/headlines", None, json=BATCH).status_code == 401
    wrong = call(server, "POST", "/v1/finance/headlines", "feedback", json=BATCH)
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "missing_scope"
    first = call(server, "POST", "/v1/finance/headlines", "predict", json=BATCH)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["model"] == "fin:v1" and body["stored"] == 2
    rows = body["headlines"]
    assert rows[0]["id"] == "a1" and rows[0]["label"] in LABELS
    assert rows[0]["entities"] == [{"name": "Tesco", "kind": "company"}]
    assert set(rows[1]["scores"]) == set(LABELS) and rows[1]["id"].startswith("h")
    again = call(server, "POST", "/v1/finance/headlines", "predict", json=BATCH)
    assert again.json()["stored"] == 0
    fix = {"prediction_id": rows[0]["prediction_id"], "label": "negative"}
    assert call(server, "POST", "/v1/feedback", "feedback", json=fix).status_code == 200
    timeline = call(
        server, "GET", "/v1/finance/timeline", "predict", params={"until": "2020-03-03"}
    )
    assert timeline.status_code == 200
    assert [d["key"] for d in timeline.json()["days"]] == ["2020-03-02"]
    assert timeline.json()["days"][0]["volume"] == 2


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"headlines": []}, "headlines", "invalid_field"),
        ({}, "headlines", "missing_field"),
        ({"headlines": [{"text": "a", "time": "soon"}]}, "headlines.0.time", "invalid_field"),
        ({"headlines": [{"time": "2020-01-01"}]}, "headlines.0.text", "missing_field"),
        ({"headlines": [{"text": " ", "time": "2020-01-01"}]}, "headlines.0.text", "invalid_field"),
        ({"headlines": [{"text": "a", "time": "2020-01-01", "x": 1}]}, "headlines.0.x", None),
        # a lone surrogate: refused by the JSON parser, before any tokenizer sees it
        ({"headlines": [{"text": "a\ud800", "time": "2020-01-01"}]}, "headlines.0.text", None),
        ({"headlines": [{"text": "a", "time": "2020-01-01"}] * 4}, "headlines", "too_many_inputs"),
    ],
)
def test_bad_batches_are_422_naming_the_field(
    server: Any, body: dict[str, Any], param: str, code: str | None
) -> None:
    # the body as JSON text: ASCII escapes carry a lone surrogate, which httpx would not encode
    raw = {"content": json.dumps(body), "headers": {"Content-Type": "application/json"}}
    r = call(server, "POST", "/v1/finance/headlines", "predict", **raw)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["param"] == param and (code is None or error["code"] == code)
    assert param in error["message"] or code == "too_many_inputs"


def test_the_server_loop_fires_the_surge_alert(server: Any) -> None:
    assert call(server, "GET", "/v1/finance/alerts", None).status_code == 401
    deadline = time.monotonic() + 60  # a bound on a hung loop, not a measurement
    alerts: list[Any] = []
    while not alerts and time.monotonic() < deadline:
        alerts = call(server, "GET", "/v1/finance/alerts", "predict").json()["data"]
        time.sleep(0.1)
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert["rule"] == "finance-surge" and alert["state"] == "firing"
    assert alert["value"] == pytest.approx(0.8) and alert["details"]["baseline_mean"] < 0.4
    assert len(alert["details"]["top_headlines"]) == 5
    for kept in alert["details"]["top_headlines"]:  # each explained by the registered fin:v1
        why = kept["why"]
        assert why["method"] == "occlusion" and why["target"] == "negative"
        assert all(w["word"] in kept["text"].split() and w["score"] > 0 for w in why["words"])
    metrics = httpx.get(server.url + "/metrics", timeout=30).text
    assert 'lmforge_alerts_fired_total{rule="finance-surge"} 1.0' in metrics
    timeline = call(server, "GET", "/v1/finance/timeline", "predict").json()
    assert len(timeline["days"]) == 30 and timeline["alerts"][0]["id"] == alert["id"]


def test_a_wrong_model_is_refused_at_start(tmp_path: Path, tiny_model_dir: Path) -> None:
    from lmforge.serve import create_app

    settings = Settings(home=tmp_path / "home", database_url=None)
    register(settings, tiny_model_dir, "movies", ["negative", "positive"])
    with pytest.raises(LmforgeError, match="movies:v1 is not a three-class sentiment model"):
        create_app(serve_config(finance={"model": "movies"}), settings)


def test_finance_routes_are_off_without_finance(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", database_url=None)
    store = KeyStore(Registry(settings).engine)
    key = store.create("p", ["predict"])[1]
    with LiveServer(serve_config(), settings) as live:
        r = httpx.get(live.url + "/v1/finance/alerts", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "finance_off"


def test_finance_on_the_command_line_keeps_the_sections_settings() -> None:
    from lmforge.serve import ServeConfig
    from lmforge.serve.config import with_command_line

    config = ServeConfig.model_validate({"finance": {"model": "a", "max_headlines": 5}})
    switched = with_command_line(config, finance="b")
    assert switched.finance is not None
    assert switched.finance.model == "b" and switched.finance.max_headlines == 5
    fresh = with_command_line(ServeConfig(), finance="c").finance
    assert fresh is not None and fresh.surge.z == 3.0 and fresh.surge.window.days == 3
