"""The assistant: language-aware search, answers with citations, refusals, the threshold."""

from __future__ import annotations

import numpy as np
import pytest

from lmforge.assistant import FaqEntry
from lmforge.assistant.assistant import (
    REFUSALS,
    Assistant,
    choose_threshold,
    evaluate_threshold,
    question_language,
)
from lmforge.errors import DataError

TOPICS = [("install", "安装"), ("kernel", "内核"), ("bug", "错误")]
ENTRIES = [
    FaqEntry("How do I install a package?", "Use apt install NAME.", "FAQ §1", "en", "1"),
    FaqEntry("How do I upgrade the kernel?", "Install a newer linux-image.", "FAQ §2", "en", "2"),
    FaqEntry("如何报告错误？", "使用 reportbug 工具。", "FAQ(中文) §3", "zh", "3"),
]


def embed(texts: list[str]) -> np.ndarray:
    """A bilingual bag-of-topics embedding: the same topic in either language is one axis."""
    rows = []
    for text in texts:
        body = text.split("\n")[0].lower()  # an entry's question decides its topic here
        rows.append([float(en in body or zh in body) for en, zh in TOPICS] + [0.05])
    vectors = np.array(rows, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_language_of_a_question() -> None:
    assert question_language("如何安装？") == "zh" and question_language("How?") == "en"


def test_answers_cite_the_entry_and_off_topic_questions_are_refused() -> None:
    assistant = Assistant(ENTRIES, embed, query_prefix="", passage_prefix="", threshold=0.5)
    answered, refused = assistant.ask(["how to install software", "what is your favourite food"])
    assert answered.answered and answered.text == "Use apt install NAME."
    assert answered.to_json()["citation"] == "FAQ §1"
    assert answered.to_json()["sources"][0]["citation"] == "FAQ §1"
    assert not refused.answered and refused.text == REFUSALS["en"]
    assert refused.to_json()["citation"] is None and refused.to_json()["score"] < 0.5


def test_a_question_searches_its_own_language_first_else_across() -> None:
    assistant = Assistant(ENTRIES, embed, query_prefix="", passage_prefix="", threshold=0.5)
    (zh,) = assistant.search(["怎么报告一个错误"], k=3)
    assert [h.entry.lang for h in zh] == ["zh"]  # only the Chinese entries are candidates
    only_zh = Assistant(ENTRIES[2:], embed, query_prefix="", passage_prefix="", threshold=0.5)
    (cross,) = only_zh.ask(["how do I report a bug"])
    assert cross.answered and cross.hits[0].entry.citation == "FAQ(中文) §3"
    (refusal,) = only_zh.ask(["今天天气怎么样"])
    assert not refusal.answered and refusal.text == REFUSALS["zh"]


def test_an_empty_faq_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="no entries"):
        Assistant([], embed)


def test_threshold_choice_separates_the_two_sets() -> None:
    choice = choose_threshold([0.9, 0.85, 0.8], [0.5, 0.6, 0.82])
    # 0.7 and 0.835 both get 5 of 6 right; the lower cut (answer more) wins the tie
    assert choice.threshold == pytest.approx(0.7) and choice.balanced_accuracy == pytest.approx(
        5 / 6
    )
    clean = choose_threshold([0.9, 0.85, 0.8], [0.5, 0.6, 0.7])
    assert 0.7 < clean.threshold < 0.8 and clean.balanced_accuracy == 1.0
    held = evaluate_threshold(clean.threshold, [0.95, 0.6], [0.4, 0.72])
    assert held.answered_in_domain == 0.5 and held.refused_off_topic == 1.0
    with pytest.raises(ValueError):
        choose_threshold([], [0.1])
