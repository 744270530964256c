"""The console's Finance view in a real browser, on a server run with the finance monitor: 30
stored days of headlines whose last three surge to 80 % negative (the server's loop fires the
surge alert), one batch posted through the API; the view draws the timeline, marks and lists the
alert, opens its headlines and a day's, keeps a hostile headline inert, and fits a phone. Also
``GET /v1/finance/headlines`` (the day's headlines the view shows) and the session's flag."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import LiveServer, serve_config
from lmforge.finance import FinanceMonitor, Headline
from lmforge.registry import Registry
from lmforge.serve import KeyStore
from lmforge.settings import Settings

# the finance tests' helpers (tests/finance is not a package): the tiny model and a scorer
sys.path.insert(0, str(Path(__file__).parents[1] / "finance"))
from fin_helpers import LABELS, KeywordScorer, build_sentiment_dir, register

XSS = "<img src=x onerror=\"document.title='pwned'\">"
NOW = datetime.now(UTC)


def stamp(days_ago: int) -> datetime:
    """A stored day's time: just after now's time of day, so the surge window (the 3 days before
    the loop's first judgement, seconds later) holds the last three days whole."""
    return NOW - timedelta(days=days_ago) + timedelta(minutes=5)


def day(days_ago: int) -> str:
    return stamp(days_ago).date().isoformat() if days_ago else NOW.date().isoformat()


@pytest.fixture(scope="module")
def finsite(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    home = tmp_path_factory.mktemp("ui-finance")
    settings = Settings(home=home, database_url=None)
    register(settings, build_sentiment_dir(tiny_base, home / "model"), "fin", LABELS)
    # 27 days at 30 % negative, then three at 80 %: the surge rule's baseline and its surge
    rows = []
    for days_ago in range(30, 0, -1):
        when = stamp(days_ago)
        negative = 16 if days_ago <= 3 else 6
        rows += [
            Headline(
                f"{days_ago}-{j}",
                when,
                f"Tesco shares crash {XSS}" if j < negative else f"Tesco opens store {j}",
            )
            for j in range(20)
        ]
    FinanceMonitor("fin", Registry(settings).engine).store(KeywordScorer("fin").score(rows))
    config = serve_config(
        prediction_log={"flush_seconds": 0.05},
        limits={"rate_per_second": None},
        finance={"model": "fin", "interval": "0.1s"},
    )
    store = KeyStore(Registry(settings).engine)
    with LiveServer(config, settings) as server:
        server.keys = {s: store.create(s, [s])[1] for s in ("predict", "feedback")}
        deadline = time.monotonic() + 60  # a bound on a hung loop, not a measurement
        while not call(server, "GET", "/v1/finance/alerts").json()["data"]:
            assert time.monotonic() < deadline, "the surge alert never fired"
            time.sleep(0.1)
        # today's batch, through the route, after the alert: its window holds 60 stored rows
        posted = call(server, "POST", "/v1/finance/headlines", json={"headlines": [
            {"id": "today-1", "text": f"Markets slump {XSS}", "time": NOW.isoformat()},
            {"id": "today-2", "text": "FTSE 100 rallies", "time": NOW.isoformat()},
        ]})  # fmt: skip
        assert posted.status_code == 200, posted.text
        yield server


def call(server: Any, method: str, path: str, scope: str | None = "predict", **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {server.keys[scope]}"} if scope else {}
    return httpx.request(method, server.url + path, headers=headers, timeout=60, **kw)


def test_a_days_headlines_by_time_or_most_negative_first(finsite: Any) -> None:
    span = {"since": day(2), "until": day(1)}
    assert call(finsite, "GET", "/v1/finance/headlines", None, params=span).status_code == 401
    wrong = call(finsite, "GET", "/v1/finance/headlines", "feedback", params=span)
    assert wrong.status_code == 403
    by_time = call(finsite, "GET", "/v1/finance/headlines", params=span).json()["data"]
    assert len(by_time) == 20 and {h["time"][:10] for h in by_time} == {day(2)}
    assert by_time[0]["text"] == f"Tesco shares crash {XSS}" and by_time[0]["label"] == "negative"
    worst = call(
        finsite,
        "GET",
        "/v1/finance/headlines",
        params={"order": "most_negative", "limit": 17, "since": day(4), "until": day(3)},
    ).json()["data"]
    assert len(worst) == 17 and [h["label"] for h in worst].count("negative") == 6
    assert worst[0]["scores"]["negative"] == pytest.approx(0.8)
    bad = call(finsite, "GET", "/v1/finance/headlines", params={"order": "best"})
    assert bad.status_code == 422
    assert call(finsite, "GET", "/v1/console/session").json()["finance"] is True


def open_finance(browser: Any, site: Any, width: int, height: int) -> Any:
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(120_000)  # a bound on a loaded 2-core machine, not a measurement
    page.errors = []
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(f"{site.url}/ui")
    page.fill("#key-input", site.keys["predict"])
    page.click("#key-form button[type=submit]")
    page.click('#nav button[data-view="finance"]')
    page.wait_for_selector("#fin-chart")
    return page


def test_the_finance_view_draws_the_timeline_and_the_alert_with_its_headlines(
    browser: Any, finsite: Any
) -> None:
    page = open_finance(browser, finsite, 1280, 800)
    title = page.title()
    # 31 days (30 stored, today's posted batch), one point each; the band where judged
    assert len(page.get_attribute("#fin-daily", "points").split()) == 31
    assert page.locator("rect.fin-volume").count() == 31
    assert page.locator("polygon.fin-band").count() == 1
    assert page.locator("#fin-chart .fin-alert").count() == 1
    assert page.locator("#fin-alerts li.alert-firing").count() == 1
    page.click("#fin-alerts li button")
    page.wait_for_selector("#fin-detail table")
    detail = page.inner_text("#fin-detail")
    assert "negative share 0.80" in detail and f"Tesco shares crash {XSS}" in detail
    assert page.locator("#fin-detail tbody tr").count() == 5
    # a day: its headlines, most negative first; the hostile text stays text
    page.click(f'rect.fin-hit[data-day="{day(1)}"]')
    page.wait_for_selector(f"#fin-detail h3:text('Headlines of {day(1)}')")
    assert page.locator("#fin-detail tbody tr").count() == 20
    assert page.inner_text("#fin-detail tbody tr td.fin-text >> nth=0") == (
        f"Tesco shares crash {XSS}"
    )
    page.select_option("#fin-day", day(0))
    page.wait_for_selector(f"#fin-detail h3:text('Headlines of {day(0)}')")
    assert f"Markets slump {XSS}" in page.inner_text("#fin-detail")
    assert page.locator("main img").count() == 0 and page.title() == title
    assert page.errors == []
    page.context.close()


def test_the_finance_view_fits_a_phone(browser: Any, finsite: Any) -> None:
    page = open_finance(browser, finsite, 390, 800)
    page.click("#fin-alerts li button")
    page.wait_for_selector("#fin-detail table")
    # nothing wider than the screen but the tables' own scrolling boxes
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    box = page.locator("#fin-chart").bounding_box()
    assert box is not None and box["width"] <= 390
    assert page.errors == []
    page.context.close()
