"""Instruction tuning end to end on a tiny Llama: chat-formatted pairs with the loss on the
responses only → held-out loss beside the base model → a registered decoder the chat API serves."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import torch
from transformers import AutoTokenizer

from conftest import CHAT_PAIRS, LiveServer, chat_recipe, lmforge, serve_config
from lmforge.errors import DataError, ModelNotFoundError, RecipeError
from lmforge.recipe import load_recipe
from lmforge.registry import Registry
from lmforge.registry.refs import resolve_model
from lmforge.settings import Settings
from lmforge.tasks import run_recipe
from lmforge.train.sft import IGNORE, chat_examples


def test_labels_cover_the_response_only(tiny_decoder_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_decoder_dir)
    (example,) = chat_examples(tokenizer, [CHAT_PAIRS[0], CHAT_PAIRS[1]], 64)[:1]
    head = tokenizer.apply_chat_template(
        [{"role": "user", "content": CHAT_PAIRS[0][0]}],
        add_generation_prompt=True,
        return_dict=False,
    )
    assert example.labels[: len(head)] == [IGNORE] * len(head)
    learned = [t for t in example.labels if t != IGNORE]
    assert tokenizer.decode(learned).startswith(CHAT_PAIRS[0][1])
    assert learned[-2:][0] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    with pytest.raises(DataError, match="fit in 8 tokens"):
        chat_examples(tokenizer, CHAT_PAIRS[:4], 8)


def test_generation_run_learns_registers_and_serves(
    home: Settings, tmp_path: Path, tiny_decoder_dir: Path, one_thread: None
) -> None:
    # in a fresh process, as a user runs it (models loaded earlier in this one stay out of it)
    recipe = chat_recipe(tmp_path, tiny_decoder_dir)
    done = lmforge("run", str(recipe), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (
        report["test_metrics"]["response_loss"]
        < report["baseline_metrics"]["base"]["response_loss"]
    )
    training = report["training"]
    assert training["last_loss"] < training["first_loss"]
    assert training["trainable_parameters"] < training["total_parameters"]
    assert len(report["samples"]) == 3
    assert all({"base", "tuned"} <= s.keys() for s in report["samples"])
    assert (Path(report["run_dir"]) / "samples.md").read_text().count("**Fine-tuned:**") == 3
    version = Registry(home).get("tiny-chat")
    assert version.task == "generation"
    assert resolve_model("tiny-chat", "decoder", home).locate(home.cache_dir) == version.path

    config = serve_config(
        models=None, auth={"enabled": False}, generation={"models": ["tiny-chat"]}
    )
    with LiveServer(config, home) as live:
        assert "tiny-chat" not in live.state.pool.aliases  # not loaded as a classifier
        r = httpx.post(
            live.url + "/v1/chat/completions",
            json={
                "model": "tiny-chat",
                "messages": [{"role": "user", "content": "how are you zoe?"}],
                "temperature": 0,
                "max_tokens": 16,
            },
            timeout=60,
        )
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["model"] == "tiny-chat" and answer["usage"]["completion_tokens"] <= 16
    assert answer["choices"][0]["finish_reason"] in ("stop", "length")


def test_bad_generation_recipes(home: Settings, tmp_path: Path, tiny_base: Path) -> None:
    encoder = load_recipe(chat_recipe(tmp_path, Path("minilm-l6")))
    with pytest.raises(RecipeError, match="needs a decoder"):
        run_recipe(encoder, settings=home)
    no_template = load_recipe(chat_recipe(tmp_path, tiny_base))
    with pytest.raises((DataError, ModelNotFoundError, RecipeError)):
        run_recipe(no_template, settings=home)
    with pytest.raises(ModelNotFoundError, match="unknown decoder"):
        resolve_model("no-such-model", "decoder", home)
    assert Registry(home).list() == []


@pytest.mark.parametrize("method", ["full", "lora"])
def test_response_loss_equals_the_models_own_loss(tiny_decoder_dir: Path, method: str) -> None:
    """Logits only where a response token is predicted give the loss transformers computes from
    full logits with the same labels (also through a LoRA wrapper)."""
    from transformers import AutoModelForCausalLM

    from lmforge.recipe.schema import LoraConfig
    from lmforge.train.lora import adapt
    from lmforge.train.sft import collate_examples, response_loss

    tokenizer = AutoTokenizer.from_pretrained(tiny_decoder_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_decoder_dir, use_safetensors=True)
    model = adapt(model, method, LoraConfig(), head="causal_lm")
    examples = chat_examples(tokenizer, CHAT_PAIRS[:6], 64)
    pad = tokenizer.pad_token_id or 0
    with torch.no_grad():
        expected = float(model(**collate_examples(examples, pad)).loss)
    assert response_loss(model, examples, pad, batch_size=6) == pytest.approx(expected, rel=1e-5)
