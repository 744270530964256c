"""The alert engine below the HTTP layer: rule validation, threshold rules firing once and
resolving, minimum volume, for and cooldown, the relative (baseline) rule on a surge and on a
flat stream, a failing provider, the schedule surviving a failed round, and the webhook against
a real receiver on 127.0.0.1 (and one that is down). Figures come from rows written to the
prediction log (tests/log_figures.py)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import free_port
from lmforge.errors import RecipeError
from lmforge.monitor import (
    AlertEngine,
    AlertRule,
    AlertStore,
    MonitorLoop,
    evaluate_rules,
    parse_rule,
)
from lmforge.monitor.alerts import baseline_windows
from lmforge.monitor.webhook import WebhookSender
from lmforge.registry import Registry
from lmforge.settings import Settings
from log_figures import log_figures, log_rows
from webhook_receiver import Receiver

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", database_url=None)


@pytest.fixture
def store(settings: Settings) -> AlertStore:
    return AlertStore(Registry(settings).engine)


def rule(**fields: Any) -> AlertRule:
    raw = {"name": "slow", "metric": "latency_p99_ms", "threshold": 100, "window": "10m"}
    return parse_rule({**raw, **fields})


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "needles"),
    [
        ({"metric": "latency_p95_ms"}, ["metric", "'latency_p95_ms' is not a figure"]),
        ({"threshold": None}, ["needs 'threshold'"]),
        ({"window": "10 minutes"}, ["window", "not a duration"]),
        ({"window": "0s"}, ["window", "positive"]),
        ({"treshold": 3}, ["unknown key 'treshold'", "did you mean 'threshold'"]),
        ({"comparison": "over"}, ["comparison"]),
        ({"name": "has space"}, ["name"]),
        ({"threshold": float("nan")}, ["threshold", "finite"]),
        ({"min_volume": -1}, ["min_volume"]),
        ({"baseline": "1d"}, ["'baseline' needs kind: baseline"]),
        ({"kind": "baseline", "baseline": "1d"}, ["baseline rule takes 'z'", "not 'threshold'"]),
        ({"kind": "baseline", "threshold": None}, ["needs 'baseline'"]),
        ({"kind": "baseline", "threshold": None, "baseline": "20m"}, ["baseline must span"]),
        (
            {"kind": "baseline", "threshold": None, "baseline": "1d", "test": "proportion"},
            ["test proportion is for a share"],
        ),
    ],
)
def test_a_bad_rule_is_one_line_naming_the_field(raw: dict[str, Any], needles: list[str]) -> None:
    with pytest.raises(RecipeError) as caught:
        rule(**raw)
    message = caught.value.message
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_durations_and_the_for_alias() -> None:
    r = rule(window="1.5h", cooldown="2d", **{"for": "90s"})
    assert (r.window, r.cooldown, r.for_) == (
        timedelta(hours=1.5),
        timedelta(days=2),
        timedelta(seconds=90),
    )
    assert rule(window=600).window == timedelta(minutes=10)  # a number is seconds


# --- threshold rules: fire once, resolve, volume, for, cooldown ----------------------------


def slow_traffic(settings: Settings, at: datetime, rows: int = 20, latency: float = 500) -> None:
    log_rows(settings, "tiny", at, ["positive"] * rows, latency_ms=latency)


def test_a_sustained_condition_fires_once_then_resolves(
    settings: Settings, store: AlertStore
) -> None:
    engine = AlertEngine(store)
    figures = log_figures(settings)
    rules = [rule()]
    slow_traffic(settings, NOW - timedelta(minutes=5))

    first = engine.step(evaluate_rules(rules, figures, ["tiny"], NOW))
    assert [(a.rule, a.model, a.state) for a in first.fired] == [("slow", "tiny", "firing")]
    alert = first.fired[0]
    assert (alert.value, alert.threshold, alert.window_s) == (500, 100, 600)
    second = engine.step(evaluate_rules(rules, figures, ["tiny"], NOW + timedelta(minutes=1)))
    assert second.fired == [] and second.resolved == []  # still slow: no second alert

    later = NOW + timedelta(minutes=20)  # the slow rows left the window; fast ones came
    slow_traffic(settings, later - timedelta(minutes=1), latency=20)
    third = engine.step(evaluate_rules(rules, figures, ["tiny"], later))
    assert [a.id for a in third.resolved] == [alert.id]
    assert third.resolved[0].resolved_at == later
    assert store.list(state="firing") == []
    assert [a.state for a in store.list(state="resolved")] == ["resolved"]


def test_below_the_minimum_volume_there_is_no_verdict(
    settings: Settings, store: AlertStore
) -> None:
    figures = log_figures(settings)
    slow_traffic(settings, NOW - timedelta(minutes=5), rows=5)
    (few,) = evaluate_rules([rule(min_volume=10)], figures, ["tiny"], NOW)
    assert few.state == "no_data" and "below min_volume 10" in few.details["reason"]
    assert AlertEngine(store).step([few]).fired == []

    slow_traffic(settings, NOW - timedelta(minutes=4), rows=5)
    (enough,) = evaluate_rules([rule(min_volume=10)], figures, ["tiny"], NOW)
    assert enough.state == "match"
    assert len(AlertEngine(store).step([enough]).fired) == 1


def test_no_data_neither_fires_nor_resolves(settings: Settings, store: AlertStore) -> None:
    engine = AlertEngine(store)
    figures = log_figures(settings)
    slow_traffic(settings, NOW - timedelta(minutes=5))
    assert len(engine.step(evaluate_rules([rule()], figures, ["tiny"], NOW)).fired) == 1
    quiet = NOW + timedelta(hours=1)  # no traffic at all: no latency figure
    (ev,) = evaluate_rules([rule()], figures, ["tiny"], quiet)
    assert ev.state == "no_data"
    assert engine.step([ev]).resolved == [] and len(store.list(state="firing")) == 1


def test_for_holds_the_alert_until_the_condition_lasted(
    settings: Settings, store: AlertStore
) -> None:
    engine = AlertEngine(store)
    figures = log_figures(settings)
    rules = [rule(**{"for": "3m"})]
    for minute in range(5):
        slow_traffic(settings, NOW + timedelta(minutes=minute) - timedelta(seconds=30))
    fired = [
        len(engine.step(evaluate_rules(rules, figures, ["tiny"], NOW + timedelta(minutes=m))).fired)
        for m in range(5)
    ]
    assert fired == [0, 0, 0, 1, 0]  # matching since NOW, fired at NOW + 3 min, once


def test_cooldown_suppresses_a_flapping_metric(settings: Settings, store: AlertStore) -> None:
    engine = AlertEngine(store)
    figures = log_figures(settings)
    rules = [rule(window="1m", cooldown="10m")]
    fired_at = []
    for minute in range(16):  # slow on even minutes, fast on odd ones
        at = NOW + timedelta(minutes=minute)
        slow_traffic(settings, at - timedelta(seconds=10), latency=500 if minute % 2 == 0 else 20)
        step = engine.step(evaluate_rules(rules, figures, ["tiny"], at))
        fired_at += [minute for _ in step.fired]
    # fired at 0, resolved at 1; nothing until 10 minutes after that resolution
    assert fired_at == [0, 12]
    assert len(store.list(state="all")) == 2


def test_a_rule_for_every_model_or_one(settings: Settings, store: AlertStore) -> None:
    figures = log_figures(settings)
    for model in ("a", "b"):
        log_rows(settings, model, NOW - timedelta(minutes=1), ["positive"] * 5, latency_ms=500)
    every = evaluate_rules([rule()], figures, ["b", "a"], NOW)
    assert [(e.model, e.state) for e in every] == [("a", "match"), ("b", "match")]
    one = evaluate_rules([rule(model="b")], figures, ["a"], NOW)
    assert [e.model for e in one] == ["b"]  # a named model, served here or not


def test_a_failing_provider_is_an_error_for_its_model_only(settings: Settings) -> None:
    working = log_figures(settings)
    log_rows(settings, "good", NOW - timedelta(minutes=1), ["positive"], latency_ms=500)

    def figures(model: str, start: datetime, end: datetime) -> Mapping[str, float]:
        if model == "broken":
            raise RuntimeError("reference data is corrupt\nsecond line")
        return working(model, start, end)

    broken, good = evaluate_rules([rule()], figures, ["broken", "good"], NOW)
    assert broken.state == "error" and broken.details["error"] == "reference data is corrupt"
    assert good.state == "match"


# --- baseline (relative) rules ----------------------------------------------------------------


def surge_rule(**fields: Any) -> AlertRule:
    raw = {
        "name": "negative-surge",
        "kind": "baseline",
        "metric": "label_share.negative",
        "window": "1h",
        "baseline": "1d",
        "z": 3,
        "min_volume": 40,
    }
    return parse_rule({**raw, **fields})


def history(settings: Settings, current_negative: int) -> None:
    """24 hourly windows of 50 predictions with 8 to 12 negative, then the current hour."""
    for start, _ in baseline_windows(surge_rule(), NOW):
        hour = start.hour
        negative = 8 + hour % 5
        labels = ["negative"] * negative + ["positive"] * (50 - negative)
        log_rows(settings, "news", start + timedelta(minutes=30), labels)
    labels = ["negative"] * current_negative + ["positive"] * (50 - current_negative)
    log_rows(settings, "news", NOW - timedelta(minutes=20), labels)


@pytest.mark.parametrize("test", ["zscore", "proportion"])
def test_a_surge_above_the_rolling_baseline_fires(settings: Settings, test: str) -> None:
    history(settings, current_negative=25)  # 50 % negative against about 20 %
    (ev,) = evaluate_rules([surge_rule(test=test)], log_figures(settings), ["news"], NOW)
    assert ev.state == "match", ev
    assert ev.value == 0.5
    assert ev.details["baseline_windows"] == 24
    assert 0.19 < ev.details["baseline_mean"] < 0.21
    assert ev.threshold is not None and ev.details["baseline_mean"] < ev.threshold < 0.5
    assert ev.details["z"] > 3


@pytest.mark.parametrize("test", ["zscore", "proportion"])
def test_a_flat_stream_does_not_fire(settings: Settings, test: str) -> None:
    history(settings, current_negative=11)  # 22 %: within the baseline's own spread
    (ev,) = evaluate_rules([surge_rule(test=test)], log_figures(settings), ["news"], NOW)
    assert ev.state == "clear", ev


def test_a_baseline_rule_needs_enough_baseline_windows_and_volume(settings: Settings) -> None:
    log_rows(settings, "news", NOW - timedelta(minutes=20), ["negative"] * 50)
    for start, _ in baseline_windows(surge_rule(), NOW)[:2]:  # two hours of history only
        # "news" is not registered, so the report knows only the labels it saw: one negative
        log_rows(settings, "news", start + timedelta(minutes=1), ["positive"] * 49 + ["negative"])
    (ev,) = evaluate_rules([surge_rule()], log_figures(settings), ["news"], NOW)
    assert (
        ev.state == "no_data" and "2 baseline windows with data, 3 needed" in ev.details["reason"]
    )
    (small,) = evaluate_rules([surge_rule(min_volume=60)], log_figures(settings), ["news"], NOW)
    assert small.state == "no_data"


def test_min_change_keeps_a_negligible_change_on_a_flat_baseline_quiet(
    settings: Settings,
) -> None:
    for start, _ in baseline_windows(surge_rule(), NOW):  # exactly 20 % every hour: no spread
        log_rows(
            settings, "news", start + timedelta(minutes=1), ["negative"] * 10 + ["positive"] * 40
        )
    log_rows(settings, "news", NOW - timedelta(minutes=5), ["negative"] * 11 + ["positive"] * 39)
    figures = log_figures(settings)
    (bare,) = evaluate_rules([surge_rule()], figures, ["news"], NOW)
    assert bare.state == "match"  # 22 % > 20 % ± 0: any change is infinitely significant
    (ev,) = evaluate_rules([surge_rule(min_change=0.05)], figures, ["news"], NOW)
    assert ev.state == "clear" and ev.threshold == pytest.approx(0.25)


def test_baseline_windows_repeat_and_are_cached(settings: Settings) -> None:
    history(settings, current_negative=25)
    working = log_figures(settings)
    calls: list[tuple[datetime, datetime]] = []

    def figures(model: str, start: datetime, end: datetime) -> Mapping[str, float]:
        calls.append((start, end))
        return working(model, start, end)

    cache: dict[Any, Mapping[str, float]] = {}
    evaluate_rules([surge_rule()], figures, ["news"], NOW, cache=cache)
    assert len(calls) == 25  # the current window and 24 baseline hours
    calls.clear()
    evaluate_rules([surge_rule()], figures, ["news"], NOW + timedelta(minutes=1), cache=cache)
    assert calls == [(NOW + timedelta(minutes=1) - timedelta(hours=1), NOW + timedelta(minutes=1))]


# --- the webhook -------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def monitor(
    settings: Settings, store: AlertStore, webhook: WebhookSender | None, **kw: Any
) -> MonitorLoop:
    return MonitorLoop(
        rules=kw.pop("rules", [rule()]),
        figures=kw.pop("figures", log_figures(settings)),
        models=kw.pop("models", lambda: ["tiny"]),
        store=store,
        interval=kw.pop("interval", timedelta(seconds=60)),
        window=timedelta(minutes=10),
        webhook=webhook,
        **kw,
    )


def test_the_webhook_receives_firing_and_resolved_alerts(
    settings: Settings, store: AlertStore, receiver: Receiver
) -> None:
    outcomes: list[str] = []
    slow_traffic(settings, NOW - timedelta(minutes=5))

    async def run() -> None:
        webhook = WebhookSender(receiver.url, timeout_s=5, on_outcome=outcomes.append)
        loop = monitor(settings, store, webhook)
        webhook.start()
        fired = await loop.run_once(NOW)
        assert len(fired.fired) == 1
        slow_traffic(settings, NOW + timedelta(minutes=19), latency=10)
        await loop.run_once(NOW + timedelta(minutes=20))
        await loop.close()

    asyncio.run(run())
    assert [b["event"] for b in receiver.bodies] == ["firing", "resolved"]
    first = receiver.bodies[0]["alert"]
    assert (first["rule"], first["model"], first["metric"], first["value"]) == (
        "slow",
        "tiny",
        "latency_p99_ms",
        500,
    )
    assert first["state"] == "firing" and first["id"] == store.list()[0].id
    assert receiver.bodies[1]["alert"]["state"] == "resolved"
    assert outcomes == ["sent", "sent"]


def test_the_webhook_retries_a_failing_receiver(settings: Settings, store: AlertStore) -> None:
    slow_traffic(settings, NOW - timedelta(minutes=5))
    with Receiver(fail_first=2) as flaky:

        async def run() -> WebhookSender:
            webhook = WebhookSender(flaky.url, timeout_s=5, retries=3, backoff_s=0.01)
            loop = monitor(settings, store, webhook)
            webhook.start()
            await loop.run_once(NOW)
            await loop.close()
            return webhook

        webhook = asyncio.run(run())
    assert flaky.requests == 3 and len(flaky.bodies) == 1
    assert (webhook.sent, webhook.failed) == (1, 0)


def test_a_receiver_that_is_down_loses_no_alert(
    settings: Settings, store: AlertStore, caplog: pytest.LogCaptureFixture
) -> None:
    slow_traffic(settings, NOW - timedelta(minutes=5))
    outcomes: list[str] = []
    url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there

    async def run() -> WebhookSender:
        webhook = WebhookSender(
            url, timeout_s=2, retries=2, backoff_s=0.01, on_outcome=outcomes.append
        )
        loop = monitor(settings, store, webhook)
        webhook.start()
        out = await loop.run_once(NOW)  # returns before any delivery is tried
        assert len(out.fired) == 1
        await loop.close()
        return webhook

    with caplog.at_level(logging.ERROR, "lmforge.monitor"):
        webhook = asyncio.run(run())
    assert [a.rule for a in store.list(state="firing")] == ["slow"]
    assert outcomes == ["failed"] and webhook.failed == 1
    assert any("not delivered" in r.getMessage() for r in caplog.records)


def test_closing_does_not_wait_on_a_receiver_that_never_answers() -> None:
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        outcomes: list[str] = []

        async def run() -> WebhookSender:
            webhook = WebhookSender(url, timeout_s=60, on_outcome=outcomes.append)
            webhook.start()
            webhook.send({"event": "firing", "alert": {"rule": "a", "model": "m"}})
            webhook.send({"event": "firing", "alert": {"rule": "b", "model": "m"}})
            await webhook.close(grace_s=0.2)
            return webhook

        webhook = asyncio.run(run())
    assert outcomes == ["dropped", "dropped"] and webhook.dropped == 2 and webhook.sent == 0


# --- the schedule --------------------------------------------------------------------------------


def test_the_schedule_survives_failing_rounds(settings: Settings, store: AlertStore) -> None:
    """A provider that raises, then a models() that raises (the round fails), then both work:
    the loop keeps going and the alert fires."""
    slow_traffic(settings, datetime.now(UTC) - timedelta(minutes=1))
    working = log_figures(settings)
    state = {"round": 0}
    rounds: list[bool] = []

    def figures(model: str, start: datetime, end: datetime) -> Mapping[str, float]:
        if state["round"] == 0:
            raise RuntimeError("figures are away")
        return working(model, start, end)

    def models() -> list[str]:
        state["round"] += 1
        if state["round"] == 1:
            raise ConnectionError("the pool is away")
        return ["tiny"]

    async def run() -> MonitorLoop:
        loop = monitor(
            settings,
            store,
            None,
            figures=figures,
            models=models,
            interval=timedelta(seconds=0.01),
            on_round=rounds.append,
        )
        state["round"] = -1  # the first round's models() makes it 0: figures raise
        loop.start()
        for _ in range(3000):
            if store.list(state="firing"):
                break
            await asyncio.sleep(0.01)
        await loop.close()
        return loop

    loop = asyncio.run(run())
    assert [a.rule for a in store.list(state="firing")] == ["slow"]
    assert rounds[:3] == [True, False, True]  # a provider error fails no round; models() did
    assert loop.failed_rounds == 1
