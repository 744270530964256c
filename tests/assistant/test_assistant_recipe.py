"""The assistant task end to end with the real MiniLM: an FAQ file → retrieval and refusal
measured → a registered assistant → served by POST /v1/assistant/ask (plain and streamed, with
a written answer from a tiny decoder) and answered by `lmforge app assistant --model`."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

from conftest import LiveServer, lmforge, serve_config
from lmforge.assistant.assistant import resolve_encoder
from lmforge.errors import DataError, ModelNotFoundError
from lmforge.recipe import load_recipe
from lmforge.registry import Registry
from lmforge.serve.server import check_bind
from lmforge.settings import Settings
from lmforge.tasks import RunResult, run_recipe

FAQ = [
    ("How do I reset my password?", "Open Settings, then Account, and choose Reset password."),
    ("How can I cancel my subscription?", "Go to Billing and press Cancel subscription."),
    ("Where are my invoices?", "Invoices are under Billing as PDF files you can download."),
    ("How long does shipping take?", "Parcels ship within two days and arrive in a week."),
    ("Can I get a refund?", "Refunds go back to the original card within five days."),
    ("How do I turn on two-factor login?", "Use an authenticator app under Security."),
    ("How do I export my data?", "Export your data as CSV from the Reports page."),
    ("How do I delete my account?", "Write to support to have the account deleted."),
]


def faq_recipe(folder: Path, **assistant: Any) -> Path:
    path = folder / "faq.csv"
    rows = [{"q": q, "a": a, "citation": f"Help §{i}"} for i, (q, a) in enumerate(FAQ, 1)]
    pd.DataFrame(rows).to_csv(path, index=False)
    recipe = {
        "name": "help-desk",
        "task": "assistant",
        "data": {"source": {"path": "faq.csv", "text_column": "q", "pair_column": "a"}},
        "model": {"base": "minilm-l6"},
        "assistant": {"top_k": 2, **assistant},
    }
    out = folder / "assistant.yaml"
    out.write_text(yaml.safe_dump(recipe))
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResult, Settings]:
    folder = tmp_path_factory.mktemp("assistant-recipe")
    settings = Settings(home=folder / "home", database_url=None)
    return run_recipe(load_recipe(faq_recipe(folder)), settings=settings), settings


def test_the_run_measures_retrieval_and_refusal_and_registers(
    built: tuple[RunResult, Settings],
) -> None:
    result, _ = built
    rows = {r["retriever"]: r for r in result.output.evaluation.retrieval}
    assert rows.keys() == {"assistant", "BM25", "TF-IDF"}
    assert rows["assistant"]["probe"] == "en question → answer"
    assert rows["assistant"]["queries"] == len(FAQ)
    assert rows["assistant"]["hit@5"] == 1.0 and rows["assistant"]["hit@1"] >= 0.5
    assert result.output.evaluation.tuned and -1 <= result.output.evaluation.threshold <= 1
    assert result.metrics["threshold"] == round(result.output.evaluation.threshold, 4)
    assert {"bm25", "tfidf"} == set(result.baselines)
    assert result.version is not None and result.version.task == "assistant"
    folder = result.version.path
    for name in ("faq.jsonl", "assistant.json", "refusal_scores_en.png", "data_card.md"):
        assert (folder / name).is_file(), name
    spec = json.loads((folder / "assistant.json").read_text())
    assert spec["encoder"] == "minilm-l6" and spec["top_k"] == 2
    assert spec["thresholds"] == {"en": result.output.evaluation.threshold}
    assert result.metrics["threshold_en"] == result.metrics["threshold"]
    assert not (folder / "encoder").exists()  # a catalogue encoder is stored by name
    summary = result.summary()
    assert summary["entries"] == len(FAQ) and "refusal" in summary


@pytest.fixture(scope="module")
def site(built: tuple[RunResult, Settings], tiny_decoder_dir: Path) -> Iterator[Any]:
    _, settings = built
    config = serve_config(
        models=[],
        auth={"enabled": False},
        assistant={
            "model": "help-desk",
            "threshold": 0.3,
            "generate": True,
            "generate_max_tokens": 12,
        },
        generation={"models": [str(tiny_decoder_dir)], "weights": "fp32"},
    )
    with LiveServer(config, settings) as live:
        live.engine = live.state.pool.decoders[str(tiny_decoder_dir)].engine
        live.engine.eos_ids = set()  # the random decoder writes all 12 tokens (newlines, here)
        yield live


def ask(site: Any, **body: Any) -> httpx.Response:
    return httpx.post(site.url + "/v1/assistant/ask", json=body, timeout=60)


def events(site: Any, question: str) -> list[dict[str, Any]]:
    with httpx.stream(
        "POST",
        site.url + "/v1/assistant/ask",
        json={"question": question, "stream": True},
        timeout=60,
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_the_registered_assistant_answers_with_its_faq(site: Any) -> None:
    body = ask(site, question="I forgot my password, how can I change it?").json()
    assert body["answered"] and body["citation"] == "Help §1"
    assert body["threshold"] == 0.3  # the server's override of the tuned value
    assert body["full_answer"] == FAQ[0][1] and body["answer"] == FAQ[0][1]  # one passage
    assert body["score"] == body["sources"][0]["score"] >= body["sources"][1]["score"]
    assert len(body["sources"]) == 2  # top_k from the recipe
    assert isinstance(body["generated_answer"], str)  # written by the decoder from the top entries


def test_a_streamed_answer_sends_the_entry_then_the_written_text(site: Any) -> None:
    question = "I forgot my password, how can I change it?"
    plain = ask(site, question=question).json()
    stream = events(site, question)
    first, *deltas, done = stream
    assert first["type"] == "answer" and first["citation"] == "Help §1"
    assert first["generated_answer"] is None  # not written yet
    assert deltas and all(d["type"] == "delta" for d in deltas)
    assert done["type"] == "done" and done["finish_reason"] == "length"
    written = "".join(d["text"] for d in deltas).strip()
    assert written == done["generated_answer"] == plain["generated_answer"]
    assert site.engine.load() == {"running": 0, "waiting": 0}


def test_a_refused_question_streams_no_written_text(site: Any) -> None:
    first, done = events(site, "Who won the football world cup in 1998?")
    assert first["type"] == "answer" and not first["answered"]
    assert done == {"type": "done", "generated_answer": None, "finish_reason": None}


def test_the_cli_answers_from_the_registered_assistant(
    built: tuple[RunResult, Settings],
) -> None:
    _, settings = built
    command = ["app", "assistant", "--model", "help-desk", "--json", "Where is an invoice?"]
    result = lmforge(*command, home=settings.home, timeout=300)
    assert result.returncode == 0, result.stderr
    (answer,) = json.loads(result.stdout)
    assert answer["citation"] == "Help §3" and len(answer["sources"]) == 2
    refused = lmforge(*command, "--encoder", "minilm-l6", home=settings.home, timeout=300)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "--encoder cannot change a registered assistant's encoder" in refused.stderr


def test_serving_what_is_not_an_assistant_is_refused(home: Settings) -> None:
    with pytest.raises(ModelNotFoundError, match="no registered model named 'nope'"):
        check_bind(serve_config(assistant={"model": "nope"}))
    with pytest.raises(ValueError, match="exactly one of 'model'"):
        serve_config(assistant={"model": "help-desk", "faq": "debian_faq"})
    with pytest.raises(ValueError, match="cannot change a registered assistant's encoder"):
        serve_config(assistant={"model": "help-desk", "encoder": "minilm-l6"})


def test_a_registered_similarity_model_can_be_the_encoder(
    built: tuple[RunResult, Settings],
) -> None:
    _, settings = built
    registry = Registry(settings)
    minilm = resolve_encoder("minilm-l6", settings.cache_dir)
    staging = registry.new_staging_dir()
    shutil.copytree(minilm.path, staging, dirs_exist_ok=True)
    meta = {"task": "similarity", "labels": [], "text_prefix": "q: ", "max_length": 128}
    (staging / "lmforge.json").write_text(json.dumps(meta))
    registry.register(
        "faq-vectors",
        staging,
        task="similarity",
        base_model="minilm-l6",
        labels=[],
        metrics={},
        baselines={},
    )
    found = resolve_encoder("faq-vectors", settings.cache_dir, registry)
    assert found.ref == "faq-vectors:v1" and not found.in_catalogue
    assert found.query_prefix == found.passage_prefix == "q: "
    with pytest.raises(ModelNotFoundError, match=r"\(task assistant\) is not a similarity"):
        resolve_encoder("help-desk", settings.cache_dir, registry)
    with pytest.raises(ModelNotFoundError, match="smollm2-135m-instruct is a decoder"):
        resolve_encoder("smollm2-135m-instruct", settings.cache_dir, registry)


def test_a_wrong_answer_column_is_a_clear_error(tmp_path: Path) -> None:
    recipe = load_recipe(faq_recipe(tmp_path))
    source = recipe.data.source.model_copy(update={"pair_column": "answer"})
    broken = recipe.model_copy(update={"data": recipe.data.model_copy(update={"source": source})})
    settings = Settings(home=tmp_path / "home", database_url=None)
    with pytest.raises(DataError, match=r"lacks the column\(s\) answer"):
        run_recipe(broken, settings=settings)
    assert not settings.runs_dir.exists() or not any(settings.runs_dir.iterdir())
