"""Asking an assistant from scratch, as ``lmforge app assistant`` does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lmforge.assistant.ask import ask_assistant
from lmforge.errors import LmforgeError
from lmforge.settings import Settings


def never_read() -> Iterator[str]:
    raise AssertionError("the questions were read before the options were checked")
    yield ""  # pragma: no cover  (makes this a generator)


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"faq": "debian_faq", "model": "helpdesk"}, "give --faq or --model, not both"),
        ({"model": "helpdesk", "encoder": "minilm-l6"}, "cannot change a registered"),
        ({"model": "nosuch"}, "nosuch"),
        ({"generate": True, "decoder": "minilm-l6"}, "not a decoder"),
    ],
)
def test_options_are_checked_before_the_questions_are_read(
    home: Settings, options: dict[str, object], needle: str
) -> None:
    with pytest.raises(LmforgeError, match=needle):
        ask_assistant(never_read(), settings=home, **options)  # type: ignore[arg-type]


def test_no_question_is_refused(home: Settings) -> None:
    with pytest.raises(LmforgeError, match="no question to answer"):
        ask_assistant(iter(()), settings=home)


def test_answers_from_an_faq_file_and_refuses_off_topic(home: Settings, tmp_path: Path) -> None:
    faq = tmp_path / "faq.csv"
    faq.write_text(
        "question,answer\nHow do I reset my password?,Open Settings and choose Reset.\n"
        "How do I cancel my plan?,Go to Billing and press Cancel.\n"
    )
    questions = ["how can I reset the password", "best pizza in Naples?"]
    answered, refused = ask_assistant(
        iter(questions), faq=str(faq), encoder="minilm-l6", threshold=0.5, top_k=1, settings=home
    )
    assert answered.answered and answered.hits[0].entry.citation == "faq.csv row 1"
    assert len(answered.hits) == 1 and not refused.answered
