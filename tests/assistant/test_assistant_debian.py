"""The Debian FAQ assistant with the real multilingual-e5-small: the cases reported in issue 17
(the cited entry disagreeing with the scores shown; Chinese small talk answered while English
was refused; whole sections as answers). The figures on many questions are in
docs/benchmarks.md (benchmarks/assistant_questions.py)."""

from __future__ import annotations

import pytest

from lmforge.assistant.assistant import Assistant, build_assistant

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def debian() -> Assistant:
    return build_assistant("debian_faq")


def test_the_cited_entry_is_the_best_scored_one(debian: Assistant) -> None:
    questions = ["How do I upgrade Debian?", "How do I install a package?", "如何升级 Debian？"]
    for answer in debian.ask(questions):
        body = answer.to_json()
        shown = [s["score"] for s in body["sources"]]
        assert shown == sorted(shown, reverse=True), body["question"]
        assert body["answered"] and body["citation"] == body["sources"][0]["citation"]
        assert body["score"] == shown[0] >= body["threshold"]


def test_small_talk_is_refused_in_both_languages(debian: Assistant) -> None:
    english, chinese = debian.ask(["What's your favourite colour?", "你最喜欢什么颜色？"])
    assert not english.answered and not chinese.answered
    assert chinese.to_json()["threshold"] == debian.thresholds["zh"]


def test_the_answer_is_a_passage_of_the_cited_section(debian: Assistant) -> None:
    (answer,) = debian.ask(["How can I keep my Debian system up to date?"])
    body = answer.to_json()
    assert body["citation"] == "Debian FAQ §9.1"
    assert body["answer"] in body["full_answer"] and len(body["answer"]) < len(body["full_answer"])
