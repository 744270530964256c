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

from lmforge.models.gguf_convert import ensure_smollm2_folder
from lmforge.runtime.generation import GenerationEngine, SamplingParams

pytestmark = pytest.mark.integration
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_smollm2_folder(tmp_path_factory.mktemp("smollm2-cache"))


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
    prompt = fp32.encode_chat(QUESTION)
    ours = fp32.generate(prompt, SamplingParams(max_tokens=20, temperature=0, ignore_eos=True))
    model = AutoModelForCausalLM.from_pretrained(smollm2).eval()
    out = model.generate(
        torch.tensor([prompt]), max_new_tokens=20, min_new_tokens=20, do_sample=False
    )
    assert ours.tokens == out[0, len(prompt) :].tolist()


@pytest.mark.parametrize("fmt", ["fp32", "int8"])
def test_every_weight_format_answers_the_question(smollm2: Path, fmt: str) -> None:
    engine = GenerationEngine.from_folder(smollm2, fmt)  # type: ignore[arg-type]
    try:
        done = engine.generate(
            engine.encode_chat(QUESTION), SamplingParams(max_tokens=24, temperature=0)
        )
    finally:
        engine.close()
    assert "Paris" in done.text
    assert done.finish_reason == "stop"  # the model ended its answer itself


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
