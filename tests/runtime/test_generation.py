"""The decoding runtime on tiny random models (a Llama; a Gemma 3 for the parity tests):
parity with transformers, batching, sampling, limits and cancellation."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import CHAT_TEMPLATE, RecordedProgress
from lmforge.errors import CheckpointError, ModelNotFoundError, ModelUnavailableError
from lmforge.hardware import cpu_has_int8_dot
from lmforge.runtime import int8
from lmforge.runtime.decoder import load_decoder
from lmforge.runtime.generation import (
    EngineFull,
    GenerationEngine,
    GenerationError,
    SamplingParams,
    TextDecoder,
)
from lmforge.runtime.kv_cache import PrefixStore

GREEDY = SamplingParams(max_tokens=24, temperature=0)
PROMPTS = ["hello world", "a wonderful, moving film", "i hated every minute of it, how are you?"]


@pytest.fixture(scope="module")
def engine(tiny_decoder_dir: Path) -> Iterator[GenerationEngine]:
    eng = GenerationEngine.from_folder(tiny_decoder_dir, max_batch=3)
    yield eng
    eng.close()


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def any_engine(
    request: pytest.FixtureRequest, engine: GenerationEngine
) -> Iterator[tuple[GenerationEngine, Path]]:
    """Each architecture the runtime implements, with its folder: the Llama engine above, and
    a Gemma 3 (sliding windows, query/key norms, its own scaling)."""
    if request.param == "llama":
        yield engine, request.getfixturevalue("tiny_decoder_dir")
        return
    folder = request.getfixturevalue("tiny_gemma3_dir")
    eng = GenerationEngine.from_folder(folder, max_batch=3)
    yield eng, folder
    eng.close()


def hf_generate(folder: Path, prompt: list[int], **kwargs: object) -> list[int]:
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    out = model.generate(torch.tensor([prompt]), do_sample=False, **kwargs)
    tokens: list[int] = out[0, len(prompt) :].tolist()
    eos = model.config.eos_token_id
    return tokens[: tokens.index(eos)] if eos in tokens else tokens


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_greedy_equals_transformers_generate(
    any_engine: tuple[GenerationEngine, Path], penalty: float
) -> None:
    engine, folder = any_engine
    for text in PROMPTS:
        prompt = engine.encode(text)
        params = SamplingParams(max_tokens=24, temperature=0, repetition_penalty=penalty)
        ours = engine.generate(prompt, params).tokens
        theirs = hf_generate(folder, prompt, max_new_tokens=24, repetition_penalty=penalty)
        assert ours == theirs
        assert len(ours) > 3  # the comparison covers real decoding steps


def test_batched_decoding_gives_one_at_a_time_tokens(
    any_engine: tuple[GenerationEngine, Path],
) -> None:
    engine, _ = any_engine
    prompts = [engine.encode(t) for t in [*PROMPTS, "brilliant and funny", "awful"]]
    alone = [engine.generate(p, GREEDY).tokens for p in prompts]
    sampled = SamplingParams(max_tokens=16, temperature=0.9, top_p=0.9, top_k=20, seed=7)
    alone_sampled = [engine.generate(p, sampled).tokens for p in prompts]
    results: dict[tuple[int, bool], list[int]] = {}

    def run(i: int, sample: bool) -> None:
        results[(i, sample)] = engine.generate(prompts[i], sampled if sample else GREEDY).tokens

    # ten requests on three slots: they join and leave the running batch between steps
    threads = [
        threading.Thread(target=run, args=(i, s)) for i in range(len(prompts)) for s in (0, 1)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[(i, False)] for i in range(len(prompts))] == alone
    assert [results[(i, True)] for i in range(len(prompts))] == alone_sampled
    assert engine.steps > 0


def test_one_pass_of_decoding_and_prompts_matches_separate_passes(
    any_engine: tuple[GenerationEngine, Path],
) -> None:
    engine, _ = any_engine
    model = engine.model
    prompts = [engine.encode(p) for p in PROMPTS]  # different lengths
    running = [engine.encode("hello world"), engine.encode("awful")]
    next_tokens = [5, 7]
    alone, together = model.new_cache(5), model.new_cache(5)
    for cache in (alone, together):
        for slot, prompt in enumerate(running):
            model.prefill(cache, slot, prompt)
    lengths = [len(p) for p in running]
    expected = torch.cat(
        [
            model.step(alone, lengths, next_tokens),
            torch.stack([model.prefill(alone, 2 + i, p) for i, p in enumerate(prompts)]),
        ]
    )
    logits = model.step(together, lengths, next_tokens, prompts)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    stored = [n + 1 for n in lengths] + [len(p) for p in prompts]
    for layer in range(len(model.layers)):
        for slot, n in enumerate(stored):
            for kind in ("keys", "values"):
                torch.testing.assert_close(
                    getattr(together, kind)[layer][slot, :, :n],
                    getattr(alone, kind)[layer][slot, :, :n],
                )


def test_a_prompt_after_a_reused_prefix_matches_a_whole_prefill(
    any_engine: tuple[GenerationEngine, Path],
) -> None:
    engine, _ = any_engine
    model = engine.model
    prompt = engine.encode("i hated every minute of it, how are you? fine, thanks")
    whole, reused = model.new_cache(3), model.new_cache(3)
    expected = model.prefill(whole, 1, prompt)
    model.prefill(reused, 2, prompt[:5])  # an earlier sequence, in another slot
    reused.write(1, reused.read(2, 5), 5)
    running = engine.encode("hello world")
    model.prefill(reused, 0, running)  # a decoding slot beside it in the same pass
    logits = model.step(reused, [len(running)], [5], [prompt[5:]], [5])
    torch.testing.assert_close(logits[1], expected, atol=1e-4, rtol=1e-4)
    for layer in range(len(model.layers)):
        torch.testing.assert_close(
            reused.keys[layer][1, :, : len(prompt)], whole.keys[layer][1, :, : len(prompt)]
        )
        torch.testing.assert_close(
            reused.values[layer][1, :, : len(prompt)], whole.values[layer][1, :, : len(prompt)]
        )


def test_prefix_store_keeps_recent_sequences_within_its_budget() -> None:
    def kv(n: int) -> torch.Tensor:
        return torch.full((1, 2, 1, n, 1), float(n))

    store = PrefixStore(budget=10)
    store.add([1, 2, 3], kv(3))
    assert store.match([1, 2, 3]) == (2, store.entries[(1, 2, 3)])  # the last token must run
    assert store.match([1, 2, 3, 4])[0] == 3
    assert store.match([9, 2, 3])[0] == 0
    store.add([1, 2, 3, 4, 5], kv(5))  # replaces the sequence it extends
    assert list(store.entries) == [(1, 2, 3, 4, 5)] and store.positions == 5
    store.add([1, 2], kv(2))  # already held
    assert list(store.entries) == [(1, 2, 3, 4, 5)]
    store.add([7, 8, 9], kv(3))
    store.match([1, 2, 3, 4, 5, 6])  # a match makes a sequence recently used
    store.add([5, 5, 5], kv(3))  # over budget: the least recently used leaves
    assert list(store.entries) == [(1, 2, 3, 4, 5), (5, 5, 5)] and store.positions == 8
    store.add(list(range(11)), kv(11))  # longer than the whole budget: not kept
    assert store.positions == 8


def test_prompts_reuse_stored_prefixes_and_give_the_same_tokens(tiny_decoder_dir: Path) -> None:
    shared = "a wonderful, moving film, said the critic, and then she added: "
    prompts = [shared + end for end in ("loved it", "hated it", "i hated every minute")]
    plain = GenerationEngine.from_folder(tiny_decoder_dir, max_batch=3, prefix_cache=0)
    cached = GenerationEngine.from_folder(tiny_decoder_dir, max_batch=3)
    try:
        ids = [plain.encode(p) for p in prompts]
        expected = [plain.generate(p, GREEDY).tokens for p in ids]
        first = cached.generate(ids[0], GREEDY)  # stored when it finishes
        done = [threading.Event() for _ in ids[1:]]
        rest = [  # the two run together, both from the stored prefix
            cached.submit(p, GREEDY, lambda _, end, e=e: end and e.set())  # type: ignore[misc]
            for p, e in zip(ids[1:], done, strict=True)
        ]
        assert all(e.wait(timeout=60) for e in done)
        assert first.tokens == expected[0]
        assert [seq.generated for seq in rest] == expected[1:]
        common = len(plain.encode(shared)) - 2  # the tokens at the join may merge
        assert all(seq.cached_tokens >= common for seq in rest)
        assert plain.cached_tokens == 0 and cached.cached_tokens >= 2 * common
        assert cached.prompt_tokens == sum(len(p) for p in ids)
    finally:
        plain.close()
        cached.close()


@pytest.mark.parametrize("fmt", ["fp32", "int8"])
def test_a_seeded_request_gives_the_same_text_once_its_prompt_is_stored(
    tiny_decoder_dir: Path, fmt: str
) -> None:
    """Issue 17: with the prefix store on, the same seeded chat request gave another text on its
    second call (its prompt then came from the store, computed in another chunk of rows)."""
    system = {"role": "system", "content": "you are a film critic, answer in one short line"}
    chats = [
        [system, {"role": "user", "content": question}]
        for question in ("a wonderful, moving film?", "i hated every minute of it, how are you?")
    ]
    plain = GenerationEngine.from_folder(tiny_decoder_dir, fmt, max_batch=2, prefix_cache=0)  # type: ignore[arg-type]
    cached = GenerationEngine.from_folder(tiny_decoder_dir, fmt, max_batch=2)  # type: ignore[arg-type]
    seen: list[torch.Tensor] = []  # the logits each admitted prompt gives its first token

    def recording(engine: GenerationEngine) -> None:
        step = engine.model.step

        def step_and_record(*args: Any) -> torch.Tensor:
            logits = step(*args)
            if len(args) > 3 and args[3]:
                seen.append(logits[-1].clone())
            return logits

        engine.model.step = step_and_record  # type: ignore[method-assign]

    recording(plain)
    recording(cached)
    try:
        cached.generate(cached.encode_chat(chats[0]), GREEDY)  # stores the system prompt
        prompt = cached.encode_chat(chats[1])
        for seed in range(3):
            params = SamplingParams(max_tokens=24, temperature=1.0, seed=seed, ignore_eos=True)
            seen.clear()
            fresh = plain.generate(prompt, params).tokens
            first = cached.generate(prompt, params).tokens  # the system prompt is stored
            again = cached.generate(prompt, params).tokens  # all of the prompt is stored
            assert first == fresh and again == fresh
            # what the sampler sees is bit for bit a fresh prefill's, not merely close to it
            assert len(seen) == 3 and all(torch.equal(s, seen[0]) for s in seen)
        assert cached.cached_tokens == 0  # seeded prompts were prefilled whole
        unseeded = cached.submit(prompt, GREEDY, lambda *_: None)
        while unseeded.finish_reason is None:
            time.sleep(0.01)
        assert unseeded.cached_tokens == len(prompt) - 1  # the store still serves the others
    finally:
        plain.close()
        cached.close()


def test_sampling_follows_the_softmax_and_its_cuts() -> None:
    from lmforge.runtime.generation import GenerationRequest, _sample

    logits = torch.full((2, 1000), float("-inf"))
    logits[:, :4] = torch.tensor([2.0, 1.0, 0.0, -1.0])

    def draws(params: SamplingParams, n: int = 4000) -> torch.Tensor:
        seq = GenerationRequest([1], params, lambda *_: None, None)  # type: ignore[arg-type]
        seq.generator = torch.Generator().manual_seed(7)
        other = GenerationRequest([1], GREEDY, lambda *_: None, None)  # type: ignore[arg-type]
        tokens = [_sample(logits, [seq, other]) for _ in range(n)]
        assert all(t[1] == 0 for t in tokens)  # a greedy row beside it stays greedy
        return torch.bincount(torch.tensor([t[0] for t in tokens]), minlength=1000) / n

    freq = draws(SamplingParams(temperature=1.0))
    assert freq[4:].sum() == 0  # a token of probability 0 is never drawn
    torch.testing.assert_close(freq[:4], logits[0, :4].softmax(-1), atol=0.03, rtol=0)
    assert draws(SamplingParams(temperature=1.0, top_k=2))[2:].sum() == 0
    assert draws(SamplingParams(temperature=1.0, top_p=0.5))[1:].sum() == 0  # p(0) = 0.64


def test_chat_template_and_stop_reasons(engine: GenerationEngine) -> None:
    prompt = engine.encode_chat([{"role": "user", "content": "hello"}])
    assert engine.tokenizer.decode(prompt).endswith("<|im_start|>assistant\n")
    short = engine.generate(prompt, SamplingParams(max_tokens=2, temperature=0))
    assert short.finish_reason == "length" and len(short.tokens) == 2
    assert short.prompt_tokens == len(prompt) and short.first_token_s > 0


def test_stop_string_ends_and_is_left_out(engine: GenerationEngine) -> None:
    prompt = engine.encode("hello world")
    full = engine.generate(prompt, SamplingParams(max_tokens=24, temperature=0))
    assert len(full.text) > 4
    stop = full.text[2:4]
    cut = engine.generate(prompt, SamplingParams(max_tokens=24, temperature=0, stop=(stop,)))
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.index(stop)]


def test_text_decoder_holds_back_partial_characters_and_stops(tiny_decoder_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_decoder_dir)
    ids = tokenizer("abcé world 你好 END more", add_special_tokens=False)["input_ids"]
    dec = TextDecoder(tokenizer, ("END",))
    released, stopped = "", False
    for n in range(1, len(ids) + 1):
        delta, stopped = dec.push(ids[:n], final=n == len(ids))
        released += delta
        # never half a character (the Chinese ones take several byte tokens here), never a
        # tail that could still begin "END"
        assert "\ufffd" not in released and "E" not in released
        if stopped:
            break
    assert stopped and released == dec.text == "abcé world 你好 "


def test_text_decoder_releases_exactly_the_decoded_text(tiny_decoder_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_decoder_dir)
    text = "hello 世界, how are you? ça va 🙂 <|im_end|> fin"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = [*ids, *range(3, 60)]  # and tokens no text would encode to
    dec = TextDecoder(tokenizer, ())
    deltas = [dec.push(ids[:n], final=n == len(ids))[0] for n in range(1, len(ids) + 1)]
    assert "".join(deltas) == dec.text == tokenizer.decode(ids, skip_special_tokens=True)
    cut = ids[: ids.index(tokenizer("🙂", add_special_tokens=False)["input_ids"][0]) + 1]
    ended = TextDecoder(tokenizer, ())
    tail = [ended.push(cut[:n], final=n == len(cut))[0] for n in range(1, len(cut) + 1)]
    # a character cut off by the end of the answer is released as the tokenizer decodes it
    assert "".join(tail) == tokenizer.decode(cut, skip_special_tokens=True)


def test_loading_an_engine_says_what_it_prepares(tiny_decoder_dir: Path) -> None:
    recorded = RecordedProgress()
    engine = GenerationEngine.from_folder(tiny_decoder_dir, "int8", progress=recorded)
    engine.close()
    notes = recorded.notes
    assert notes[0] == f"loading {tiny_decoder_dir.name} (int8; calibrating int8 on fixed texts)"
    assert "attention kernel" in notes[1]


def test_sampling_is_reproducible_with_a_seed(engine: GenerationEngine) -> None:
    prompt = engine.encode("hello world")
    params = SamplingParams(max_tokens=12, temperature=1.0, seed=3)
    assert engine.generate(prompt, params).tokens == engine.generate(prompt, params).tokens
    other = SamplingParams(max_tokens=12, temperature=1.0, seed=4)
    runs = {tuple(engine.generate(prompt, other).tokens) for _ in range(2)}
    assert len(runs) == 1


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        (SamplingParams(max_tokens=0), "max_tokens"),
        (SamplingParams(temperature=-1), "temperature"),
        (SamplingParams(top_p=0), "top_p"),
        (SamplingParams(top_k=-1), "top_k"),
        (SamplingParams(repetition_penalty=0), "repetition_penalty"),
        (SamplingParams(stop=("",)), "stop"),
        (SamplingParams(max_tokens=256), "no room"),
    ],
)
def test_bad_values_are_refused(
    engine: GenerationEngine, params: SamplingParams, fragment: str
) -> None:
    with pytest.raises(GenerationError, match=fragment):
        engine.submit([1, 2, 3], params, lambda *_: None)


def test_prompt_over_the_context_is_refused_or_truncated(engine: GenerationEngine) -> None:
    long = engine.encode("hello world " * 200)
    assert len(long) > 256
    with pytest.raises(GenerationError, match="256-token context"):
        engine.submit(long, GREEDY, lambda *_: None)
    done = engine.generate(long, GREEDY, truncate=True)
    assert done.prompt_tokens == 256 - GREEDY.max_tokens
    with pytest.raises(GenerationError, match="empty"):
        engine.submit([], GREEDY, lambda *_: None)


def test_a_defaulted_max_tokens_fits_the_room_the_prompt_leaves(engine: GenerationEngine) -> None:
    # a request that set no max_tokens gets the server's default (256 here, the whole context)
    # shrunk to what the prompt leaves, not a 422; an asked-for 256 is still refused
    prompt = engine.encode("hello world")
    fitted = SamplingParams(max_tokens=256, temperature=0, ignore_eos=True, fit_context=True)
    done = engine.generate(prompt, fitted)
    assert done.prompt_tokens == len(prompt)
    assert len(done.tokens) == 256 - len(prompt)
    with pytest.raises(GenerationError, match="no room"):
        engine.submit(prompt, replace(fitted, fit_context=False), lambda *_: None)


def test_cancel_frees_the_slot(tiny_decoder_dir: Path) -> None:
    eng = GenerationEngine.from_folder(tiny_decoder_dir, max_batch=1, max_waiting=1)
    try:
        endless = SamplingParams(max_tokens=200, temperature=1.0, seed=1, ignore_eos=True)
        reasons: list[str | None] = []
        seq = eng.submit(eng.encode("hello"), endless, lambda _d, r: reasons.append(r))
        deadline = time.monotonic() + 10  # the engine thread moves it from waiting to running
        while eng.load()["running"] == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        waiting = eng.submit(eng.encode("hello"), endless, lambda *_: None)
        with pytest.raises(EngineFull):  # one running, one waiting: the line is full
            eng.submit(eng.encode("hello"), endless, lambda *_: None)
        seq.cancel()
        waiting.cancel()
        deadline = time.monotonic() + 10
        while eng.load()["running"] + eng.load()["waiting"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert eng.load() == {"running": 0, "waiting": 0}
        assert reasons[-1] == "cancelled" and len(seq.generated) < 200
        assert eng.generate(eng.encode("hello"), GREEDY).finish_reason in ("stop", "length")
    finally:
        eng.close()


def test_a_failing_step_fails_only_the_running_requests(
    tiny_decoder_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    eng = GenerationEngine.from_folder(tiny_decoder_dir)
    try:
        real = eng.model.step
        calls = {"n": 0}

        def flaky(*args: object) -> torch.Tensor:
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("boom")
            return real(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(eng.model, "step", flaky)
        broken = eng.generate(eng.encode("hello"), GREEDY)
        assert broken.finish_reason == "error"
        assert eng.generate(eng.encode("hello"), GREEDY).finish_reason in ("stop", "length")
    finally:
        eng.close()


@pytest.mark.parametrize("fmt", ["bf16", "int8"])
def test_reduced_weight_formats_keep_the_next_token_distribution(
    tiny_decoder_dir: Path, fmt: str
) -> None:
    exact, tokenizer = load_decoder(tiny_decoder_dir, "fp32")
    reduced, _ = load_decoder(tiny_decoder_dir, fmt)  # type: ignore[arg-type]
    prompt = tokenizer("a wonderful, moving film")["input_ids"]
    a = exact.prefill(exact.new_cache(1), 0, prompt)
    b = reduced.prefill(reduced.new_cache(1), 0, prompt)
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.99
    assert int(a.argmax()) == int(b.argmax())


def test_int8_activations_use_all_8_bits_where_the_cpu_has_vnni(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    weight, x = torch.randn(64, 32), torch.randn(4, 32)
    exact = x @ weight.T
    errors = {}
    for vnni in (False, True):
        monkeypatch.setattr(int8, "cpu_has_int8_dot", lambda vnni=vnni: vnni)
        linear = int8.Linear(weight, None, "int8")
        assert linear.reduce_range is not vnni
        if vnni and not cpu_has_int8_dot():
            continue  # 8-bit activations without VNNI may saturate: never chosen there
        errors[vnni] = float((linear(x) - exact).abs().mean())
    if True in errors:  # on this CPU: the eighth bit cuts the rounding error (here by ~40 %)
        assert errors[True] < 0.75 * errors[False]


def test_int8_keeps_a_massive_row_from_flattening_the_others() -> None:
    torch.manual_seed(0)
    weight = torch.randn(64, 32)
    x = torch.randn(int8.ROW_GROUP + 8, 32)
    x[0] *= 100  # a first token's "massive activations"
    exact = x @ weight.T
    linear = int8.Linear(weight, None, "int8")
    one_call = torch.ops.quantized.linear_dynamic(x, linear.packed, linear.reduce_range)
    grouped = linear(x)
    error = {
        name: float((y[1:] - exact[1:]).abs().mean())
        for name, y in [("one", one_call), ("grouped", grouped)]
    }
    assert error["grouped"] < 0.25 * error["one"]
    assert torch.allclose(grouped[0], exact[0], rtol=0.05, atol=0.05 * float(exact[0].abs().max()))


def test_unloadable_folders_get_one_line_errors(tmp_path: Path, tiny_base: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"config\.json"):
        load_decoder(tmp_path)
    with pytest.raises(ModelUnavailableError, match="architecture 'bert'"):
        load_decoder(tiny_base)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="cannot load the decoder"):
        load_decoder(broken)


def test_chat_template_is_the_tokenizers(engine: GenerationEngine) -> None:
    assert engine.tokenizer.chat_template == CHAT_TEMPLATE


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lmforge.cli", "generate", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_generate(
    tiny_decoder_dir: Path, tiny_gemma3_dir: Path, engine: GenerationEngine, tmp_path: Path
) -> None:
    model = ("--model", str(tiny_decoder_dir), "--max-tokens", "20")
    seeded = (*model, "--weights", "fp32", "--seed", "3", "--json")
    done = run_cli("hello", *seeded)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["finish_reason"] in ("stop", "length") and report["completion_tokens"] <= 20
    chat = engine.encode_chat([{"role": "user", "content": "hello"}])
    assert report["prompt_tokens"] == len(chat)
    again = json.loads(
        run_cli("hello", *model, "--weights", "fp32", "--seed", "3", "--json").stdout
    )
    assert again["text"] == report["text"]  # same seed, same text
    streamed = run_cli("hello", *model, "--raw", "--temperature", "0")
    assert streamed.returncode == 0 and streamed.stdout.endswith("\n")
    # a base model without a chat template continues the text as is (as --raw does)
    base = tmp_path / "base"
    shutil.copytree(tiny_gemma3_dir, base)
    (base / "chat_template.jinja").unlink()
    plain = run_cli("hello", "--model", str(base), "--max-tokens", "5", "--json")
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["prompt_tokens"] == len(engine.encode("hello"))
    for args, needle in (
        (("--model", str(tiny_decoder_dir), "--weights", "int4"), "unknown weight format"),
        (("--model", "minilm-l6"), "not a decoder"),
        (("--model", str(tiny_decoder_dir), "--max-tokens", "300"), "256-token context"),
    ):
        bad = run_cli("hello", *args)
        assert bad.returncode == 2, bad.stderr
        # one error line, last; before it at most what loading said (the context window is
        # known once the decoder is loaded)
        lines = bad.stderr.strip().splitlines()
        assert needle in lines[-1] and lines[-1].startswith("error:"), bad.stderr
        assert "Traceback" not in bad.stderr and sum(ln.startswith("error:") for ln in lines) == 1
