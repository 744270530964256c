"""Instruction fine-tuning of a decoder: prompt/response pairs through the chat template, the
loss on the response tokens only (the prompt is context, not something to learn to write).

Full fine-tuning or LoRA (merged into the weights at the end, so the result is a plain causal-LM
folder that the generation runtime and ``/v1/chat/completions`` load like any other). The loss
and collator run on the one training loop (:func:`lmforge.train.loop.train`); held-out examples,
when given, are scored by their response loss for early stopping and the best weights.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from lmforge.errors import DataError
from lmforge.models.classifier import quiet_transformers
from lmforge.models.loading import from_pretrained
from lmforge.progress import ProgressReporter
from lmforge.train.batching import shuffled_batches
from lmforge.train.checkpoint import fingerprint_of
from lmforge.train.loop import Schedule, Validation
from lmforge.train.loop import train as train_loop
from lmforge.train.lora import adapt, trainable_counts

IGNORE = -100  # label of a token the loss skips


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
    history: list[dict[str, float]] = field(default_factory=list)  # one record per evaluation
    best: dict[str, float] = field(default_factory=dict)  # empty without validation examples
    stopped_early: bool = False


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


def collate_examples(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """One right-padded batch: token ids, attention mask, and labels (IGNORE on padding)."""
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


def response_loss_sum(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
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


def mean_response_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The training loss of one batch: mean cross-entropy per response token."""
    summed, n = response_loss_sum(model, batch)
    return summed / max(n, 1)


@torch.no_grad()
def response_loss(
    model: Any, examples: Sequence[Example], pad_id: int, batch_size: int = 8
) -> float:
    """Mean cross-entropy per response token (exp of it is the perplexity)."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = collate_examples(examples[start : start + batch_size], pad_id)
        loss, n = response_loss_sum(model, batch)
        total += float(loss)
        count += n
    return total / max(count, 1)


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
    validation: Sequence[Example] | None = None,
    patience: int | None = None,
    eval_every_steps: int | None = None,
    run_dir: Path | None = None,
    resume: bool = False,
) -> SftOutcome:
    """Supervised fine-tuning of the decoder in `folder` on `train`; LoRA is merged at the end.

    With ``validation`` examples, every evaluation (once an epoch, or every
    ``eval_every_steps``) scores their response loss; the best weights are kept, and
    ``patience`` evaluations without improvement stop training. With ``run_dir``, checkpoints
    are written there and ``resume`` continues from the last one.
    """
    torch.manual_seed(seed)
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = from_pretrained(AutoModelForCausalLM, folder, use_safetensors=True)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model = adapt(model, method, lora, head="causal_lm")
    trainable, _ = trainable_counts(model)
    checks = None
    if validation:
        checks = Validation(
            lambda m: _scores(response_loss(m, validation, pad_id, batch_size)),
            watch="loss",
            patience=patience,
        )
    run = {
        "task": "instruction",
        "folder": str(folder),
        "train": _digest(train),
        "validation": _digest(validation or []),
        "method": method,
        "lora": lora.model_dump(mode="json") if method == "lora" and lora is not None else None,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "warmup_ratio": warmup_ratio,
        "seed": seed,
    }
    result = train_loop(
        model,
        lambda epoch: shuffled_batches(len(train), batch_size, seed, epoch),
        lambda idx: collate_examples([train[i] for i in idx], pad_id),
        mean_response_loss,
        Schedule(
            epochs=epochs,
            learning_rate=learning_rate,
            warmup_ratio=warmup_ratio,
            eval_every_steps=eval_every_steps,
        ),
        validation=checks,
        run_dir=run_dir,
        resume=resume,
        fingerprint=fingerprint_of(run),
        progress=progress,
        description="instruction fine-tuning",
    )
    model = result.model
    if method == "lora":
        model = model.merge_and_unload()
    model.eval()
    return SftOutcome(
        model,
        tokenizer,
        result.losses,
        result.steps,
        result.seconds,
        trainable,
        sum(p.numel() for p in model.parameters()),
        result.history,
        result.best,
        result.stopped_early,
    )


def _scores(loss: float) -> dict[str, float]:
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}  # exp overflows past ~700


def _digest(examples: Sequence[Example]) -> str:
    text = "\n".join(f"{e.input_ids}{e.labels}" for e in examples)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
