"""Instruction tuning end to end on a tiny Llama: chat-formatted pairs with the loss on the
responses only → held-out loss beside the base model → a registered decoder the chat API serves."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import torch
import yaml
from transformers import AutoTokenizer

from conftest import LiveServer, lmforge, serve_config
from lmforge.errors import DataError, ModelNotFoundError, RecipeError
from lmforge.recipe import load_recipe
from lmforge.registry import Registry
from lmforge.registry.refs import resolve_model
from lmforge.settings import Settings
from lmforge.tasks import run_recipe
from lmforge.train.sft import IGNORE, chat_examples

PAIRS = [
    (f"how are you {name}?", f"i loved every minute of it, {name}.")
    for name in (
        "anna",
        "ben",
        "carl",
        "dora",
        "emil",
        "fay",
        "gus",
        "hana",
        "ivo",
        "jan",
        "kai",
        "lea",
        "max",
        "nia",
        "otto",
        "pia",
        "quin",
        "rosa",
        "sam",
        "tea",
        "uwe",
        "vera",
        "will",
        "xena",
    )
]


def recipe_file(folder: Path, base: Path, **overrides: object) -> Path:
    csv = folder / "chat.csv"
    csv.write_text("prompt,response\n" + "".join(f'"{p}","{r}"\n' for p, r in PAIRS))
    recipe = {
        "name": "tiny-chat",
        "task": "generation",
        "data": {
            "source": {"path": str(csv), "text_column": "prompt", "pair_column": "response"},
            "split": {"validation": 0.125, "test": 0.25},
        },
        "model": {"base": str(base)},
        "adaptation": {"method": "lora", "lora": {"r": 8, "alpha": 16}},
        "training": {"epochs": 8, "batch_size": 4, "learning_rate": 3e-3, "max_length": 64},
        **overrides,
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_labels_cover_the_response_only(tiny_decoder_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_decoder_dir)
    (example,) = chat_examples(tokenizer, [PAIRS[0], PAIRS[1]], 64)[:1]
    head = tokenizer.apply_chat_template(
        [{"role": "user", "content": PAIRS[0][0]}], add_generation_prompt=True, return_dict=False
    )
    assert example.labels[: len(head)] == [IGNORE] * len(head)
    learned = [t for t in example.labels if t != IGNORE]
    assert tokenizer.decode(learned).startswith(PAIRS[0][1])
    assert learned[-2:][0] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    with pytest.raises(DataError, match="fit in 8 tokens"):
        chat_examples(tokenizer, PAIRS[:4], 8)


def test_generation_run_learns_registers_and_serves(
    home: Settings, tmp_path: Path, tiny_decoder_dir: Path, one_thread: None
) -> None:
    # in a fresh process, as a user runs it (models loaded earlier in this one stay out of it)
    recipe = recipe_file(tmp_path, tiny_decoder_dir)
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
    encoder = load_recipe(recipe_file(tmp_path, Path("minilm-l6")))
    with pytest.raises(RecipeError, match="needs a decoder"):
        run_recipe(encoder, settings=home)
    no_template = load_recipe(recipe_file(tmp_path, tiny_base))
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
    examples = chat_examples(tokenizer, PAIRS[:6], 64)
    pad = tokenizer.pad_token_id or 0
    with torch.no_grad():
        expected = float(model(**collate_examples(examples, pad)).loss)
    assert response_loss(model, examples, pad, batch_size=6) == pytest.approx(expected, rel=1e-5)
