"""The HTML heat map escapes every text, and the attention PNG is a real image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lmforge.errors import LmforgeError
from lmforge.explain import Explanation, WordScore
from lmforge.explain.render import TRUNCATED_NOTE, attention_png, explanation_html, write_html

HOSTILE = 'Shares <script>alert("x")</script> & "rally"'


def hostile_explanation() -> Explanation:
    words = [WordScore("Shares", 0, 6, 0.5), WordScore("<script>", 7, 15, -0.2)]
    return Explanation(
        model="fin:v1</title><script>",
        backend="torch-fp32",
        method="ig",
        text=HOSTILE,
        label="<b>neg</b>",
        score=0.9,
        target="<b>neg</b>",
        explained_with="fin:v1 (torch-fp32)",
        agrees=True,
        words=words,
        steps=32,
        baseline="[PAD]",
        completeness_error=0.01,
        logit_difference=1.5,
    )


def test_the_page_escapes_every_text(tmp_path: Path) -> None:
    page = explanation_html([hostile_explanation()])
    assert "<script>" not in page and "</script>" not in page
    # the word <script> is shaded on its own: escaped inside its span, and the rest after it
    assert "&lt;script&gt;</span>alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "<b>neg</b>" not in page and "&lt;b&gt;neg&lt;/b&gt;" in page
    assert "&amp; &quot;rally&quot;" in page
    path = tmp_path / "page.html"
    write_html(path, [hostile_explanation()])
    assert path.read_text(encoding="utf-8") == page
    assert "http:" not in page and "https:" not in page  # self-contained: nothing fetched
    csp = "default-src 'none'; style-src 'unsafe-inline'"  # no script runs, nothing loads
    assert f'<meta http-equiv="Content-Security-Policy" content="{csp}">' in page


def test_the_page_renders_the_headline_as_text(tmp_path: Path) -> None:
    """In a real browser (Debian's chromium, installed by scripts/setup.sh: missing is a
    failure, not a skip). A second page, the same with a script written into it unescaped (as
    if escaping had been missed somewhere), shows that the page's policy keeps it from
    running."""
    import shutil

    from playwright import sync_api

    chromium = shutil.which("chromium")
    assert chromium is not None, "no chromium: run 'make setup' (apt-get install chromium)"
    path = tmp_path / "page.html"
    write_html(path, [hostile_explanation()])
    tampered = tmp_path / "tampered.html"
    page_text = path.read_text(encoding="utf-8")
    tampered.write_text(page_text.replace("<h1>", "<script>alert('ran')</script><h1>", 1))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        alerts: list[str] = []
        page.on("dialog", lambda d: (alerts.append(d.message), d.dismiss()))
        page.goto(path.as_uri())
        body = page.inner_text("body")
        page.goto(tampered.as_uri())
        browser.close()
    assert alerts == []
    assert '<script>alert("x")</script>' in body


def test_a_truncated_text_says_its_end_is_not_explained() -> None:
    e = hostile_explanation()
    assert TRUNCATED_NOTE not in explanation_html([e])
    e.truncated = True
    assert TRUNCATED_NOTE in explanation_html([e])


def test_attention_png(tmp_path: Path) -> None:
    e = hostile_explanation()
    maps = np.full((2, 2, 4, 4), 0.25)
    e.attention = {"tokens": ["[CLS]", "a", "b", "[SEP]"], "layers": maps, "rollout": maps[0, 0]}
    png = attention_png(e)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    e.attention = None
    with pytest.raises(LmforgeError, match="--method attention"):
        attention_png(e)
