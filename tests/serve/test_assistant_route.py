"""POST /v1/assistant/ask through a real client, over a small FAQ file with the real MiniLM."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import LiveServer, serve_config
from lmforge.assistant.assistant import (
    GROUNDING,
    Answer,
    Hit,
    grounded_messages,
    grounded_request,
)
from lmforge.assistant.faq import load_faq
from lmforge.errors import DataError
from lmforge.runtime.generation import GenerationEngine
from lmforge.serve.server import check_bind
from lmforge.settings import Settings

FAQ = """question,answer,citation
How do I reset my password?,Open Settings > Account and choose Reset password.,Help §1
How can I cancel my subscription?,Go to Billing and press Cancel subscription.,Help §2
Where can I download my invoices?,Invoices are under Billing > Invoices as PDF files.,Help §3
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    home = tmp_path_factory.mktemp("assistant-home")
    faq = home / "faq.csv"
    faq.write_text(FAQ)
    config = serve_config(
        models=[],
        auth={"enabled": False},
        assistant={"faq": str(faq), "encoder": "minilm-l6", "threshold": 0.5, "top_k": 2},
    )
    with LiveServer(config, Settings(home=home, database_url=None)) as live:
        yield live


def ask(server: Any, body: Any) -> httpx.Response:
    return httpx.post(server.url + "/v1/assistant/ask", json=body, timeout=60)


def test_answers_with_the_cited_entry(server: Any) -> None:
    r = ask(server, {"question": "I forgot my password, how do I change it?"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answered"] and body["citation"] == "Help §1"
    assert body["answer"].startswith("Open Settings") and len(body["sources"]) == 2
    assert body["score"] >= body["threshold"] == 0.5


def test_explain_says_why_the_entry_won(server: Any) -> None:
    question = "I forgot my password, how do I change it?"
    body = ask(server, {"question": question, "explain": True}).json()
    why = body["explanation"]
    assert why["winner"]["citation"] == "Help §1" and why["winner"]["score"] == body["score"]
    assert why["runner_up"]["score"] == body["sources"][1]["score"]
    assert why["margin"] == pytest.approx(why["winner"]["score"] - why["runner_up"]["score"], 1e-3)
    assert why["over_threshold"] == pytest.approx(body["score"] - 0.5, abs=1e-3)
    assert why["shared_words"] == ["password"] and why["answered"]
    assert "explanation" not in ask(server, {"question": question}).json()
    streamed = httpx.post(
        server.url + "/v1/assistant/ask",
        json={"question": question, "explain": True, "stream": True},
        timeout=60,
    )
    first = json.loads(streamed.text.split("\n\n")[0].removeprefix("data: "))
    assert first["type"] == "answer" and first["explanation"]["winner"]["citation"] == "Help §1"


def test_refuses_an_off_topic_question(server: Any) -> None:
    body = ask(server, {"question": "Who won the football world cup in 1998?"}).json()
    assert not body["answered"] and body["citation"] is None
    assert body["answer"].startswith("Sorry") and body["score"] < 0.5


def test_bad_questions_are_4xx(server: Any) -> None:
    assert ask(server, {"question": ""}).status_code == 422
    assert ask(server, {"q": "x"}).status_code == 422
    assert ask(server, {"question": "x" * 20_000}).status_code == 422


def test_the_route_says_when_the_assistant_is_off(tmp_path: Path) -> None:
    config = serve_config(models=[], auth={"enabled": False})
    with LiveServer(config, Settings(home=tmp_path, database_url=None)) as live:
        r = ask(live, {"question": "hello?"})
    assert r.status_code == 404 and "not enabled" in r.json()["error"]["message"]


def test_an_unusable_faq_is_refused_before_listening(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("question,answer\n")
    with pytest.raises(DataError, match="has no entries"):
        check_bind(serve_config(assistant={"faq": str(empty)}))


def test_retrieval_augmented_answers_come_from_the_decoder(
    tmp_path: Path, tiny_decoder_dir: Path
) -> None:
    faq = tmp_path / "faq.csv"
    faq.write_text(FAQ)
    config = serve_config(
        models=[],
        auth={"enabled": False},
        assistant={"faq": str(faq), "encoder": "minilm-l6", "threshold": 0.5, "generate": True},
        generation={"models": [str(tiny_decoder_dir)], "weights": "fp32"},
    )
    with LiveServer(config, Settings(home=tmp_path, database_url=None)) as live:
        answered = ask(live, {"question": "I forgot my password, how do I change it?"}).json()
        refused = ask(live, {"question": "Who won the football world cup in 1998?"}).json()
    assert answered["answered"] and not refused["answered"]
    assert refused["generated_answer"] is None  # nothing relevant: no text is made up
    # the written answer is what the decoder says to the prompt built from the top entries
    entries = {e.question: e for e in load_faq(str(faq))}
    hits = [Hit(entries[s["question"]], s["score"]) for s in answered["sources"]]
    answer = Answer(answered["question"], True, answered["answer"], hits, 0.5)
    messages = grounded_messages(answer)
    assert "Open Settings > Account" in messages[1]["content"]
    assert messages[1]["content"].endswith("Question: I forgot my password, how do I change it?")
    engine = GenerationEngine.from_folder(tiny_decoder_dir)
    try:
        prompt, params = grounded_request(engine, answer, 160)
        assert prompt == engine.encode_chat(messages) and not params.stop
        expected = engine.generate(prompt, params, truncate=True)
        # a base model (no chat template) gets the same words as a document to continue,
        # and its answer ends at the first blank line
        engine.tokenizer.chat_template = None
        prompt, params = grounded_request(engine, answer, 160)
        plain = engine.tokenizer.decode(prompt)
        assert plain.startswith(GROUNDING) and "Open Settings > Account" in plain
        assert plain.endswith("Question: I forgot my password, how do I change it?\nAnswer:")
        assert "\n\n" in params.stop
    finally:
        engine.close()
    assert answered["generated_answer"] == expected.text.strip()


def test_generating_answers_needs_a_decoder() -> None:
    with pytest.raises(ValueError, match=r"assistant\.generate needs a decoder"):
        serve_config(assistant={"faq": "debian_faq", "generate": True})


def test_each_language_gets_the_first_decoder_that_covers_it() -> None:
    from lmforge.serve.models import ModelPool

    config = serve_config(generation={"models": ["smollm2-135m-instruct", "gemma3-270m"]})
    pool = ModelPool(None, None, config, None, None)  # only the config is read
    english, chinese = object(), object()
    pool.decoders = {"smollm2-135m-instruct": english, "gemma3-270m": chinese}
    assert pool.assistant_decoder("en") is english  # both cover English: the first writes
    assert pool.assistant_decoder("zh") is chinese  # SmolLM2 is English-only
    del pool.decoders["gemma3-270m"]  # configured but not served (it failed to load)
    assert pool.assistant_decoder("zh") is None
