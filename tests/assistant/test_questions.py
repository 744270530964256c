"""The shipped user questions of the Debian FAQ, the figures measured on them, and a threshold
tuned on them."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from lmforge.assistant.questions import (
    QUESTIONS_FILE,
    Outcome,
    UserQuestion,
    figures,
    load_questions,
    tune_threshold,
)
from lmforge.errors import DataError


def test_the_shipped_set_is_large_enough_and_split_by_id() -> None:
    questions = load_questions()
    counts = Counter((q.lang, q.kind) for q in questions)
    for lang in ("en", "zh"):
        assert counts[(lang, "in_domain")] >= 40 and counts[(lang, "off_topic")] >= 20
    for q in questions:  # the split follows from the id alone (the card's rule)
        digest = int(hashlib.sha256(q.id.encode()).hexdigest()[:8], 16)
        assert q.split == ("tune" if digest % 10 < 4 else "test"), q.id
        assert q.id.startswith(f"{q.lang}-{'in' if q.in_domain else 'off'}-")
    test = load_questions(split="test")
    assert test and all(q.split == "test" for q in test)
    assert len(test) + len(load_questions(split="tune")) == len(questions)
    assert (QUESTIONS_FILE.parent / "debian_faq_questions.md").is_file()  # its data card


def test_every_section_named_is_in_the_debian_faq() -> None:
    from lmforge.assistant.faq import load_faq

    try:
        entries = load_faq("debian_faq")
    except DataError:
        pytest.skip("the debian-faq packages are not installed here")
    keys = {(e.lang, e.key) for e in entries}
    for q in load_questions():
        assert all((q.lang, s) in keys for s in q.sections), q.id


def test_a_bad_question_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    row = {"id": "en-in-1", "split": "test", "lang": "en", "kind": "in_domain", "question": "?"}
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match="line 1: an in-domain question needs sections"):
        load_questions(path)
    path.write_text(json.dumps({**row, "sections": ["1.1"], "split": "train"}) + "\n")
    with pytest.raises(DataError, match="split 'train'"):
        load_questions(path)
    path.write_text('{"id": 1}\n')
    with pytest.raises(DataError, match="line 1 is not a question row"):
        load_questions(path)
    with pytest.raises(DataError, match="cannot read"):
        load_questions(tmp_path / "missing.jsonl")


def question(kind: str, lang: str = "en", sections: tuple[str, ...] = ()) -> UserQuestion:
    return UserQuestion("x", "test", lang, kind, "?", sections)


def test_a_refused_in_domain_question_counts_as_wrong() -> None:
    asked = [
        question("in_domain", sections=("9.1", "8.1")),
        question("in_domain", sections=("9.1",)),
        question("in_domain", sections=("9.1",)),
        question("off_topic"),
        question("off_topic", "zh"),
    ]
    done = [
        Outcome("8.1", 0.9, True),  # a second right section is right
        Outcome("9.1", 0.7, False),  # right entry, refused: wrong
        Outcome("7.1", 0.9, True),  # wrong entry
        Outcome("3.1", 0.8, False),
        Outcome("3.1", 0.9, True),
    ]
    result = figures(asked, done)
    assert result["en"].correct_at_1 == pytest.approx(1 / 3)
    assert result["en"].answered_in_domain == pytest.approx(2 / 3)
    assert result["en"].refused_off_topic == 1.0 and result["zh"].refused_off_topic == 0.0
    assert result["en"].to_json()["correct@1"] == 0.3333


def test_the_tuned_threshold_sits_in_the_middle_of_the_gap() -> None:
    # right answers at 0.85 and 0.9, a wrong one at 0.8 (refusing it costs nothing), off-topic
    # at most 0.82: every cut in (0.82, 0.85] is best; the middle is 0.835
    assert tune_threshold([(0.9, True), (0.85, True), (0.8, False)], [0.5, 0.82]) == (
        pytest.approx(0.835)
    )
    assert tune_threshold([(0.9, True)], [0.5]) == pytest.approx(0.7)
    with pytest.raises(ValueError):
        tune_threshold([], [0.5])
