"""The console in a real browser (Debian's chromium under Playwright): one server with two
classifiers, real registry rows and an FAQ assistant; the page must load without console
errors, show the registry, predict and explain, store feedback, promote, answer with a
citation, keep hostile text inert, and honour the key's scopes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import LiveServer, serve_config
from lmforge.monitor import list_feedback
from lmforge.registry import Registry
from lmforge.serve import KeyStore
from lmforge.settings import Settings

XSS = "<img src=x onerror=\"document.title='pwned'\">"
FAQ = [
    {
        "question": "How do I reset my password?",
        "answer": "Open Settings > Account and choose Reset password.",
        "citation": "https://help.example.com/password",
    },
    {
        "question": "How can I cancel my subscription?",
        "answer": f"Press Cancel. {XSS}",
        "citation": "Help §2",
    },
    {
        "question": "如何重置密码？",
        "answer": "打开设置，选择重置密码。",
        "citation": "帮助 §1",
        "lang": "zh",
    },
]


def register(settings: Settings, folder: Path, name: str, **fields: Any) -> str:
    """A copy of a tiny classifier as a new version; ``labels``/``card`` change its files."""
    registry = Registry(settings)
    staging = registry.new_staging_dir()
    shutil.copytree(folder, staging, dirs_exist_ok=True)
    meta = json.loads((staging / "lmforge.json").read_text())
    meta["labels"] = fields.pop("labels", meta["labels"])
    (staging / "lmforge.json").write_text(json.dumps(meta))
    (staging / "README.md").write_text(fields.pop("card", f"# {name}"), encoding="utf-8")
    return registry.register(
        name,
        staging,
        task="classification",
        base_model="tiny",
        labels=meta["labels"],
        metrics={"macro_f1": 0.8, "accuracy": 0.85},
        baselines={"majority": {"macro_f1": 0.33, "accuracy": 0.5}},
        **fields,
    ).ref


@pytest.fixture(scope="module")
def site(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    home = tmp_path_factory.mktemp("ui-home")
    settings = Settings(home=home, database_url=None)
    register(settings, tiny_model_dir, "tiny", stage="production")
    register(settings, tiny_model_dir, "tiny", parent="tiny:v1", card=f"# tiny v2\n\n{XSS}")
    register(settings, tiny_model_dir, "hostile", stage="production", labels=[XSS, "好评"])
    faq = home / "faq.jsonl"
    faq.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in FAQ))
    store = KeyStore(Registry(settings).engine)
    keys = {
        "admin": store.create("me", ["admin", "predict", "feedback"])[1],
        "predict": store.create("viewer", ["predict"])[1],
    }
    config = serve_config(
        limits={"rate_per_second": None},
        prediction_log={"flush_seconds": 0.05},
        explain={"max_tokens": 32, "concurrency": 1, "timeout_s": 600},
        assistant={"faq": str(faq), "encoder": "minilm-l6", "threshold": 0.5, "top_k": 2},
    )
    with LiveServer(config, settings) as server:
        server.keys = keys
        server.settings = settings
        server.tiny_dir = tiny_model_dir
        yield server


@pytest.fixture
def page(browser: Any, site: Any) -> Iterator[Any]:
    """A fresh tab (its own sessionStorage) that records console errors and dialogs."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tab = context.new_page()
    tab.set_default_timeout(120_000)  # a bound on a loaded 2-core machine, not a measurement
    tab.errors = []
    tab.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: tab.errors.append(str(e)))
    tab.on("dialog", lambda d: (tab.errors.append(f"dialog: {d.message}"), d.dismiss()))
    yield tab
    context.close()


def open_console(page: Any, site: Any, scope: str = "admin", view: str = "models") -> None:
    page.goto(f"{site.url}/ui#{view}")
    page.fill("#key-input", site.keys[scope])
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#nav:not([hidden])")


def test_loads_with_the_key_and_lists_the_registry(page: Any, site: Any) -> None:
    page.goto(site.url + "/ui")
    page.wait_for_selector("#key-form")
    assert page.is_hidden("#gate-nokey")  # keys exist: only the key is asked for
    open_console(page, site)
    assert page.inner_text("#key-name") == "me (predict, feedback, admin)"
    assert page.is_hidden('#nav button[data-view="finance"]')  # no --finance on this server
    page.wait_for_selector("article.model")
    shown = {
        card.get_attribute("data-model"): sorted(
            row.get_attribute("data-ref") for row in card.query_selector_all("tr[data-ref]")
        )
        for card in page.query_selector_all("article.model")
    }
    registered: dict[str, list[str]] = {}
    for v in Registry(site.settings).list():
        registered.setdefault(v.name, []).append(v.ref)
    assert shown == {name: sorted(refs) for name, refs in registered.items()}
    # the lineage tree puts v2 under v1
    tree = page.inner_text("article[data-model=tiny] .lineage")
    assert tree.index("tiny:v1") < tree.index("tiny:v2")
    assert page.query_selector("article[data-model=tiny] .tree .tree") is not None
    # the key was kept for the tab, never put in the address
    assert site.keys["admin"] not in page.url
    assert page.evaluate("sessionStorage.getItem('lmforge.key')") == site.keys["admin"]
    assert page.errors == []


def test_a_prediction_shows_its_label_heat_map_and_takes_feedback(page: Any, site: Any) -> None:
    open_console(page, site, view="playground")
    page.select_option("#play-model", "tiny")
    page.select_option("#play-method", "occlusion")
    text = "a wonderful film, 非常好看"
    page.fill("#play-text", text)
    page.click("#play-go")
    label = page.wait_for_selector("#play-label").inner_text()
    assert label in ("negative", "positive")
    page.wait_for_selector("#play-heat .word")
    assert page.inner_text("#play-heat .heat-text") == text  # Chinese shown as typed
    assert len(page.query_selector_all("#play-heat .word")) >= 4
    before = len(list_feedback("tiny", settings=site.settings))
    page.click("#fb-wrong")
    other = "positive" if label == "negative" else "negative"
    page.click(f"button[data-label={other}]")
    page.wait_for_selector(".feedback-status.ok")
    rows = list_feedback("tiny", settings=site.settings)
    assert len(rows) == before + 1 and rows[-1].label == other and rows[-1].correct is False
    assert page.errors == []


def test_a_promote_click_changes_the_stage(page: Any, site: Any) -> None:
    open_console(page, site)
    page.click("article[data-model=tiny] tr[data-ref='tiny:v2'] button.link")
    page.wait_for_selector("article[data-model=tiny] button[data-action=promote]:not([disabled])")
    page.click("article[data-model=tiny] button[data-action=promote]")
    page.click("article[data-model=tiny] button[data-confirm=yes]")
    page.wait_for_selector(
        "article[data-model=tiny] tr[data-ref='tiny:v2'] .stage-production", timeout=240_000
    )
    assert Registry(site.settings).get("tiny:v2").stage == "production"
    assert page.errors == []


def test_a_delete_click_removes_the_version_and_a_refusal_is_shown(page: Any, site: Any) -> None:
    doomed = register(site.settings, site.tiny_dir, "spare")
    parent = register(site.settings, site.tiny_dir, "spare", parent=doomed)
    open_console(page, site)
    # a parent cannot go: the server's 409 is shown, the version stays
    page.click(f"article[data-model=spare] tr[data-ref='{doomed}'] button.link")
    page.click("article[data-model=spare] button[data-action=delete]")
    page.click("article[data-model=spare] button[data-confirm=yes]")
    assert (
        "cannot be deleted"
        in page.wait_for_selector(
            "article[data-model=spare] .confirm .error:not(:empty)"
        ).inner_text()
    )
    # its child can
    page.click(f"article[data-model=spare] tr[data-ref='{parent}'] button.link")
    page.click("article[data-model=spare] button[data-action=delete]")
    page.click("article[data-model=spare] button[data-confirm=yes]")
    page.wait_for_selector(f"tr[data-ref='{parent}']", state="detached")
    assert [v.ref for v in Registry(site.settings).list() if v.name == "spare"] == [doomed]
    # the browser itself logs the refused request; nothing else went wrong
    assert [e for e in page.errors if "409 (Conflict)" not in e] == []


def test_without_admin_promote_is_disabled_and_refused(page: Any, site: Any) -> None:
    open_console(page, site, scope="predict")
    page.click("article[data-model=hostile] tr[data-ref='hostile:v1'] button.link")
    page.wait_for_selector("article[data-model=hostile] button[data-action=promote]")
    assert page.is_disabled("article[data-model=hostile] button[data-action=promote]")
    assert page.is_disabled("article[data-model=hostile] button[data-action=archive]")
    assert page.is_disabled("article[data-model=hostile] button[data-action=delete]")
    r = httpx.post(
        site.url + "/v1/models/tiny/versions/1/promote",
        headers={"Authorization": f"Bearer {site.keys['predict']}"},
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "missing_scope"
    page.goto(site.url + "/ui#playground")
    page.wait_for_selector("#play-go")
    page.fill("#play-text", "brilliant")
    page.click("#play-go")
    page.wait_for_selector("#play-label")
    assert page.is_disabled("#fb-correct")  # no feedback scope either
    assert page.errors == []


def test_the_assistant_answers_with_a_citation(page: Any, site: Any) -> None:
    open_console(page, site, view="assistant")
    page.fill("#chat-input", "I forgot my password, how do I reset it?")
    page.press("#chat-input", "Enter")
    link = page.wait_for_selector("#chat-log .msg.bot .cite a")
    assert link.get_attribute("href") == "https://help.example.com/password"
    assert "Open Settings" in page.inner_text("#chat-log .msg.bot")
    page.fill("#chat-input", "如何重置我的密码？")
    page.press("#chat-input", "Enter")
    page.locator("#chat-log .msg.bot .cite").nth(1).wait_for()  # (no wait_for_function: CSP)
    assert "帮助 §1" in page.query_selector_all("#chat-log .msg.bot .cite")[1].inner_text()
    page.fill("#chat-input", "what is the weather on mars tomorrow")
    page.press("#chat-input", "Enter")
    refused = page.wait_for_selector("#chat-log .msg.refused")
    assert refused.inner_text().startswith("Refused")
    assert page.errors == []


def test_hostile_text_renders_inert(page: Any, site: Any) -> None:
    open_console(page, site)
    page.click("article[data-model=tiny] tr[data-ref='tiny:v2'] button.link")
    card = page.wait_for_selector("article[data-model=tiny] .card-text")
    assert XSS in card.inner_text()
    page.goto(site.url + "/ui#playground")
    page.select_option("#play-model", "hostile")
    page.fill("#play-text", XSS)
    page.click("#play-go")
    page.wait_for_selector("#play-heat .word")
    assert XSS in page.inner_text(".bars") and XSS in page.inner_text("#play-heat")
    page.goto(site.url + "/ui#assistant")
    page.fill("#chat-input", "how can I cancel my subscription")
    page.press("#chat-input", "Enter")
    page.wait_for_selector("#chat-log .msg.bot .cite")
    assert XSS in page.inner_text("#chat-log")
    assert page.query_selector_all("img") == [] and page.title() != "pwned"
    assert page.errors == []


def test_the_monitor_shows_the_traffic(page: Any, site: Any) -> None:
    headers = {"Authorization": f"Bearer {site.keys['predict']}"}
    r = httpx.post(
        site.url + "/v1/predict",
        json={"model": "hostile", "inputs": ["good", "bad", "好"]},
        headers=headers,
        timeout=120,
    )
    assert r.status_code == 200, r.text
    open_console(page, site, view="monitor")
    page.select_option("#monitor-model", "hostile")
    # the three just sent, and any the other tests sent to this model
    page.wait_for_selector('[data-figure="requests/s"] small:text-matches("^[3-9] in the period")')
    assert page.query_selector_all(".charts svg") and XSS in page.inner_text(".charts")
    page.click("#check-drift")
    page.wait_for_selector(".drift p:has-text('No drift figures')")  # no validation split here
    assert page.errors == []


def test_phone_width(page: Any, site: Any) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    for view in ("models", "monitor", "playground", "assistant"):
        if view == "models":
            open_console(page, site)
        else:
            page.goto(f"{site.url}/ui#{view}")
        page.wait_for_selector(f"#view-{view} h2")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, (view, width)
    assert page.errors == []


def test_no_key_in_the_registry_says_how_to_make_one(
    browser: Any, tmp_path: Path, tiny_model_dir: Path
) -> None:
    settings = Settings(home=tmp_path / "empty", database_url=None)
    tab = browser.new_page()
    with LiveServer(serve_config(models=[]), settings) as server:
        tab.goto(server.url + "/ui")
        tab.wait_for_selector("#gate-nokey:not([hidden])", timeout=60_000)
        assert tab.inner_text("#create-key") == (
            "lmforge keys create --name me --scope admin --scope predict --scope feedback"
        )
    with LiveServer(serve_config(models=[], auth={"enabled": False}), settings) as server:
        tab.goto(server.url + "/ui")
        tab.wait_for_selector("#view-models h2", timeout=60_000)
        assert tab.is_hidden("#gate") and tab.inner_text("#who") == "auth off"
    tab.close()


def test_chat_with_a_served_decoder(browser: Any, tmp_path: Path, tiny_decoder_dir: Path) -> None:
    settings = Settings(home=tmp_path / "chat", database_url=None)
    config = serve_config(
        models=[],
        auth={"enabled": False},
        generation={
            "models": [str(tiny_decoder_dir)],
            "weights": "fp32",
            "default_max_tokens": 16,  # the tiny decoder's context is 256 tokens
        },
    )
    tab = browser.new_page()
    errors: list[str] = []
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    with LiveServer(config, settings) as server:
        tab.goto(server.url + "/ui#assistant")
        tab.wait_for_selector("#chat-mode", timeout=60_000)
        modes = [o.get_attribute("value") for o in tab.query_selector_all("#chat-mode option")]
        assert modes == [f"chat:{tiny_decoder_dir}"]  # no FAQ assistant on this server
        tab.fill("#chat-input", "hello world, how are you?")
        tab.press("#chat-input", "Enter")
        # the random tiny decoder's text is noise: what matters is that it streamed in
        reply = tab.wait_for_selector(
            "#chat-log .msg.bot p:nth-child(2):not(:empty)", timeout=120_000
        )
        assert reply.inner_text().strip()
    tab.close()
    assert errors == []
