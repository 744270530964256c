"""``lmforge explain`` as a user runs it: errors in one line, JSON, the page and the colours."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import lmforge, register_copy
from lmforge.settings import Settings


def assert_one_line_error(result: object, *needles: str) -> None:
    stderr = result.stderr  # type: ignore[attr-defined]
    assert result.returncode == 2, stderr  # type: ignore[attr-defined]
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_errors_are_one_line(home: Settings, tiny_model_dir: Path) -> None:
    assert_one_line_error(lmforge("explain", "nosuch", "a text"), "nosuch")
    register_copy(home, tiny_model_dir, "tiny")
    assert_one_line_error(
        lmforge("explain", "tiny", "a text", "--method", "shap"), "unknown method 'shap'", "ig"
    )
    assert_one_line_error(
        lmforge("explain", "tiny", "a text", "--target", "neutral"),
        "unknown target label 'neutral'",
        "negative, positive",
    )


def test_json_and_html(home: Settings, tiny_model_dir: Path, tmp_path: Path) -> None:
    register_copy(home, tiny_model_dir, "tiny")
    page = tmp_path / "why.html"
    result = lmforge(
        "explain", "tiny", "<script>x</script> film", "--steps", "4", "--json", "--html", str(page)
    )
    assert result.returncode == 0, result.stderr
    (doc,) = json.loads(result.stdout)
    assert doc["model"] == "tiny:v1" and doc["method"] == "ig" and doc["steps"] == 4
    assert [w["word"] for w in doc["words"]][-1] == "film"
    html = page.read_text(encoding="utf-8")  # <, script, > are three words, each escaped
    assert "&lt;</span>" in html and "&gt;</span>" in html and "<script>" not in html
