"""The pretraining corpus: sources mixed by weight, one language kept, and a downstream
source's held-out texts removed from every split (the leakage check across tasks)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from lmforge.data.corpus import prepare_corpus
from lmforge.data.prepare import prepare_data
from lmforge.data.text import leakage_key
from lmforge.errors import DataError
from lmforge.recipe.schema import DataConfig, MixedSource, SourceConfig


def write(path: Path, texts: list[str]) -> Path:
    pd.DataFrame({"body": texts}).to_csv(path, index=False)
    return path


def data(path: Path) -> DataConfig:
    return DataConfig(source=SourceConfig(path=path, text_column="body"))


def test_weights_repeat_or_subsample_each_sources_training_rows(tmp_path: Path) -> None:
    a = write(tmp_path / "a.csv", [f"alpha text {i}" for i in range(100)])
    b = write(tmp_path / "b.csv", [f"beta text {i}" for i in range(100)])
    c = write(tmp_path / "c.csv", [f"gamma text {i}" for i in range(100)])
    mix = [
        MixedSource(path=b, text_column="body", weight=2),
        MixedSource(path=c, text_column="body", weight=0.5),
    ]
    corpus = prepare_corpus(data(a), mix)
    counts = {name: sum(t.startswith(name) for t in corpus.train) for name in ("alp", "bet", "gam")}
    assert counts == {"alp": 80, "bet": 160, "gam": 40}
    assert [s["train_rows"] for s in corpus.card["sources"]] == [80, 160, 40]
    # held-out texts are never weighted
    assert len(corpus.validation) == len(corpus.test) == 30


def test_a_language_filter_keeps_one_script(tmp_path: Path) -> None:
    texts = [f"english line {i}" for i in range(40)] + [f"中文句子 {i}" for i in range(40)]
    path = write(tmp_path / "both.csv", texts)
    corpus = prepare_corpus(data(path), language="zh")
    assert all("中文" in t for t in corpus.train + corpus.validation + corpus.test)
    assert corpus.card["removed"]["other_language"] == 40


def test_downstream_held_out_texts_never_enter_the_corpus(tmp_path: Path) -> None:
    downstream = prepare_data(DataConfig(source=SourceConfig(builtin="rotten_tomatoes")))
    held = [*downstream.validation["text"], *downstream.test["text"]][:50]
    trained = list(downstream.train["text"][:50])
    path = write(tmp_path / "mixed.csv", held + trained + [f"news line {i}" for i in range(50)])
    corpus = prepare_corpus(data(path), exclude_test_of=["rotten_tomatoes"])
    keys = {leakage_key(t) for t in corpus.train + corpus.validation + corpus.test}
    assert not keys & {leakage_key(t) for t in held}
    assert len(keys & {leakage_key(t) for t in trained}) > 30  # downstream training text stays
    assert corpus.card["removed"]["downstream_held_out"] == 50


def test_a_text_in_two_sources_is_not_both_trained_on_and_tested(tmp_path: Path) -> None:
    shared = [f"shared line {i}" for i in range(60)]
    a = write(tmp_path / "a.csv", shared)
    b = write(tmp_path / "b.csv", list(reversed(shared)))
    corpus = prepare_corpus(data(a), [MixedSource(path=b, text_column="body")])
    trained = {leakage_key(t) for t in corpus.train}
    assert not trained & {leakage_key(t) for t in corpus.validation + corpus.test}


def test_unknown_downstream_and_too_little_text_are_one_line_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", [f"line {i}" for i in range(40)])
    with pytest.raises(DataError, match="unknown built-in data source 'nope'"):
        prepare_corpus(data(path), exclude_test_of=["nope"])
    small = write(tmp_path / "small.csv", ["one", "two"])
    with pytest.raises(DataError, match="2 usable texts"):
        prepare_corpus(data(small))
