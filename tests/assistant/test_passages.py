"""Passages of an FAQ answer, and the embedded index kept on disk between starts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lmforge.assistant.passages import cached_embed, split_passages


def test_sentences_are_grouped_into_passages_of_the_languages_length() -> None:
    sentence = "Run apt upgrade to install the newest versions of every package. "  # 65 chars
    passages = split_passages(sentence * 12)
    assert len(passages) == 2 and all(len(p) <= 400 for p in passages)
    assert " ".join(passages) == (sentence * 12).strip()  # nothing lost, nothing repeated
    chinese = "运行 apt upgrade 可以把所有软件包升级到最新版本。" * 10  # 30 characters each
    zh = split_passages(chinese, "zh")
    assert len(zh) == 2 and all(len(p) <= 160 for p in zh) and "".join(zh) == chinese


def test_a_long_sentence_stays_whole_and_blank_text_has_no_passage() -> None:
    long = "word " * 200
    assert split_passages(long) == [long.strip()]
    assert split_passages("  \n ") == []
    assert split_passages("One. Two? Three!") == ["One. Two? Three!"]


def test_dots_inside_names_do_not_end_a_sentence() -> None:
    text = "Edit /etc/apt/sources.list to use ftp.us.debian.org first. " * 8
    passages = split_passages(text)
    assert len(passages) > 1 and " ".join(passages) == text.strip()
    assert all(p.count("sources.list") == p.count("ftp.us.debian.org") for p in passages)


def test_the_index_is_embedded_once_and_read_back(tmp_path: Path) -> None:
    calls: list[int] = []

    def embed(texts: Sequence[str]) -> np.ndarray:
        calls.append(len(texts))
        return np.arange(len(texts) * 2, dtype=np.float32).reshape(len(texts), 2)

    first = cached_embed(embed, ["a", "b"], tmp_path, "enc")
    again = cached_embed(embed, ["a", "b"], tmp_path, "enc")
    assert calls == [2] and np.array_equal(first, again)
    cached_embed(embed, ["a", "b"], tmp_path, "another encoder")
    cached_embed(embed, ["a", "c"], tmp_path, "enc")
    assert calls == [2, 2, 2]  # a change of encoder or of any text embeds again
    assert not list(tmp_path.glob("*.tmp"))  # written whole, through a temporary file
    for path in tmp_path.glob("*.npy"):
        path.write_bytes(b"damaged")
    assert np.array_equal(cached_embed(embed, ["a", "b"], tmp_path, "enc"), first)
    assert calls == [2, 2, 2, 2]  # a damaged file is recomputed
    cached_embed(embed, ["a"], None, "enc")
    assert calls[-1] == 1  # no folder: no cache
