"""`logprobs` / `top_logprobs` on the OpenAI-compatible routes, read back through the official
`openai` client from the real app under uvicorn serving a tiny random Llama: the numbers are the
model's own log-softmax, streamed chunks add up to the whole answer, and bad values are 422."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import LiveServer, serve_config
from lmforge.registry import Registry
from lmforge.serve import KeyStore
from lmforge.settings import Settings

GREEDY: dict[str, Any] = {"temperature": 0, "max_tokens": 12}
CHAT: list[Any] = [{"role": "user", "content": "a wonderful, moving film"}]


@pytest.fixture(scope="module")
def site(tiny_decoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    settings = Settings(home=tmp_path_factory.mktemp("logprobs-home"), database_url=None)
    store = KeyStore(Registry(settings).engine)
    config = serve_config(
        models=[],
        limits={"max_chars": 2000, "rate_per_second": None},
        generation={"models": [str(tiny_decoder_dir)], "weights": "fp32", "max_batch": 2},
    )
    with LiveServer(config, settings) as server:
        server.key = store.create("gen", ["predict"])[1]
        server.name = str(tiny_decoder_dir)
        server.engine = server.state.pool.decoders[server.name].engine
        yield server


@pytest.fixture
def client(site: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=site.url + "/v1", api_key=site.key, max_retries=0)


def log_softmax(folder: Path, prompt: list[int], tokens: list[int]) -> torch.Tensor:
    """transformers' log-softmax at each generated position (the reference)."""
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = model(torch.tensor([prompt + tokens])).logits[0]
    return torch.log_softmax(logits[len(prompt) - 1 : -1].float(), dim=-1)


def test_chat_logprobs_match_the_models_log_softmax_for_greedy_tokens(
    site: Any, client: openai.OpenAI, tiny_decoder_dir: Path
) -> None:
    answer = client.chat.completions.create(
        model=site.name, messages=CHAT, logprobs=True, top_logprobs=3, **GREEDY
    )
    choice = answer.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    content = choice.logprobs.content
    assert answer.usage is not None and len(content) == answer.usage.completion_tokens > 3
    # each token's bytes join up to the answer's text
    joined = b"".join(bytes(t.bytes or []) for t in content)
    assert joined.decode() == choice.message.content
    prompt = site.engine.encode_chat(CHAT)
    tokens = site.engine.generate(prompt, _greedy_params()).tokens
    assert [site.engine.tokenizer.decode([t]) for t in tokens][:1] == [content[0].token]
    reference = log_softmax(tiny_decoder_dir, prompt, tokens)
    for row, token, entry in zip(reference, tokens, content, strict=True):
        assert entry.logprob == pytest.approx(float(row[token]), abs=1e-4)
        assert len(entry.top_logprobs) == 3
        top = torch.topk(row, 3).values.tolist()
        assert [t.logprob for t in entry.top_logprobs] == pytest.approx(top, abs=1e-4)
        assert entry.top_logprobs[0].token == entry.token  # greedy: the likeliest
        assert entry.top_logprobs[0].bytes == entry.bytes


def _greedy_params() -> Any:
    from lmforge.runtime.generation import SamplingParams

    return SamplingParams(max_tokens=12, temperature=0)


def test_streamed_chat_logprobs_add_up_to_the_whole_answers(
    site: Any, client: openai.OpenAI
) -> None:
    whole = client.chat.completions.create(
        model=site.name, messages=CHAT, logprobs=True, top_logprobs=2, **GREEDY
    )
    chunks = list(
        client.chat.completions.create(
            model=site.name, messages=CHAT, logprobs=True, top_logprobs=2, stream=True, **GREEDY
        )
    )
    streamed = [
        entry
        for c in chunks
        for choice in c.choices
        if choice.logprobs is not None
        for entry in choice.logprobs.content or []
    ]
    assert whole.choices[0].logprobs is not None
    expected = whole.choices[0].logprobs.content or []
    assert [e.token for e in streamed] == [e.token for e in expected]
    assert [e.logprob for e in streamed] == pytest.approx([e.logprob for e in expected], abs=1e-5)
    # each chunk carries the entries of the tokens its text completes
    for chunk in chunks:
        if chunk.choices and chunk.choices[0].logprobs is not None:
            entries = chunk.choices[0].logprobs.content or []
            raw = b"".join(bytes(e.bytes or []) for e in entries)
            assert raw.decode("utf-8", "replace") == (chunk.choices[0].delta.content or "")


def test_chat_without_logprobs_has_none(site: Any, client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model=site.name, messages=CHAT, **GREEDY)
    assert answer.choices[0].logprobs is None
    bare = client.chat.completions.create(model=site.name, messages=CHAT, logprobs=True, **GREEDY)
    content = bare.choices[0].logprobs.content if bare.choices[0].logprobs else None
    assert content and all(e.top_logprobs == [] for e in content)


def test_legacy_completions_logprobs(
    site: Any, client: openai.OpenAI, tiny_decoder_dir: Path
) -> None:
    prompt = "hello world"
    whole = client.completions.create(model=site.name, prompt=prompt, logprobs=2, **GREEDY)
    choice = whole.choices[0]
    lp = choice.logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs
    assert lp.text_offset is not None
    ids = site.engine.encode(prompt)
    tokens = site.engine.generate(ids, _greedy_params()).tokens
    reference = log_softmax(tiny_decoder_dir, ids, tokens)
    assert len(lp.tokens) == len(tokens)
    expected = [float(row[t]) for row, t in zip(reference, tokens, strict=True)]
    assert lp.token_logprobs == pytest.approx(expected, abs=1e-4)
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert top[token] == pytest.approx(logprob)  # the chosen token is always there
        assert 2 <= len(top) <= 3 and max(top.values()) == pytest.approx(logprob)
    # offsets count characters from the start of the prompt
    assert lp.text_offset[0] == len(prompt)
    assert all(b >= a for a, b in zip(lp.text_offset, lp.text_offset[1:], strict=False))
    for token, offset in zip(lp.tokens, lp.text_offset, strict=True):
        if not token.startswith("bytes:"):
            at = offset - len(prompt)
            assert choice.text[at : at + len(token)] == token
    streamed = client.completions.create(
        model=site.name, prompt=prompt, logprobs=2, stream=True, **GREEDY
    )
    parts = [c.choices[0].logprobs for c in streamed if c.choices and c.choices[0].logprobs]
    assert [t for p in parts for t in p.tokens or []] == lp.tokens
    assert [o for p in parts for o in p.text_offset or []] == lp.text_offset
    assert all(math.isfinite(x) for p in parts for x in p.token_logprobs or [])


@pytest.mark.parametrize(
    ("path", "extra", "param"),
    [
        ("/v1/chat/completions", {"top_logprobs": 2}, "top_logprobs"),
        ("/v1/chat/completions", {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ("/v1/completions", {"logprobs": 6}, "logprobs"),
        ("/v1/completions", {"logprobs": -1}, "logprobs"),
    ],
)
def test_bad_logprobs_values_are_422_naming_the_field(
    site: Any, path: str, extra: dict[str, Any], param: str
) -> None:
    body: dict[str, Any] = {"model": site.name, **extra}
    body.update({"messages": CHAT} if "chat" in path else {"prompt": "hello"})
    r = httpx.post(
        site.url + path, json=body, headers={"Authorization": f"Bearer {site.key}"}, timeout=30
    )
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["param"] == param and param in error["message"]
    if "logprobs" not in extra:
        assert "logprobs: true" in error["message"]
