"""SmolLM2-135M-Instruct, the shipped decoder: converted from its GGUF once, decoded by our
runtime exactly like transformers, and answering a real question in every weight format."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import RecordedProgress
from lmforge.models.gguf_convert import ensure_smollm2_folder
from lmforge.runtime.generation import GenerationEngine, SamplingParams

pytestmark = pytest.mark.integration
QUESTIONS = [
    {"role": "user", "content": text}
    for text in (
        "What is the capital of France?",
        "What is 2+2?",
        "Who wrote Romeo and Juliet?",
        "What colour is the sky?",
        "Name three fruits.",
    )
]


CONVERSION = RecordedProgress()


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_smollm2_folder(tmp_path_factory.mktemp("smollm2-cache"), CONVERSION)


def test_the_conversion_says_what_it_does_and_shows_progress(smollm2: Path) -> None:
    """Issue 17: the first `lmforge generate` waited ~80 s in silence while this ran."""
    calls = CONVERSION.calls
    notes = CONVERSION.notes
    assert "once" in notes[0] and any("safetensors" in note for note in notes)
    starts = CONVERSION.totals
    assert len(starts) == 1 and isinstance(starts[0], int) and starts[0] > 200  # the tensors
    assert CONVERSION.advances == starts[0]
    assert calls[-1] == ("stop", None)


@pytest.fixture(scope="module")
def fp32(smollm2: Path) -> Iterator[GenerationEngine]:
    engine = GenerationEngine.from_folder(smollm2, "fp32")
    yield engine
    engine.close()


def test_the_converted_folder_reloads_as_plain_transformers(smollm2: Path) -> None:
    config = json.loads((smollm2 / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert (smollm2 / "chat_template.jinja").is_file() or "chat_template" in (
        smollm2 / "tokenizer_config.json"
    ).read_text()
    assert ensure_smollm2_folder(smollm2.parent) == smollm2  # cached: no second conversion


def test_greedy_fp32_equals_transformers_generate(smollm2: Path, fp32: GenerationEngine) -> None:
    model = AutoModelForCausalLM.from_pretrained(smollm2).eval()
    for question in ("What is the capital of France?", "Write a short poem about the sea."):
        prompt = fp32.encode_chat([{"role": "user", "content": question}])
        ours = fp32.generate(prompt, SamplingParams(max_tokens=32, temperature=0))
        out = model.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False)
        theirs = out[0, len(prompt) :].tolist()
        eos = model.config.eos_token_id
        assert ours.tokens == (theirs[: theirs.index(eos)] if eos in theirs else theirs)
    assert (
        "Paris"
        in fp32.generate(
            fp32.encode_chat(QUESTIONS[:1]), SamplingParams(max_tokens=16, temperature=0)
        ).text
    )


def test_greedy_logprobs_are_transformers_log_softmax(
    smollm2: Path, fp32: GenerationEngine
) -> None:
    """Issue 19: the logprobs served are the model's own log-softmax at each greedy token, and
    the tokens' bytes join up to the answer (SmolLM2's byte-level vocabulary)."""
    from lmforge.runtime.logprobs import TokenPieces

    model = AutoModelForCausalLM.from_pretrained(smollm2).eval()
    prompt = fp32.encode_chat(QUESTIONS[:1])
    done = fp32.generate(prompt, SamplingParams(max_tokens=16, temperature=0, logprobs=5))
    assert done.logprobs is not None and len(done.logprobs) == len(done.tokens)
    with torch.no_grad():
        logits = model(torch.tensor([prompt + done.tokens])).logits[0, len(prompt) - 1 : -1]
    expected = torch.log_softmax(logits.float(), dim=-1)
    for row, entry in zip(expected, done.logprobs, strict=True):
        assert entry.logprob == pytest.approx(float(row[entry.token]), abs=1e-3)
        top = torch.topk(row, 5).values.tolist()
        assert [lp for _, lp in entry.top] == pytest.approx(top, abs=1e-3)
    pieces = TokenPieces(fp32.tokenizer)
    assert b"".join(pieces.bytes(t) or b"" for t in done.tokens).decode() == done.text


def test_int8_follows_fp32_closely(smollm2: Path, fp32: GenerationEngine) -> None:
    """Teacher-forced on fp32's own answers, int8 predicts the same next token almost
    everywhere and finds those answers nearly as likely (free-running greedy texts of the two
    part ways at the first near-tie, as any quantised model's do)."""
    int8 = GenerationEngine.from_folder(smollm2, "int8")
    try:
        agree, total, nll = 0, 0, {"fp32": 0.0, "int8": 0.0}
        for question in QUESTIONS:
            prompt = fp32.encode_chat([question])
            answer = fp32.generate(prompt, SamplingParams(max_tokens=24, temperature=0)).tokens
            tokens, start = prompt + answer, len(prompt) - 1
            target = torch.tensor(answer)
            logits = {}
            for name, engine in (("fp32", fp32), ("int8", int8)):
                model = engine.model
                every = model.prefill(model.new_cache(1), 0, tokens, every_position=True)
                logits[name] = every[start : start + len(answer)]
                nll[name] += float(torch.nn.functional.cross_entropy(logits[name], target))
            agree += int((logits["fp32"].argmax(-1) == logits["int8"].argmax(-1)).sum())
            total += len(answer)
    finally:
        int8.close()
    assert agree / total >= 0.8
    assert nll["int8"] <= nll["fp32"] * 1.5 + 0.5


def test_cli_generate_streams_json(smollm2: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "cache" / "models").mkdir(parents=True)
    (home / "cache" / "models" / smollm2.name).symlink_to(smollm2)
    result = subprocess.run(
        [
            *(sys.executable, "-m", "lmforge.cli", "generate", "Name a colour.", "--json"),
            *("--temperature", "0", "--max-tokens", "12"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={"LMFORGE_HOME": str(home), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["completion_tokens"] >= 1 and report["text"]
    bad = subprocess.run(
        [sys.executable, "-m", "lmforge.cli", "generate", "hi", "--model", "minilm-l6"],
        capture_output=True,
        text=True,
        timeout=300,
        env={"LMFORGE_HOME": str(home), "PATH": "/usr/bin:/bin"},
    )
    assert bad.returncode == 2 and "not a decoder" in bad.stderr
