"""Feedback on the assistant's answers, through a real client: every answer carries a
prediction_id, logged with the cited entry as its label; feedback on it takes only `correct`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import LiveServer, serve_config
from lmforge.monitor import read_predictions
from lmforge.settings import Settings

FAQ = """question,answer,citation
How do I reset my password?,Open Settings > Account and choose Reset password.,Help §1
How can I cancel my subscription?,Go to Billing and press Cancel subscription.,Help §2
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Settings]]:
    home = tmp_path_factory.mktemp("assistant-feedback")
    faq = home / "faq.csv"
    faq.write_text(FAQ)
    config = serve_config(
        models=[],
        auth={"enabled": False},
        assistant={"faq": str(faq), "encoder": "minilm-l6", "threshold": 0.5, "top_k": 2},
        prediction_log={"flush_seconds": 30},  # feedback must find ids still in the buffer
    )
    settings = Settings(home=home, database_url=None)
    with LiveServer(config, settings) as live:
        yield live, settings


@pytest.fixture
def server(served: tuple[Any, Settings]) -> Any:
    return served[0]


def post(server: Any, path: str, body: Any) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=60)


def test_answers_carry_a_prediction_id_that_takes_correct_feedback(
    server: Any, served: tuple[Any, Settings]
) -> None:
    answer = post(server, "/v1/assistant/ask", {"question": "How do I change my password?"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["answered"] and len(body["prediction_id"]) == 32
    r = post(server, "/v1/feedback", {"prediction_id": body["prediction_id"], "correct": True})
    assert r.status_code == 200, r.text
    stored = r.json()
    assert stored["kind"] == "correct" and stored["correct"] is True
    assert stored["predicted"] == stored["label"] == "Help §1"  # the cited entry
    assert stored["model"] == "assistant"
    wrong = post(server, "/v1/feedback", {"prediction_id": body["prediction_id"], "correct": False})
    assert wrong.status_code == 200 and wrong.json()["correct"] is False  # updated, not added
    assert wrong.json()["id"] == stored["id"]
    (row,) = [p for p in read_predictions(served[1]) if p.prediction_id == body["prediction_id"]]
    assert row.kind == "assistant" and row.label == "Help §1"
    assert row.score == pytest.approx(body["score"], abs=1e-4)  # the answer rounds to 4 digits


def test_a_label_on_an_assistant_answer_is_422_saying_only_correct_applies(server: Any) -> None:
    body = post(server, "/v1/assistant/ask", {"question": "Who won the 1998 world cup?"}).json()
    assert not body["answered"] and body["prediction_id"]
    r = post(server, "/v1/feedback", {"prediction_id": body["prediction_id"], "label": "Help §2"})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_feedback" and "only 'correct'" in error["message"]
    ok = post(server, "/v1/feedback", {"prediction_id": body["prediction_id"], "correct": False})
    assert ok.status_code == 200 and ok.json()["predicted"] == "(refused)"


def test_a_streamed_answer_carries_its_prediction_id_first(server: Any) -> None:
    with httpx.stream(
        "POST",
        server.url + "/v1/assistant/ask",
        json={"question": "How do I cancel my subscription?", "stream": True},
        timeout=60,
    ) as r:
        first = next(line for line in r.iter_lines() if line.startswith("data: "))
    assert '"type": "answer"' in first and '"prediction_id": "' in first
