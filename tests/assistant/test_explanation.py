"""The assistant's explanation: winner, runner-up, margins and the shared words (English words,
Chinese character runs), in the library, `lmforge app assistant --explain` and its `--json`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_assistant import ENTRIES, embed

from conftest import lmforge
from lmforge.assistant.assistant import Assistant
from lmforge.assistant.explanation import shared_words
from lmforge.settings import Settings


@pytest.mark.parametrize(
    ("question", "text", "expected"),
    [
        # stop words (how, do, i, a) are left out; exact forms only (packages ≠ package)
        (
            "How do I install a package quickly?",
            "How do I install a package?",
            ("install", "package"),
        ),
        ("Install PACKAGES", "install a package", ("install",)),
        # Chinese: the longest runs of 2+ characters found verbatim, single characters never
        ("如何报告一个错误", "如何报告错误？\n使用 reportbug 工具。", ("如何报告", "错误")),
        ("我的电脑", "你的手机", ()),
        ("用 reportbug 报告错误", "使用 reportbug 工具报告错误", ("reportbug", "报告错误")),
    ],
)
def test_shared_words(question: str, text: str, expected: tuple[str, ...]) -> None:
    assert shared_words(question, text) == expected


def test_answers_explain_the_winner_its_margin_and_the_threshold() -> None:
    assistant = Assistant(ENTRIES, embed, query_prefix="", passage_prefix="", threshold=0.5)
    answered, refused = assistant.ask(["how to install software", "pizza recipes"], k=1)
    assert len(answered.hits) == 1  # k is kept: the runner-up is searched for the explanation
    why = answered.explanation
    assert why is not None and why.winner is not None and why.runner_up is not None
    assert why.winner.citation == "FAQ §1" and why.runner_up.citation == "FAQ §2"
    scores = assistant.scores(["how to install software"])[0]
    assert why.winner.score == pytest.approx(scores[0])
    assert why.margin == pytest.approx(scores[0] - scores[1])
    assert why.over_threshold == pytest.approx(scores[0] - 0.5) and why.answered
    assert why.shared_words == ("install",)
    assert refused.explanation is not None and not refused.explanation.answered
    over = refused.explanation.over_threshold
    assert over is not None and over < 0
    shown = answered.to_json(explain=True)["explanation"]
    assert shown["winner"]["citation"] == "FAQ §1" and shown["shared_words"] == ["install"]
    assert shown["margin"] == pytest.approx(why.margin, abs=1e-4)
    assert "stop words" in shown["word_matching"]
    assert "explanation" not in answered.to_json()  # only when asked for


def test_a_chinese_question_explains_with_character_runs_and_no_runner_up() -> None:
    assistant = Assistant(ENTRIES, embed, query_prefix="", passage_prefix="", threshold=0.5)
    (answer,) = assistant.ask(["如何报告一个错误"])
    why = answer.explanation
    assert why is not None and why.winner is not None
    assert why.runner_up is None and why.margin is None  # one Chinese entry to compare
    assert why.shared_words == ("如何报告", "错误")
    assert "Chinese characters" in why.matching


FAQ = (
    "question,answer\nHow do I reset my password?,Open Settings and choose Reset.\n"
    "How do I cancel my plan?,Go to Billing and press Cancel.\n"
)


def test_app_assistant_explain_prints_and_puts_it_in_the_json(
    home: Settings, tmp_path: Path
) -> None:
    faq = tmp_path / "faq.csv"
    faq.write_text(FAQ)
    args = ("app", "assistant", "--faq", str(faq), "--encoder", "minilm-l6", "--threshold", "0.5")
    shown = lmforge(*args, "--explain", "how can I reset the password")
    assert shown.returncode == 0, shown.stderr
    assert 'why: "How do I reset my password?" (faq.csv row 1) scored' in shown.stdout
    assert 'ahead of the runner-up "How do I cancel my plan?"' in shown.stdout
    assert "over the threshold 0.500" in shown.stdout
    assert "shared words: reset, password" in shown.stdout
    (answer,) = json.loads(lmforge(*args, "--explain", "--json", "reset password").stdout)
    why = answer["explanation"]
    assert why["winner"]["citation"] == "faq.csv row 1"
    assert why["runner_up"]["citation"] == "faq.csv row 2"
    assert why["margin"] == pytest.approx(why["winner"]["score"] - why["runner_up"]["score"], 1e-3)
    plain = lmforge(*args, "--json", "reset password")
    assert "explanation" not in json.loads(plain.stdout)[0]
