"""The server's monitor: the monitor: config section (rules validated as one line), the figures
as gauges on /metrics, alerts fired on a schedule, counted, listed by GET /v1/alerts (scope,
filters, 422 on bad ones) and POSTed to a real webhook receiver on 127.0.0.1 — and a receiver
that is down (the alert is still stored, the failure counted)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import LiveServer, free_port, register_copy, serve_config
from lmforge.errors import RecipeError
from lmforge.monitor import Alert, AlertStore
from lmforge.registry import Registry
from lmforge.serve import KeyStore, load_serve_config
from lmforge.serve.metrics import ServeMetrics
from lmforge.settings import Settings
from log_figures import log_figures
from webhook_receiver import Receiver

BUSY = {"name": "busy", "metric": "volume", "threshold": 2, "window": "1h"}


def monitored(settings: Settings, webhook_url: str, retries: int = 3) -> Any:
    return serve_config(
        prediction_log={"flush_seconds": 0.05},
        limits={"rate_per_second": None},
        monitor={
            "interval": "0.1s",
            "window": "1h",
            "rules": [BUSY],
            "webhook_url": webhook_url,
            "webhook_timeout": 2,
            "webhook_retries": retries,
        },
    )


@pytest.fixture
def settings(tmp_path: Path, tiny_model_dir: Path) -> Settings:
    settings = Settings(home=tmp_path / "home", database_url=None)
    register_copy(settings, tiny_model_dir, "tiny", stage="production")
    return settings


def keys(settings: Settings) -> dict[str, str]:
    store = KeyStore(Registry(settings).engine)
    return {s: store.create(s, [s])[1] for s in ("predict", "feedback", "admin")}


def get(server: LiveServer, path: str, key: str | None, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(server.url + path, params=params, headers=headers, timeout=30)


def wait_for(check: Any, what: str) -> Any:
    deadline = time.monotonic() + 60  # a bound on a hung server, not a measurement
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if found == labels:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_traffic_fires_an_alert_shown_counted_listed_and_posted(settings: Settings) -> None:
    secrets = keys(settings)
    with Receiver() as receiver:
        config = monitored(settings, receiver.url)
        with LiveServer(config, settings) as server:  # the monitor report's figures
            headers = {"Authorization": f"Bearer {secrets['predict']}"}
            r = httpx.post(
                server.url + "/v1/predict",
                json={"inputs": ["a wonderful film", "dull", "brilliant"]},
                headers=headers,
                timeout=30,
            )
            assert r.status_code == 200, r.text

            def firing() -> list[dict[str, Any]]:
                body = get(server, "/v1/alerts", secrets["predict"], state="firing").json()
                return list(body["data"])

            (alert,) = wait_for(firing, "the busy alert fires")
            assert (alert["rule"], alert["model"], alert["metric"]) == ("busy", "tiny", "volume")
            assert alert["value"] >= 3 and alert["threshold"] == 2
            assert alert["state"] == "firing" and alert["resolved_at"] is None
            assert alert["details"] == {"kind": "threshold"}
            wait_for(lambda: receiver.bodies, "the webhook receives it")
            text = get(server, "/metrics", None).text
    assert [b["event"] for b in receiver.bodies] == ["firing"]
    assert receiver.bodies[0]["alert"]["id"] == alert["id"]
    assert metric(text, "lmforge_monitor_figure", model="tiny", figure="volume") == 3
    shares = [
        metric(text, "lmforge_monitor_figure", model="tiny", figure=f"label_share.{label}")
        for label in ("negative", "positive")
    ]
    assert None not in shares and sum(s for s in shares if s is not None) == pytest.approx(1)
    assert metric(text, "lmforge_alerts_fired_total", rule="busy") == 1
    assert (metric(text, "lmforge_monitor_rounds_total", outcome="ok") or 0) >= 1
    assert metric(text, "lmforge_alert_webhook_deliveries_total", outcome="sent") == 1


def test_a_webhook_receiver_that_is_down_loses_no_alert(settings: Settings) -> None:
    secrets = keys(settings)
    config = monitored(settings, f"http://127.0.0.1:{free_port()}/hook", retries=0)
    with LiveServer(config, settings, log_figures(settings)) as server:
        headers = {"Authorization": f"Bearer {secrets['predict']}"}
        body = {"inputs": ["one", "two", "three"]}
        assert httpx.post(server.url + "/v1/predict", json=body, headers=headers).is_success

        def failed() -> float | None:
            text = get(server, "/metrics", None).text
            return metric(text, "lmforge_alert_webhook_deliveries_total", outcome="failed")

        assert wait_for(failed, "the failed delivery is counted") == 1
        listed = get(server, "/v1/alerts", secrets["admin"]).json()["data"]
    assert [(a["rule"], a["state"]) for a in listed] == [("busy", "firing")]


# --- GET /v1/alerts: scopes and filters (alerts stored directly, no monitor running) ----------


@pytest.fixture
def listing(settings: Settings) -> Iterator[Any]:
    store = AlertStore(Registry(settings).engine)
    now = datetime.now(UTC)
    for model, hours_ago, resolve in (("a", 3, True), ("b", 2, False), ("a", 1, False)):
        alert = Alert(
            rule=f"rule-{model}",
            model=model,
            metric="latency_p99_ms",
            comparison="above",
            value=900.0,
            threshold=500.0,
            window_s=600.0,
            severity="warning",
            fired_at=now - timedelta(hours=hours_ago),
        )
        stored = store.record(alert)
        assert stored is not None and stored.id is not None
        if resolve:
            store.resolve(stored.id, now - timedelta(hours=hours_ago - 0.5))
    with LiveServer(serve_config(limits={"rate_per_second": None}), settings) as server:
        server.keys = keys(settings)
        server.now = now
        yield server


def test_alerts_need_the_predict_scope(listing: Any) -> None:
    missing = get(listing, "/v1/alerts", None)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_key"
    wrong = get(listing, "/v1/alerts", listing.keys["feedback"])
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "missing_scope"
    assert "'predict'" in wrong.json()["error"]["message"]
    for scope in ("predict", "admin"):
        assert get(listing, "/v1/alerts", listing.keys[scope]).status_code == 200


def test_alerts_filters(listing: Any) -> None:
    key = listing.keys["predict"]

    def listed(**params: Any) -> list[tuple[str, str]]:
        r = get(listing, "/v1/alerts", key, **params)
        assert r.status_code == 200, r.text
        assert r.json()["object"] == "list"
        return [(a["model"], a["state"]) for a in r.json()["data"]]

    assert listed() == [("a", "firing"), ("b", "firing"), ("a", "resolved")]  # newest first
    assert listed(state="firing") == [("a", "firing"), ("b", "firing")]
    assert listed(state="resolved") == [("a", "resolved")]
    assert listed(model="a") == [("a", "firing"), ("a", "resolved")]
    since = (listing.now - timedelta(hours=2, minutes=30)).isoformat()
    assert listed(since=since) == [("a", "firing"), ("b", "firing")]
    assert listed(model="nobody") == []
    assert listed(limit=1) == [("a", "firing")]


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"state": "open"}, "state"),
        ({"since": "yesterday"}, "since"),
        ({"limit": 0}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"model": ""}, "model"),
    ],
)
def test_bad_filters_are_422_naming_the_parameter(
    listing: Any, params: dict[str, Any], param: str
) -> None:
    r = get(listing, "/v1/alerts", listing.keys["predict"], **params)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["code"] == "invalid_field"
    assert "\n" not in error["message"] and param in error["message"]


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("monitor", "needle"),
    [
        ({"rules": [{**BUSY, "threshold": "high"}]}, "monitor.rules.0.threshold"),
        ({"rules": [{**BUSY, "metric": "qps"}]}, "monitor.rules.0.metric"),
        ({"rules": [BUSY, BUSY]}, "rule names must be unique: busy given twice"),
        ({"interval": "soon"}, "monitor.interval"),
        ({"webhook_url": "ftp://example.org/hook"}, "monitor.webhook_url"),
        ({"webhook_timeout": 0}, "monitor.webhook_timeout"),
        ({"rule": []}, "unknown key 'monitor.rule'"),
    ],
)
def test_a_bad_monitor_section_is_one_line(
    tmp_path: Path, monitor: dict[str, Any], needle: str
) -> None:
    import yaml

    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump({"monitor": monitor}))
    with pytest.raises(RecipeError) as caught:
        load_serve_config(path)
    assert needle in caught.value.message and "\n" not in caught.value.message


def test_gauges_follow_the_latest_figures() -> None:
    metrics = ServeMetrics()
    first = {"volume": 10, "label_share.spam": 0.5, "live_accuracy": 0.9}
    metrics.set_figures({"m": first, "gone": {"volume": 3}, "failing": {"volume": 4}})
    metrics.set_figures({"m": {"volume": 12, "live_accuracy": float("nan")}, "failing": {}})
    text = metrics.render().decode()
    assert metric(text, "lmforge_monitor_figure", model="m", figure="volume") == 12
    assert metric(text, "lmforge_monitor_figure", model="m", figure="label_share.spam") is None
    assert metric(text, "lmforge_monitor_figure", model="m", figure="live_accuracy") is None
    assert "gone" not in text and "failing" not in text
