"""Instruction fine-tuning of a decoder: prompt/response pairs through the chat template, the
loss on the response tokens only (the prompt is context, not something to learn to write).

Full fine-tuning or LoRA (merged into the weights at the end, so the result is a plain causal-LM
folder that the generation runtime and ``/v1/chat/completions`` load like any other).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, get_linear_schedule_with_warmup

from lmforge.errors import DataError, RecipeError
from lmforge.models.loading import MODEL_BUILD_LOCK, from_pretrained
from lmforge.progress import ProgressReporter, SilentProgress

IGNORE = -100  # label of a token the loss skips
DECODER_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE on the prompt, the token itself on the response


@dataclass
class SftOutcome:
    model: PreTrainedModel  # LoRA merged
    tokenizer: Any
    losses: list[float]  # one per optimiser step
    steps: int
    seconds: float
    trainable_parameters: int
    total_parameters: int


def chat_examples(
    tokenizer: Any, pairs: Sequence[tuple[str, str]], max_length: int
) -> list[Example]:
    """Each pair as the chat the model will see at inference, labelled on the answer only.

    The prompt part is the template up to and including the assistant header (exactly what the
    runtime sends), so the model learns to write the answer and its end-of-turn token.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(
            "the base model's tokenizer has no chat template",
            "fine-tune an instruct model (e.g. smollm2-135m-instruct) or a folder with one",
        )
    examples = []
    for prompt, response in pairs:
        user = [{"role": "user", "content": prompt}]
        head = tokenizer.apply_chat_template(user, add_generation_prompt=True, return_dict=False)
        whole = tokenizer.apply_chat_template(
            [*user, {"role": "assistant", "content": response}], return_dict=False
        )
        head, whole = list(head), list(whole)
        if whole[: len(head)] != head:  # a template that rewrites earlier turns: rare
            raise DataError(
                "the chat template does not keep the prompt as a prefix of the whole chat",
                "use a model with a standard (ChatML-like) template",
            )
        if len(head) >= max_length:
            continue  # no room for any of the answer: nothing to learn from
        ids = whole[:max_length]
        examples.append(Example(ids, [IGNORE] * len(head) + ids[len(head) :]))
    if len(examples) < 2:
        raise DataError(
            f"only {len(examples)} prompt/response pairs fit in {max_length} tokens",
            "raise training.max_length or give shorter prompts",
        )
    return examples


def _batch(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _response_loss_sum(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the response tokens, and their count. The output layer (49k
    rows for SmolLM2) runs only where a response token is predicted, not over prompts and
    padding: less time, and a fraction of the memory of full logits."""
    hidden = model.get_decoder()(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state
    target = batch["labels"][:, 1:]
    keep = target != IGNORE
    logits = model.get_output_embeddings()(hidden[:, :-1][keep]).float()
    loss = torch.nn.functional.cross_entropy(logits, target[keep], reduction="sum")
    return loss, int(keep.sum())


@torch.no_grad()
def response_loss(
    model: Any, examples: Sequence[Example], pad_id: int, batch_size: int = 8
) -> float:
    """Mean cross-entropy per response token (exp of it is the perplexity)."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        loss, n = _response_loss_sum(model, _batch(examples[start : start + batch_size], pad_id))
        total += float(loss)
        count += n
    return total / max(count, 1)


def _adapt(model: Any, method: str, lora: Any) -> Any:
    if method == "full":
        return model
    from peft import LoraConfig, TaskType, get_peft_model

    names = {name.split(".")[-1] for name, _ in model.named_modules()}
    # the recipe's default targets are an encoder's layer names; a decoder's are these
    targets = (
        list(lora.target_modules)
        if "target_modules" in lora.model_fields_set
        else [t for t in DECODER_LORA_TARGETS if t in names]
    )
    missing = [t for t in targets if t not in names]
    if missing or not targets:
        raise RecipeError(
            f"adaptation.lora.target_modules: {(missing or ['(none)'])[0]!r} is not a layer of "
            "this model",
            f"use layer names such as {', '.join(DECODER_LORA_TARGETS)}",
        )
    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
    )
    with MODEL_BUILD_LOCK:  # LoRA's init must not meet another thread's load
        return get_peft_model(model, config)


def fine_tune_decoder(
    folder: Path,
    train: Sequence[Example],
    *,
    method: str = "lora",
    lora: Any = None,
    epochs: float = 1.0,
    batch_size: int = 8,
    learning_rate: float = 2e-4,
    warmup_ratio: float = 0.06,
    seed: int = 0,
    progress: ProgressReporter | None = None,
) -> SftOutcome:
    """Supervised fine-tuning of the decoder in `folder` on `train`; LoRA is merged at the end."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmforge.models.classifier import quiet_transformers

    progress = progress or SilentProgress()
    torch.manual_seed(seed)
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = from_pretrained(AutoModelForCausalLM, folder, use_safetensors=True)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model = _adapt(model, method, lora)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=0.0)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total = max(1, math.ceil(steps_per_epoch * epochs))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(total * warmup_ratio), total)
    rng = np.random.default_rng(seed)
    losses: list[float] = []
    start = time.perf_counter()
    progress.start("instruction fine-tuning", total)
    model.train()
    order: list[int] = []
    while len(losses) < total:
        if not order:
            order = rng.permutation(len(train)).tolist()
        idx, order = order[:batch_size], order[batch_size:]
        summed, n = _response_loss_sum(model, _batch([train[i] for i in idx], pad_id))
        loss = summed / max(n, 1)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        progress.advance(1, loss=losses[-1])
    progress.stop()
    if method == "lora":
        model = model.merge_and_unload()
    model.eval()
    return SftOutcome(
        model,
        tokenizer,
        losses,
        len(losses),
        time.perf_counter() - start,
        sum(p.numel() for p in trainable),
        sum(p.numel() for p in model.parameters()),
    )
