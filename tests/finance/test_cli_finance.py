"""`lmforge app finance-monitor` as a user runs it: a file scored, stored and charted (JSON,
PNG, HTML), and bad input — an unknown replay source, an unparsable time, a wrong model — as one
line on stderr with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fin_helpers import LABELS, build_sentiment_dir, register

from conftest import lmforge
from lmforge.settings import Settings


@pytest.fixture(scope="module")
def sentiment_dir(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sentiment_dir(tiny_base, tmp_path_factory.mktemp("tiny-sentiment"))


def test_a_file_is_monitored_and_charted(
    home: Settings, sentiment_dir: Path, tmp_path: Path
) -> None:
    register(home, sentiment_dir, "fin", LABELS)
    news = tmp_path / "news.jsonl"
    rows = [{"text": f"Tesco shares fall {i}", "time": f"2020-03-0{1 + i % 3}"} for i in range(9)]
    news.write_text("".join(json.dumps(r) + "\n" for r in rows))
    png, page = tmp_path / "t.png", tmp_path / "t.html"
    args = ("app", "finance-monitor", "fin", "--file", str(news), "--json")
    done = lmforge(*args, "--png", str(png), "--html", str(page))
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["model"] == "fin:v1" and body["headlines"] == body["stored"] == 9
    assert [d["key"] for d in body["days"]] == ["2020-03-01", "2020-03-02", "2020-03-03"]
    assert body["entities"][0]["key"] == "Tesco"
    assert png.read_bytes().startswith(b"\x89PNG") and "Tesco shares fall" in page.read_text()


def test_bad_input_is_one_line(home: Settings, sentiment_dir: Path, tmp_path: Path) -> None:
    register(home, sentiment_dir, "fin", LABELS)
    unknown = lmforge("app", "finance-monitor", "fin", "--replay", "reuters")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == (
        "error: unknown replay source 'reuters' — use one of: guardian_headlines "
        "(or --file for your own headlines)"
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("text,time\nok,2020-01-01\nbad,yesterday\n")
    dated = lmforge("app", "finance-monitor", "fin", "--file", str(bad))
    assert dated.returncode == 2 and len(dated.stderr.strip().splitlines()) == 1
    assert f"{bad} row 3: time 'yesterday' cannot be parsed" in dated.stderr
    none = lmforge("app", "finance-monitor", "fin")
    assert none.returncode == 2 and "give exactly one source" in none.stderr
