"""The assistant: language-aware search, answers with citations, refusals, the threshold."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

from lmforge.assistant import FaqEntry
from lmforge.assistant.assistant import (
    DEFAULT_THRESHOLDS,
    REFUSALS,
    Assistant,
    choose_threshold,
    evaluate_threshold,
    language_thresholds,
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


def count_embed(words: list[str]) -> Callable[[Sequence[str]], np.ndarray]:
    """An embedding that counts ``words`` in the whole text (one axis each), plus a small
    constant axis, so passages of one entry can differ."""

    def embed(texts: Sequence[str]) -> np.ndarray:
        rows = [[text.lower().count(w) for w in words] + [0.3] for text in texts]
        vectors = np.array(rows, dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    return embed


def test_the_cited_entry_has_the_best_shown_score_and_the_threshold_sees_that_score() -> None:
    # BM25 prefers the logs entry (it shares "history", "the", "logs", "file" with the question)
    # while the embedding prefers the upgrade entry: whatever ranks must be the score shown.
    entries = [
        FaqEntry(
            "Where are the logs?",
            "Logs of upgrades are in the file /var/log/apt/history.log.",
            "FAQ §1",
            "en",
            "1",
        ),
        FaqEntry("How do I upgrade?", "Run apt upgrade.", "FAQ §2", "en", "2"),
    ]
    embed = count_embed(["upgrade", "logs"])
    assistant = Assistant(entries, embed, query_prefix="", passage_prefix="", threshold=0.5)
    (answer,) = assistant.ask(["upgrade upgrade upgrade: history in the logs file"])
    body = answer.to_json()
    shown = [s["score"] for s in body["sources"]]
    assert shown == sorted(shown, reverse=True)
    assert body["citation"] == body["sources"][0]["citation"] and body["score"] == shown[0]
    assert body["answered"] == (body["score"] >= body["threshold"])
    ranked = assistant.scores([answer.question])[0]
    assert body["score"] == round(float(ranked.max()), 4)  # the ranking score is the one shown
    for threshold in (shown[0] - 0.01, shown[0] + 0.01):  # answered exactly at or above it
        strict = Assistant(entries, embed, query_prefix="", passage_prefix="", threshold=threshold)
        (again,) = strict.ask([answer.question])
        assert again.answered == (again.hits[0].score >= threshold)


def test_each_question_language_has_its_own_threshold() -> None:
    thresholds = {"en": 0.5, "zh": 0.9}
    assistant = Assistant(ENTRIES, embed, query_prefix="", passage_prefix="", threshold=thresholds)
    # two topics each: both best entries score the same cosine (≈ 0.71)
    en, zh = assistant.ask(["install a kernel", "报告错误并安装"])
    assert en.hits[0].score == pytest.approx(zh.hits[0].score)
    assert en.answered and en.threshold == 0.5 and en.to_json()["language"] == "en"
    assert not zh.answered and zh.threshold == 0.9 and zh.to_json()["language"] == "zh"
    assert zh.text == REFUSALS["zh"] and zh.to_json()["threshold"] == 0.9
    assert language_thresholds(None) == dict(DEFAULT_THRESHOLDS)
    assert language_thresholds(0.7) == {"en": 0.7, "zh": 0.7}
    # a language without a calibrated threshold gets the strictest given one
    assert language_thresholds({"en": 0.6, "fr": 0.8}) == {"en": 0.6, "zh": 0.8, "fr": 0.8}
    with pytest.raises(ValueError):
        language_thresholds({})


def test_the_answer_is_the_best_passage_and_the_full_section_stays_available() -> None:
    install = "To install a program, run apt install NAME as root. " * 4
    files = "The files of an installed package are listed by dpkg -L NAME. " * 4
    hold = "To keep a package at its version, run apt-mark hold NAME. " * 4
    entry = FaqEntry(
        "How do I install, list the files of or hold packages?",
        install + files + hold,
        "FAQ §8",
        "en",
        "8",
    )
    other = FaqEntry("How do I report a bug?", "Use reportbug.", "FAQ §9", "en", "9")
    embed = count_embed(["install", "files", "hold", "bug"])
    assistant = Assistant([entry, other], embed, query_prefix="", passage_prefix="", threshold=0.5)
    (answer,) = assistant.ask(["how do I hold a package so it is not upgraded"])
    body = answer.to_json()
    assert body["answered"] and body["citation"] == "FAQ §8"
    assert "apt-mark hold" in body["answer"] and "apt install" not in body["answer"]
    assert len(body["answer"]) < len(entry.answer) and body["full_answer"] == entry.answer
    assert answer.hits[0].passage == body["answer"]
    (refused,) = assistant.ask(["what is the weather like"])
    assert refused.to_json()["full_answer"] is None
