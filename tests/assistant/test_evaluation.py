"""Measuring an assistant on its own FAQ: probe sets that never contain the question's own
wording, retrieval beside BM25/TF-IDF, and a refusal threshold per question language tuned on
real off-topic text."""

from __future__ import annotations

import numpy as np
import pytest

from lmforge.assistant import FaqEntry
from lmforge.assistant.evaluation import evaluate_assistant, probe_sets
from lmforge.errors import DataError

TOPICS = [("install", "安装"), ("kernel", "内核"), ("bug", "错误")]
ENTRIES = [
    FaqEntry("How do I install a package?", "To install, use apt.", "FAQ §1", "en", "1"),
    FaqEntry("How do I upgrade the kernel?", "A new kernel: linux-image.", "FAQ §2", "en", "2"),
    FaqEntry("How do I report a bug?", "A bug goes to reportbug.", "FAQ §3", "en", "3"),
    FaqEntry("如何安装软件包？", "安装时使用 apt。", "FAQ(中文) §1", "zh", "1"),
    FaqEntry("如何升级内核？", "新内核：linux-image。", "FAQ(中文) §2", "zh", "2"),
    FaqEntry("如何报告错误？", "错误用 reportbug 报告。", "FAQ(中文) §3", "zh", "3"),
]


def embed(texts: list[str]) -> np.ndarray:
    """A bilingual bag-of-topics embedding of a text's first line (an entry's question, or its
    answer where the question is left out); texts on no topic share one small axis."""
    rows = []
    for text in texts:
        body = text.split("\n")[0].lower()
        rows.append([float(en in body or zh in body) for en, zh in TOPICS] + [0.05])
    vectors = np.array(rows, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_each_language_is_asked_of_its_answers_and_of_the_other_language() -> None:
    sets = {p.name: p for p in probe_sets(ENTRIES)}
    assert set(sets) == {
        "en question → answer",
        "zh question → answer",
        "en question → zh entry",
        "zh question → en entry",
    }
    en_to_zh = sets["en question → zh entry"]
    assert all(e.lang == "zh" for e in en_to_zh.entries) and en_to_zh.calibrates is None
    for question, gold in zip(en_to_zh.questions, en_to_zh.gold, strict=True):
        asked = next(e for e in ENTRIES if e.question == question)
        assert en_to_zh.entries[gold].key == asked.key
    zh = sets["zh question → answer"]
    assert zh.calibrates == "zh" and all(e.lang == "zh" and e.question == "" for e in zh.entries)


def test_one_language_probes_ask_the_answers_alone() -> None:
    english = [e for e in ENTRIES if e.lang == "en"]
    (probe,) = probe_sets(english)
    assert probe.name == "en question → answer" and probe.calibrates == "en"
    assert probe.questions == [e.question for e in english]
    assert all(e.question == "" for e in probe.entries)  # the question's own text is not there
    assert [e.answer for e in probe.entries] == [e.answer for e in english]


def test_evaluation_scores_retrievers_and_tunes_a_threshold_per_language() -> None:
    result = evaluate_assistant(ENTRIES, embed)
    rows = {(r["probe"], r["retriever"]): r for r in result.retrieval}
    assert {name for _, name in rows} == {"assistant", "BM25", "TF-IDF"}
    for probe in ("en question → zh entry", "zh question → en entry", "en question → answer"):
        assert rows[(probe, "assistant")]["hit@1"] == 1.0  # the topic embedding is bilingual
        assert rows[(probe, "assistant")]["queries"] == 3
    # real chatterbot small talk lands on the embedding's "no topic" axis: clean separation
    assert result.tuned and set(result.thresholds) == {"en", "zh"}
    for lang, refusal in result.languages.items():
        assert 0.05 < refusal.threshold < 1.0, lang
        assert refusal.held_out.refused_off_topic == 1.0
        assert refusal.held_out.answered_in_domain == 1.0 and refusal.answered_right == 1.0
        assert len(refusal.in_domain) == 3
    assert len(result.languages["en"].off_topic) > 50 and len(result.languages["zh"].off_topic) > 20
    summary = result.to_json()["refusal"]
    assert summary["tuned"] and summary["held_out_balanced_accuracy"] == 1.0
    assert summary["thresholds"] == {k: round(v, 4) for k, v in result.thresholds.items()}
    assert summary["languages"]["zh"]["in_domain_questions"] == 3


def test_a_given_threshold_is_measured_on_every_question() -> None:
    result = evaluate_assistant(ENTRIES, embed, threshold=0.99)
    assert not result.tuned and result.thresholds == {"en": 0.99, "zh": 0.99}
    assert result.languages["zh"].held_out.refused_off_topic == 1.0
    assert result.to_json()["refusal"]["in_domain_questions"] == 6  # 3 in each language


def test_an_faq_too_small_to_split_is_refused() -> None:
    with pytest.raises(DataError, match="too few questions"):
        evaluate_assistant([FaqEntry("How?", "Like this.", "FAQ §1", "en", "1")], embed)
