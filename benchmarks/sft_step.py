"""One instruction-tuning step on SmolLM2-135M + LoRA: the loss from full logits (transformers'
own `labels=` path, every position through the 49k-row output layer) beside ours (the output
layer only where a response token is predicted), interleaved in one run.

Batches are the faq-chat recipe's: 8 Debian FAQ question/answer pairs through the chat
template, at most 256 tokens, LoRA r=16 on the q/k/v/o and gate/up/down projections.

    .venv/bin/python benchmarks/sft_step.py --json /tmp/sft_step.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmforge.data.sources import load_builtin
from lmforge.recipe.schema import LoraConfig
from lmforge.registry.refs import resolve_base
from lmforge.settings import get_settings
from lmforge.train.lora import adapt
from lmforge.train.sft import chat_examples, collate_examples, mean_response_loss


def full_logits_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    loss: torch.Tensor = model(**batch).loss
    return loss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps per variant per round")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    folder = resolve_base("smollm2-135m-instruct", "decoder", get_settings().cache_dir).path
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
    model = adapt(model, "lora", LoraConfig(), head="causal_lm")
    model.train()
    faq = load_builtin("debian_faq")
    english = faq[faq["lang"] == "en"]
    pairs = list(zip(english["question"], english["answer"], strict=True))
    examples = chat_examples(tokenizer, pairs, 256)
    pad = tokenizer.pad_token_id or 0
    batches = [collate_examples(examples[i : i + 8], pad) for i in range(0, 8 * args.steps, 8)]
    positions = sum(int(b["attention_mask"].sum()) for b in batches)
    predicted = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
    variants = {
        "full logits (transformers labels=)": full_logits_loss,
        "response only": mean_response_loss,  # the training loss of lmforge.train.sft
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    losses: dict[str, float] = {}
    trainable = [p for p in model.parameters() if p.requires_grad]
    for _ in range(args.rounds):
        for name, loss_of in variants.items():
            start = time.perf_counter()
            for batch in batches:
                loss = loss_of(model, batch)
                loss.backward()  # type: ignore[no-untyped-call]
                for p in trainable:
                    p.grad = None
            times[name].append((time.perf_counter() - start) / len(batches))
            losses[name] = float(loss.detach())
    full, ours = (statistics.median(t) for t in times.values())
    print(f"{len(batches)} batches of 8: {positions} token positions, {predicted} response tokens")
    for name, t in times.items():
        median = statistics.median(t)
        print(f"{name}: {median:.3f} s/step (median of {args.rounds}), loss {losses[name]:.4f}")
    print(f"speed-up: {full / ours:.2f}x")
    if args.json:
        result = {
            "seconds_per_step": {k: statistics.median(v) for k, v in times.items()},
            "rounds": times,
            "speedup": full / ours,
            "positions": positions,
            "response_tokens": predicted,
            "losses": losses,
        }
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
