"""Log-probabilities of generated tokens on the tiny random Llama: they are the model's own
log-softmax (checked against transformers), whatever the sampling, the batch or the weight
format, and each token's bytes join up to the text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmforge.runtime.generation import GenerationEngine, GenerationError, SamplingParams
from lmforge.runtime.logprobs import TokenPieces, token_logprobs

PROMPTS = ["hello world", "a wonderful, moving film", "i hated every minute of it"]


@pytest.fixture(scope="module")
def engine(tiny_decoder_dir: Path) -> Iterator[GenerationEngine]:
    eng = GenerationEngine.from_folder(tiny_decoder_dir, max_batch=3)
    yield eng
    eng.close()


def reference(folder: Path, prompt: list[int], tokens: list[int]) -> torch.Tensor:
    """transformers' log-softmax over the vocabulary at each generated position."""
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = model(torch.tensor([prompt + tokens])).logits[0]
    return torch.log_softmax(logits[len(prompt) - 1 : -1].float(), dim=-1)


def test_greedy_logprobs_are_the_models_log_softmax(
    engine: GenerationEngine, tiny_decoder_dir: Path
) -> None:
    for text in PROMPTS:
        prompt = engine.encode(text)
        done = engine.generate(prompt, SamplingParams(max_tokens=12, temperature=0, logprobs=4))
        assert done.logprobs is not None and len(done.logprobs) == len(done.tokens) > 3
        expected = reference(tiny_decoder_dir, prompt, done.tokens)
        for row, entry, token in zip(expected, done.logprobs, done.tokens, strict=True):
            assert entry.token == token
            assert entry.logprob == pytest.approx(float(row[token]), abs=1e-4)
            top = torch.topk(row, 4)
            assert [t for t, _ in entry.top] == top.indices.tolist()
            assert [lp for _, lp in entry.top] == pytest.approx(top.values.tolist(), abs=1e-4)
            assert entry.top[0][0] == token  # greedy: the chosen token is the likeliest


def test_sampled_tokens_report_the_untempered_distribution(
    engine: GenerationEngine, tiny_decoder_dir: Path
) -> None:
    prompt = engine.encode(PROMPTS[1])
    params = SamplingParams(
        max_tokens=10, temperature=0.5, top_k=5, repetition_penalty=1.3, seed=3, logprobs=0
    )
    done = engine.generate(prompt, params)
    assert done.logprobs is not None
    expected = reference(tiny_decoder_dir, prompt, done.tokens)
    got = [e.logprob for e in done.logprobs]
    want = [float(row[t]) for row, t in zip(expected, done.tokens, strict=True)]
    assert got == pytest.approx(want, abs=1e-4)
    assert all(e.top == () for e in done.logprobs)  # 0 alternatives asked for


def test_logprobs_are_the_same_alone_and_in_a_batch_that_does_not_ask(
    engine: GenerationEngine,
) -> None:
    asked = SamplingParams(max_tokens=10, temperature=0, logprobs=2)
    plain = SamplingParams(max_tokens=10, temperature=0)
    prompt = engine.encode(PROMPTS[0])
    alone = engine.generate(prompt, asked)
    others = [engine.submit(engine.encode(p), plain, lambda *_: None) for p in PROMPTS[1:]]
    together = engine.generate(prompt, asked)
    assert together.tokens == alone.tokens
    assert together.logprobs is not None and alone.logprobs is not None
    for a, b in zip(alone.logprobs, together.logprobs, strict=True):
        assert a.token == b.token and a.logprob == pytest.approx(b.logprob, abs=1e-4)
    for seq in others:  # not asked: nothing was computed for them
        seq.cancel()
        assert seq.logprobs == []
    assert engine.generate(prompt, plain).logprobs is None


def test_each_entry_reaches_the_consumer_before_the_text_it_completes(
    engine: GenerationEngine,
) -> None:
    events: list[tuple[str, object]] = []
    done = engine.generate(
        engine.encode("你好 hello"),
        SamplingParams(max_tokens=16, temperature=0, logprobs=1),
        on_text=lambda delta, _reason: events.append(("text", delta)),
        on_logprobs=lambda entry: events.append(("entry", entry.token)),
    )
    entries = [token for kind, token in events if kind == "entry"]
    assert entries == done.tokens
    assert events[-1][0] == "text"  # the last text comes after the last entry


def test_token_bytes_join_up_to_the_text_even_when_a_token_splits_a_character(
    engine: GenerationEngine,
) -> None:
    pieces = TokenPieces(engine.tokenizer)
    text = "电影很好看 and a film"  # unseen Chinese: byte-level tokens, parts of characters
    ids = engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    raw = [pieces.bytes(i) for i in ids]
    assert all(r is not None for r in raw)
    assert b"".join(r for r in raw if r is not None).decode() == text
    partial = [pieces.text(i) for i in ids if pieces.text(i).startswith("bytes:")]
    assert partial and all(p.startswith("bytes:\\x") for p in partial)
    special = engine.tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert pieces.bytes(special) is None and pieces.text(special) == "<|im_start|>"


@pytest.mark.parametrize("fmt", ["bf16", "int8"])
def test_reduced_formats_report_their_own_distribution_close_to_fp32(
    tiny_decoder_dir: Path, fmt: str
) -> None:
    eng = GenerationEngine.from_folder(tiny_decoder_dir, fmt)  # type: ignore[arg-type]
    try:
        prompt = eng.encode(PROMPTS[1])
        done = eng.generate(prompt, SamplingParams(max_tokens=8, temperature=0, logprobs=3))
    finally:
        eng.close()
    assert done.logprobs is not None
    expected = reference(tiny_decoder_dir, prompt, done.tokens)
    for row, entry in zip(expected, done.logprobs, strict=True):
        assert entry.top[0][0] == entry.token  # greedy under its own weights
        assert entry.logprob == pytest.approx(float(row[entry.token]), abs=0.15)


def test_token_logprobs_computes_only_the_asked_rows() -> None:
    logits = torch.tensor([[0.0, 1.0, 2.0], [5.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    out = token_logprobs(logits, [0, 2], [1, 0], [2, 0])
    lp = torch.log_softmax(logits, dim=-1)
    assert out[0].logprob == pytest.approx(float(lp[0, 1]))
    assert [t for t, _ in out[0].top] == [2, 1]
    assert out[1].logprob == pytest.approx(float(lp[2, 0])) and out[1].top == ()


@pytest.mark.parametrize("wanted", [-1, 21])
def test_logprobs_out_of_range_are_refused(engine: GenerationEngine, wanted: int) -> None:
    with pytest.raises(GenerationError, match="logprobs must be between 0 and 20"):
        engine.submit([1, 2], SamplingParams(logprobs=wanted), lambda *_: None)
