"""Text generation with SmolLM2-135M-Instruct: our decoder beside transformers, and the server.

``--model gemma3-270m`` (optional package) runs parts 1 and 2 on Gemma-3-270M instead: a base
model without a chat template, so the prompts are the questions as plain text and there is no
server part; perplexity is scored on the FAQ's English and Chinese answers.

One run measures, on this machine:

1. batch-1 decoding in this process: transformers ``generate()`` (fp32, eager attention, its
   KV cache) beside lmforge's runtime in fp32, bf16 and int8, the variants taking turns in
   ``--rounds`` rounds on the same chat prompts (so the shared machine's noise hits all alike).
   Every variant generates exactly ``--tokens`` tokens (EOS ignored); tokens/s counts the
   whole call, prompt included, for every variant alike. Time to first token is reported.
2. quality of the reduced formats against fp32: how many greedy tokens agree before the first
   difference, and perplexity on real held-out text (Debian FAQ answers) scored by each format.
3. the server: ``lmforge serve`` in a subprocess (int8, up to 8 sequences per batch), 1 client
   streaming, then 8 concurrent clients streaming (closed loop: each sends its next request
   when its stream ends); windows alternate for ``--rounds`` rounds. Every request asks a
   question not asked before in the run (the Debian FAQ's English questions, in turn), so the
   prefix store can reuse only what real traffic shares: the chat template's system prompt.
   Reports the aggregate tokens/s ratio (at steady load and over the whole run), time to first
   token at each load, and the share of prompt tokens taken from the prefix store.
4. only with ``--decode-steps``: the model's decoding step alone for 1 and 8 sequences (of
   150…80 tokens, and one of 1000 beside seven of 80), decode attention by lmforge's kernel and
   by SDPA taking turns every 5 steps (``--rounds`` times).
5. only with ``--engine-passes``: the same closed loop on the engine in this process, every
   pass over the model timed, with two variants in alternate windows (``--compare``: decode
   attention by our kernel or by SDPA; the prefix store on or off): where 8 streams' time goes
   without HTTP, and what each choice gives.

    .venv/bin/python benchmarks/generation.py --json /tmp/generation.json

One file over 400 lines on purpose: a benchmark is read as one protocol, and its five parts
share the prompts, the paired-ratio helpers and the JSON document; the HTTP client it shares
with ``serve_load.py`` lives in ``loadgen.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from lmforge.data.sources import load_builtin  # noqa: E402
from lmforge.models.catalogue import covers_language  # noqa: E402
from lmforge.registry.refs import resolve_base  # noqa: E402
from lmforge.runtime.backends import cpu_threads  # noqa: E402
from lmforge.runtime.decoder import load_decoder  # noqa: E402
from lmforge.runtime.generation import GenerationEngine, SamplingParams  # noqa: E402
from lmforge.runtime.kv_cache import PrefixStore  # noqa: E402
from lmforge.runtime.measure import percentile  # noqa: E402
from lmforge.settings import get_settings  # noqa: E402
from loadgen import Connection, free_port, stop, wait_ready  # noqa: E402

QUESTIONS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle works.",
    "Give me some tips for learning to cook.",
    "Describe the water cycle.",
    "What should I pack for a week of hiking?",
    "Why is the sky blue?",
    "How do I write a good cover letter?",
    "Tell me about the history of the printing press.",
]


def user_questions() -> Iterator[str]:
    """Distinct real questions, in turn (the Debian FAQ's 112 English ones, then again)."""
    faq = load_builtin("debian_faq")
    return itertools.cycle(faq[faq["lang"] == "en"]["question"].drop_duplicates().tolist())


def as_prompt(engine: GenerationEngine, question: str) -> list[int]:
    """Through the chat template where the model has one, else the plain text (base models)."""
    if getattr(engine.tokenizer, "chat_template", None):
        return engine.encode_chat([{"role": "user", "content": question}])
    return engine.encode(question)


def batch_one(folder: Path, tokens: int, rounds: int, languages: list[str]) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(cpu_threads())
    hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    # no prefix store: the same prompts come back every round, and transformers has none
    engines = {
        fmt: GenerationEngine.from_folder(folder, fmt, prefix_cache=0)
        for fmt in ("fp32", "bf16", "int8")
    }
    prompts = [as_prompt(engines["fp32"], q) for q in QUESTIONS]
    params = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)
    first = SamplingParams(max_tokens=1, temperature=0)
    rates: dict[str, list[float]] = {name: [] for name in ("transformers", *engines)}
    ttft: dict[str, list[float]] = {name: [] for name in rates}

    def hf_run(prompt: list[int], n: int) -> float:
        ids = torch.tensor([prompt])
        start = time.perf_counter()
        with torch.inference_mode():
            hf.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        return time.perf_counter() - start

    hf_run(prompts[0], 4)  # warm-up
    for eng in engines.values():
        eng.generate(prompts[0], SamplingParams(max_tokens=4, temperature=0))
    for r in range(rounds):
        prompt = prompts[r % len(prompts)]
        rates["transformers"].append(tokens / hf_run(prompt, tokens))
        ttft["transformers"].append(hf_run(prompt, 1))
        for fmt, eng in engines.items():
            start = time.perf_counter()
            done = eng.generate(prompt, params)
            rates[fmt].append(len(done.tokens) / (time.perf_counter() - start))
            ttft[fmt].append(eng.generate(prompt, first).first_token_s)
        print(
            f"  round {r + 1}: "
            + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items())
            + " tok/s",
            file=sys.stderr,
        )
    quality = reduced_quality(engines, prompts, languages)
    for eng in engines.values():
        eng.close()
    base = rates["transformers"]
    return {
        "tokens": tokens,
        "rounds": rounds,
        "tokens_per_s": {k: statistics.median(v) for k, v in rates.items()},
        "speedup_vs_transformers": {
            k: statistics.median(a / b for a, b in zip(v, base, strict=True))
            for k, v in rates.items()
        },
        "ttft_ms": {k: 1000 * statistics.median(v) for k, v in ttft.items()},
        "prompt_tokens": statistics.mean(len(p) for p in prompts),
        "quality": quality,
    }


def reduced_quality(
    engines: dict[str, GenerationEngine], prompts: list[list[int]], languages: list[str]
) -> Any:
    """Greedy agreement with fp32, and perplexity on real held-out text (the FAQ's answers in
    each of `languages`), per format."""
    greedy = SamplingParams(max_tokens=32, temperature=0, ignore_eos=True)
    reference = [engines["fp32"].generate(p, greedy).tokens for p in prompts]
    faq = load_builtin("debian_faq")
    texts = {
        lang: [t for t in faq[faq["lang"] == lang]["answer"].tolist() if len(t) > 200][:24]
        for lang in languages
    }
    out: dict[str, Any] = {}
    for fmt, eng in engines.items():
        agree = []
        for prompt, ref in zip(prompts, reference, strict=True):
            ours = eng.generate(prompt, greedy).tokens
            agree.append(
                next(
                    (i for i, (a, b) in enumerate(zip(ours, ref, strict=True)) if a != b), len(ref)
                )
            )
        out[fmt] = {"greedy_tokens_agreeing_of_32": statistics.mean(agree)}
        for lang, chosen in texts.items():
            nll, count = 0.0, 0
            for text in chosen:
                ids = eng.encode(text)[:256]
                logits = eng.model.prefill(eng.model.new_cache(1), 0, ids, every_position=True)
                target = torch.tensor(ids[1:])
                nll += float(
                    torch.nn.functional.cross_entropy(logits[:-1], target, reduction="sum")
                )
                count += len(ids) - 1
            key = "perplexity" if lang == "en" else f"perplexity_{lang}"
            out[fmt][key] = math.exp(nll / count)
    out["texts"] = {
        "source": "debian_faq answers over 200 chars",
        "count": {lang: len(chosen) for lang, chosen in texts.items()},
    }
    return out


Answer = tuple[int, float, float, float, int, int]


def chat_body(question: str, tokens: int) -> dict[str, Any]:
    return {
        "model": "smollm2-135m-instruct",  # the one the server part serves (see served())
        "messages": [{"role": "user", "content": question}],
        "max_tokens": tokens,
        # no seed: a seeded request is prefilled whole, never from the prefix store this measures
        "temperature": 0.7,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def answer_of(usage: dict[str, Any], start: float, first: float | None, end: float) -> Answer:
    """(tokens, start, first token, end) on the perf_counter clock, (prompt tokens, cached)."""
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    return usage["completion_tokens"], start, first or end, end, usage["prompt_tokens"], cached


async def stream_httpx(client: httpx.AsyncClient, url: str, question: str, tokens: int) -> Answer:
    """One streamed chat answer read with httpx, every event parsed (as an application would)."""
    start = time.perf_counter()
    first: float | None = None
    usage = None
    async with client.stream("POST", url, json=chat_body(question, tokens)) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                usage = event["usage"]
            elif first is None and event["choices"][0]["delta"].get("content"):
                first = time.perf_counter()
    assert usage is not None
    return answer_of(usage, start, first, time.perf_counter())


async def stream_raw(connection: Connection, question: str, tokens: int) -> Answer:
    """One streamed chat answer read with loadgen's small HTTP/1.1 client. The load
    generator shares the server's two cores, so it does as little as it can: JSON is parsed
    only until the first text arrives and for the last event (the usage); httpx, parsing every
    event, took several times the CPU (see docs/benchmarks.md)."""
    body = json.dumps(chat_body(question, tokens)).encode()
    start = time.perf_counter()
    first: float | None = None
    last = b""
    async for event in connection.events("/v1/chat/completions", body):
        if event == b"data: [DONE]":
            continue
        last = event
        if first is None and json.loads(event[6:])["choices"][0]["delta"].get("content"):
            first = time.perf_counter()
    return answer_of(json.loads(last[6:])["usage"], start, first, time.perf_counter())


def tokens_between(answers: list[Answer], t0: float, t1: float) -> float:
    """Tokens produced in [t0, t1]: each answer's first token at its first-token time, the
    others spread evenly up to its end (the stream only says how many there were)."""
    total = 0.0
    for count, _, first, end, *_ in answers:
        if t0 <= first <= t1:
            total += 1
        if count > 1 and end > first:
            overlap = max(0.0, min(end, t1) - max(first, t0))
            total += (count - 1) * overlap / (end - first)
    return total


async def closed_loop(
    url: str, clients: int, seconds: float, tokens: int, questions: Iterator[str], http: str
) -> dict[str, Any]:
    """`clients` streams, each sending its next question when its answer ends, for `seconds`.

    Two rates: over the whole run (from the first request to the last answer, so it includes
    the start, when every client sends at once, and the drain, when fewer and fewer streams
    are left), and at steady load: the window from a quarter of the way in to the moment
    clients stop sending, where all `clients` streams are running.
    """
    answers: list[Answer] = []
    start, client_cpu = time.perf_counter(), time.process_time()
    stop_at = start + seconds

    async def client_loop() -> None:
        if http == "httpx":
            async with httpx.AsyncClient(timeout=120) as client:
                while time.perf_counter() < stop_at:
                    answers.append(await stream_httpx(client, url, next(questions), tokens))
            return
        address = httpx.URL(url)
        connection = Connection(address.host, address.port or 80, {})
        try:
            while time.perf_counter() < stop_at:
                answers.append(await stream_raw(connection, next(questions), tokens))
        finally:
            connection.close()

    await asyncio.gather(*(client_loop() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    client_cpu = time.process_time() - client_cpu
    steady_from = start + seconds / 4
    return {
        "tokens_per_s": sum(a[0] for a in answers) / elapsed,
        "steady_tokens_per_s": tokens_between(answers, steady_from, stop_at)
        / (stop_at - steady_from),
        "ttft_p50_ms": 1000 * percentile([a[2] - a[1] for a in answers], 50),
        "requests": len(answers),
        "prompt_tokens_cached_share": sum(a[5] for a in answers) / sum(a[4] for a in answers),
        "client_cpu_share_of_a_core": client_cpu / elapsed,
    }


def ratios(runs: dict[int, list[dict[str, Any]]], key: str) -> list[float]:
    """Per round, 8 streams' `key` over one stream's (the loads alternate, so each pair shares
    the machine's state of the moment)."""
    return [float(b[key] / a[key]) for a, b in zip(runs[1], runs[8], strict=True)]


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median of a[i] / b[i]: windows taken side by side share the machine's state of the
    moment, so their ratio says more than the ratio of two medians."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def side_by_side(
    runs: dict[str, dict[int, list[dict[str, Any]]]], key: str, suffix: str = ""
) -> dict[str, float]:
    """Two variants' windows (variant → load → windows): per load, the first's `key` over the
    second's, window by window."""
    (a, first), (b, second) = runs.items()
    return {
        f"{clients}_streams_{a}_vs_{b}{suffix}": paired_ratio(
            [w[key] for w in first[clients]], [w[key] for w in second[clients]]
        )
        for clients in (1, 8)
    }


@contextlib.contextmanager
def served(folder: Path, attention: str) -> Iterator[str]:
    """`lmforge serve` in a subprocess (int8, 8 slots) serving the decoder; yields the chat URL."""
    port = free_port()
    with tempfile.TemporaryDirectory() as home:
        models = Path(home) / "cache" / "models"
        models.mkdir(parents=True)
        (models / folder.name).symlink_to(folder)
        config = Path(home) / "serve.yaml"
        config.write_text(
            "models: []\nlimits: {rate_per_second: null}\n"
            "generation: {models: [smollm2-135m-instruct], weights: int8, max_batch: 8, "
            f"attention: {attention}}}\n"
        )
        env = {**os.environ, "LMFORGE_HOME": home}
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "lmforge.cli", "serve", "--no-auth"),
                *("--port", str(port), "--config", str(config)),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_ready(port, process, "/readyz", 300)
            yield f"http://127.0.0.1:{port}/v1/chat/completions"
        finally:
            stop(process)


def server_streams(
    folder: Path, tokens: int, rounds: int, seconds: float, http: str, attentions: list[str]
) -> dict[str, Any]:
    """One server per decode attention in `attentions`, all running; each round, every server
    gets a 1-stream window then an 8-stream window, server after server."""
    questions = user_questions()
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {a: {1: [], 8: []} for a in attentions}
    with contextlib.ExitStack() as servers:
        urls = {a: servers.enter_context(served(folder, a)) for a in attentions}
        for url in urls.values():
            asyncio.run(closed_loop(url, 1, 5, tokens, questions, http))  # warm-up
        for r in range(rounds):
            for attention, url in urls.items():
                for clients in (1, 8):
                    window = closed_loop(url, clients, seconds, tokens, questions, http)
                    runs[attention][clients].append(asyncio.run(window))
                one, eight = runs[attention][1][-1], runs[attention][8][-1]
                print(
                    f"  server round {r + 1}, attention {attention}: 1 stream "
                    f"{one['steady_tokens_per_s']:.1f} tok/s steady ({one['tokens_per_s']:.1f} "
                    f"whole run), 8 streams {eight['steady_tokens_per_s']:.1f} "
                    f"({eight['tokens_per_s']:.1f})",
                    file=sys.stderr,
                )

    def summary(load: list[dict[str, Any]]) -> dict[str, float]:
        return {
            key: statistics.median(x[key] for x in load)
            for key in (
                "steady_tokens_per_s",
                "tokens_per_s",
                "ttft_p50_ms",
                "prompt_tokens_cached_share",
                "client_cpu_share_of_a_core",
            )
        }

    out: dict[str, Any] = {
        "client": http,
        "max_tokens": tokens,
        "seconds_per_window": seconds,
        "rounds": rounds,
    }
    for attention, load in runs.items():
        out[f"attention_{attention}"] = {
            "one_stream": summary(load[1]),
            "eight_streams": summary(load[8]),
            "ratio_8_vs_1_steady": statistics.median(ratios(load, "steady_tokens_per_s")),
            "ratio_8_vs_1_whole_run": statistics.median(ratios(load, "tokens_per_s")),
            "ratios_per_round_steady": ratios(load, "steady_tokens_per_s"),
        }
    if len(attentions) == 2:
        out.update(side_by_side(runs, "steady_tokens_per_s", "_steady"))
    return out


# --decode-steps: the lengths of the 8 sequences in a step, per shape
STEP_SHAPES = {"150_to_80": list(range(150, 70, -10)), "1000_and_7x80": [1000, *[80] * 7]}


def decode_steps(folder: Path, rounds: int) -> dict[str, Any]:
    """A decoding step of the model alone (int8) for 1 and for 8 sequences, decode attention by
    the kernel and by SDPA taking turns every 5 steps, `rounds` times, for each of STEP_SHAPES
    (the sequences are consecutive pieces of the FAQ's English answers): the kernel reads each
    sequence's own length where SDPA reads the longest. One row runs through SDPA either way
    (a control for the noise)."""
    torch.set_num_threads(cpu_threads())
    model, tokenizer = load_decoder(folder, "int8")
    faq = load_builtin("debian_faq")
    text = tokenizer(" ".join(faq[faq["lang"] == "en"]["answer"]))["input_ids"]
    out: dict[str, Any] = {"rounds": rounds}
    for shape, lengths in STEP_SHAPES.items():
        cache = model.new_cache(8)
        starts = itertools.accumulate(lengths, initial=0)
        sequences = [text[a : a + n] for a, n in zip(starts, lengths, strict=False)]
        for slot, ids in enumerate(sequences):
            model.prefill(cache, slot, ids)
        following = [ids[-1] for ids in sequences]
        times: dict[tuple[str, int], list[float]] = {}
        for _ in range(rounds):
            for rows in (1, 8):
                for attention in ("kernel", "sdpa"):
                    model.attention = attention
                    model.step(cache, lengths[:rows], following[:rows])
                    started = time.perf_counter()
                    for _ in range(5):
                        model.step(cache, lengths[:rows], following[:rows])
                    step = (time.perf_counter() - started) / 5
                    times.setdefault((attention, rows), []).append(step)
        result: dict[str, Any] = {"lengths": lengths}
        for attention in ("kernel", "sdpa"):
            one, eight = times[(attention, 1)], times[(attention, 8)]
            result[attention] = {
                "step_ms_1_row": 1000 * statistics.median(one),
                "step_ms_8_rows": 1000 * statistics.median(eight),
                "tokens_per_step_time_8_vs_1": paired_ratio([8 * t for t in one], eight),
            }
        for rows in (1, 8):
            result[f"step_time_{rows}_kernel_vs_sdpa"] = paired_ratio(
                times[("kernel", rows)], times[("sdpa", rows)]
            )
        print(f"  {shape}: {result}", file=sys.stderr)
        out[shape] = result
    return out


COMPARISONS = ("attention", "prefix-store")


def variants_of(engine: GenerationEngine, compare: str) -> dict[str, Callable[[], None]]:
    """--compare's two variants, each a change to the engine; the first is the server's default.
    The prefix store lives across windows, as in a server that keeps running."""
    store = engine.prefixes
    if compare == "attention":
        return {
            "attention_kernel": lambda: setattr(engine.model, "attention", "kernel"),
            "attention_sdpa": lambda: setattr(engine.model, "attention", "sdpa"),
        }
    return {
        "prefix_store_on": lambda: setattr(engine, "prefixes", store),
        "prefix_store_off": lambda: setattr(engine, "prefixes", PrefixStore(0)),
    }


def engine_passes(
    folder: Path, tokens: int, rounds: int, seconds: float, compare: str
) -> dict[str, Any]:
    """Where 8 streams' time goes, without HTTP: the server's closed loop run on the engine in
    this process, every pass over the model timed (decoding only, or with prompts joining),
    with the two variants of `compare` in alternate windows."""
    engine = GenerationEngine.from_folder(folder, "int8", max_batch=8)
    questions = user_questions()
    passes: list[tuple[int, int, float]] = []  # (decoding rows, prompt tokens run, seconds)
    step = engine.model.step

    def timed(cache: Any, lengths: Any, next_tokens: Any, *joining: Any) -> torch.Tensor:
        started = time.perf_counter()
        logits = step(cache, lengths, next_tokens, *joining)
        run = sum(map(len, joining[0])) if joining else 0
        passes.append((len(next_tokens), run, time.perf_counter() - started))
        return logits

    engine.model.step = timed  # type: ignore[method-assign, assignment]

    def window(clients: int, configure: Callable[[], None]) -> dict[str, float]:
        configure()
        passes.clear()
        stop_at = time.perf_counter() + seconds
        open_clients, done = [clients], threading.Event()
        requests: list[Any] = []

        def send() -> None:
            def on_text(delta: str, reason: Any) -> None:
                if reason is None:
                    return
                if time.perf_counter() < stop_at:
                    send()
                    return
                open_clients[0] -= 1
                if not open_clients[0]:
                    done.set()

            params = SamplingParams(max_tokens=tokens, temperature=0.7)  # unseeded: see chat_body
            prompt = engine.encode_chat([{"role": "user", "content": next(questions)}])
            requests.append(engine.submit(prompt, params, on_text))

        started = time.perf_counter()
        for _ in range(clients):
            send()
        done.wait()
        elapsed = time.perf_counter() - started
        full = [t for rows, joined, t in passes if rows == clients and not joined]
        with_prompts = sum(t for _, joined, t in passes if joined)
        return {
            "tokens_per_s": sum(len(r.generated) for r in requests) / elapsed,
            "decode_step_full_batch_ms": 1000 * statistics.median(full),
            "prompt_pass_share": with_prompts / sum(t for *_, t in passes),
            "prompt_tokens_cached_share": sum(r.cached_tokens for r in requests)
            / sum(len(r.prompt) for r in requests),
        }

    variants = variants_of(engine, compare)
    runs: dict[str, dict[int, list[dict[str, float]]]] = {v: {1: [], 8: []} for v in variants}
    try:
        for _ in range(rounds):
            for clients in (1, 8):
                for variant, configure in variants.items():
                    runs[variant][clients].append(window(clients, configure))
                    print(
                        f"  {variant}, {clients} streams: {runs[variant][clients][-1]}",
                        file=sys.stderr,
                    )
    finally:
        engine.close()
    out: dict[str, Any] = {}
    for variant, load in runs.items():
        out[variant] = {
            str(clients): {key: statistics.median(r[key] for r in got) for key in got[0]}
            for clients, got in load.items()
        }
        out[variant]["step_ratio_8_vs_1"] = statistics.median(
            ratios(load, "decode_step_full_batch_ms")
        )
        out[variant]["tokens_ratio_8_vs_1"] = statistics.median(ratios(load, "tokens_per_s"))
    out.update(side_by_side(runs, "tokens_per_s"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model",
        default="smollm2-135m-instruct",
        help="catalogue decoder; gemma3-270m (optional) runs without the server part",
    )
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--server-seconds", type=float, default=20)
    parser.add_argument("--skip-server", action="store_true")
    parser.add_argument("--only-server", action="store_true")
    parser.add_argument(
        "--engine-passes", action="store_true", help="only: the closed loop on the engine, timed"
    )
    parser.add_argument(
        "--decode-steps",
        action="store_true",
        help="only: the model's decoding step, kernel and SDPA attention alternating",
    )
    parser.add_argument(
        "--compare",
        choices=COMPARISONS,
        default="attention",
        help="with --engine-passes: the two variants that take turns",
    )
    parser.add_argument(
        "--attention",
        type=lambda text: text.split(","),
        default=["kernel"],
        help="the server's decode attention: kernel, sdpa, or kernel,sdpa (a server each, "
        "windows alternating)",
    )
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="the streaming clients: raw asyncio HTTP/1.1 (light) or httpx",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    chat = args.model == "smollm2-135m-instruct"
    if unknown := set(args.attention) - {"kernel", "sdpa"}:
        parser.error(f"--attention: unknown {', '.join(sorted(unknown))} (kernel, sdpa)")
    if not chat and (args.only_server or args.engine_passes or args.decode_steps):
        parser.error(f"the server parts need a chat model; {args.model} has no chat template")
    folder = resolve_base(args.model, "decoder", get_settings().cache_dir).path
    languages = ["en", "zh"] if covers_language(args.model, "zh") else ["en"]
    result: dict[str, Any] = {"model": args.model, "threads": cpu_threads()}
    if args.decode_steps:
        result["decode_steps"] = decode_steps(folder, args.rounds)
    elif args.engine_passes:
        print("engine passes, in process:", file=sys.stderr)
        result["engine_passes"] = engine_passes(folder, args.tokens, args.rounds, 20, args.compare)
    elif not args.only_server:
        print("batch 1, in process:", file=sys.stderr)
        result["batch_one"] = batch_one(folder, args.tokens, args.rounds, languages)
    if chat and not (args.skip_server or args.engine_passes or args.decode_steps):
        print("server, streaming:", file=sys.stderr)
        result["server"] = server_streams(
            folder, args.tokens, args.rounds, args.server_seconds, args.client, args.attention
        )
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
