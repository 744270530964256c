"""One prompt through a decoder, as ``lmforge generate`` runs it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lmforge.errors import LmforgeError
from lmforge.runtime.completion import complete_prompt
from lmforge.runtime.generation import GenerationEngine, SamplingParams


def test_bad_choices_fail_before_anything_loads(tiny_decoder_dir: Path) -> None:
    params = SamplingParams(max_tokens=4)
    with pytest.raises(LmforgeError, match="unknown weight format 'int4'"):
        complete_prompt("hi", params, model=str(tiny_decoder_dir), weights="int4")
    with pytest.raises(LmforgeError, match="not a decoder"):
        complete_prompt("hi", params, model="minilm-l6")
    with pytest.raises(LmforgeError, match="temperature"):
        complete_prompt("hi", SamplingParams(temperature=-1), model=str(tiny_decoder_dir))


def test_chat_unless_raw_or_no_template_and_the_text_streams(
    tiny_decoder_dir: Path, tiny_gemma3_dir: Path, tmp_path: Path
) -> None:
    engine = GenerationEngine.from_folder(tiny_decoder_dir, "fp32", max_batch=1)
    try:
        chat = engine.encode_chat(
            [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
        )
        plain = engine.encode("hello")
    finally:
        engine.close()
    params = SamplingParams(max_tokens=6, temperature=0)
    streamed: list[str] = []
    done = complete_prompt(
        "hello",
        params,
        model=str(tiny_decoder_dir),
        system="be brief",
        weights="fp32",
        on_text=lambda delta, _: streamed.append(delta),
    )
    doc = done.to_json()
    assert doc["model"] == str(tiny_decoder_dir) and doc["prompt_tokens"] == len(chat)
    assert "".join(streamed) == doc["text"] and doc["completion_tokens"] <= 6
    assert done.finish_reason == doc["finish_reason"] in ("stop", "length")
    raw = complete_prompt("hello", params, model=str(tiny_decoder_dir), raw=True, weights="fp32")
    assert raw.to_json()["prompt_tokens"] == len(plain)
    base = tmp_path / "base"  # a base model without a chat template continues the text as is
    shutil.copytree(tiny_gemma3_dir, base)
    (base / "chat_template.jinja").unlink()
    untemplated = complete_prompt("hello", params, model=str(base), weights="fp32")
    assert untemplated.completion.prompt_tokens == len(plain)
