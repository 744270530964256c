"""Self-supervised training on the one loop: masked-LM for encoders, next-token for decoders.

Masked-LM (:func:`fine_tune_mlm`): the batches are masked as they are drawn
(:mod:`lmforge.train.masking`), the loss is cross-entropy on the chosen tokens. A base without a
masked-LM head (all-MiniLM-L6-v2 ships only the encoder) first gets one trained on the frozen
encoder for a short fixed budget (:func:`train_mlm_head`): that model is what pretraining is
compared with — a random head would make any pretraining look like a gain — and where it starts.
Held-out scores: masked-token accuracy and loss on fixed masks (every chosen token replaced by
the mask token), and pseudo-perplexity (each token masked in turn; Salazar et al., 2020).

Next-token (:func:`pack_texts`): the texts, each ended by the end-of-sequence token, are joined
and cut into blocks of ``max_length`` tokens (no padding wasted), then trained as instruction
tuning's examples with every token labelled (:func:`lmforge.train.sft.fine_tune_decoder`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForMaskedLM

from lmforge.models.classifier import quiet_transformers
from lmforge.models.loading import from_pretrained
from lmforge.progress import ProgressReporter
from lmforge.train.batching import shuffled_batches
from lmforge.train.checkpoint import fingerprint_of
from lmforge.train.loop import Schedule, Validation
from lmforge.train.loop import train as train_loop
from lmforge.train.lora import adapt, trainable_counts
from lmforge.train.masking import IGNORE, MaskingRule, MlmRow, mask_batch
from lmforge.train.sft import Example

HEAD_LEARNING_RATE = 1e-3  # the "before" head's fixed budget: this rate, head_steps steps
EVAL_SEED = 0  # the held-out masks: the same for every model compared


@dataclass
class MlmOutcome:
    model: Any  # LoRA merged
    losses: list[float]
    steps: int
    seconds: float
    trainable_parameters: int
    total_parameters: int
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False


def load_mlm(folder: Path) -> tuple[Any, bool]:
    """The masked-LM model of a folder, and whether its head was newly made (missing from the
    folder: a plain encoder such as MiniLM)."""
    with quiet_transformers():
        model, info = from_pretrained(
            AutoModelForMaskedLM, folder, use_safetensors=True, output_loading_info=True
        )
    prefix = model.base_model_prefix
    fresh = any(not key.startswith(f"{prefix}.") for key in info["missing_keys"])
    return model, fresh


def _logits_at(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: torch.Tensor
) -> torch.Tensor:
    """The masked-LM logits of the positions in ``keep`` only: the head (for MiniLM a
    30k-row output layer) runs on the chosen ~15 % of tokens, not on every position."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
    prefix = inner.base_model_prefix
    encoder = getattr(inner, prefix)
    (head,) = [m for name, m in inner.named_children() if name != prefix]  # cls / lm_head
    hidden = encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    logits: torch.Tensor = head(hidden[keep])
    return logits.float()


def masked_lm_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the chosen tokens of one masked batch."""
    keep = batch["labels"] != IGNORE
    logits = _logits_at(model, batch["input_ids"], batch["attention_mask"], keep)
    return torch.nn.functional.cross_entropy(logits, batch["labels"][keep])


@torch.no_grad()
def masked_scores(
    model: Any, rows: Sequence[MlmRow], rule: MaskingRule, batch_size: int = 32
) -> dict[str, float]:
    """Accuracy and mean loss of predicting held-out tokens hidden behind the mask token; the
    masks are drawn from a fixed seed, so every model is scored on the same ones."""
    model.eval()
    generator = torch.Generator().manual_seed(EVAL_SEED)
    correct, total, loss = 0, 0, 0.0
    for start in range(0, len(rows), batch_size):
        batch = mask_batch(rows[start : start + batch_size], rule, generator, replace_all=True)
        keep = batch["labels"] != IGNORE
        chosen = _logits_at(model, batch["input_ids"], batch["attention_mask"], keep)
        target = batch["labels"][keep]
        loss += float(torch.nn.functional.cross_entropy(chosen, target, reduction="sum"))
        correct += int((chosen.argmax(-1) == target).sum())
        total += int(keep.sum())
    mean = loss / max(total, 1)
    return {"masked_accuracy": correct / max(total, 1), "loss": mean, "masked_tokens": total}


@torch.no_grad()
def pseudo_perplexity(
    model: Any, rows: Sequence[MlmRow], rule: MaskingRule, batch_size: int = 64
) -> float:
    """exp of the mean loss of each non-special token predicted with only it masked."""
    model.eval()
    copies: list[tuple[list[int], int]] = []  # (ids with one token masked, its position)
    for row in rows:
        for j, unit in enumerate(row.units):
            if unit >= 0:
                ids = list(row.input_ids)
                ids[j] = rule.mask_id
                copies.append((ids, j))
    truth = [row.input_ids[j] for row in rows for j, u in enumerate(row.units) if u >= 0]
    total = 0.0
    for start in range(0, len(copies), batch_size):
        chunk = copies[start : start + batch_size]
        width = max(len(row_ids) for row_ids, _ in chunk)
        batch = torch.full((len(chunk), width), rule.pad_id, dtype=torch.long)
        attention = torch.zeros_like(batch)
        for i, (row_ids, _) in enumerate(chunk):
            batch[i, : len(row_ids)] = torch.tensor(row_ids)
            attention[i, : len(row_ids)] = 1
        keep = torch.zeros_like(batch, dtype=torch.bool)
        keep[torch.arange(len(chunk)), torch.tensor([j for _, j in chunk])] = True
        picked = _logits_at(model, batch, attention, keep)  # one row per copy, in order
        target = torch.tensor(truth[start : start + batch_size])
        total += float(torch.nn.functional.cross_entropy(picked, target, reduction="sum"))
    return math.exp(min(total / max(len(copies), 1), 50.0))


def train_mlm_head(
    model: Any,
    rows: Sequence[MlmRow],
    rule: MaskingRule,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    progress: ProgressReporter | None = None,
) -> Any:
    """Train only the masked-LM head (the encoder and the tied token embeddings frozen) for
    ``steps`` steps at a fixed rate: the "before" model of a base that had no head."""
    prefix = model.base_model_prefix
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(not name.startswith(f"{prefix}."))
    torch.manual_seed(seed)
    result = train_loop(
        model,
        lambda epoch: shuffled_batches(len(rows), batch_size, seed, epoch),
        lambda idx: mask_batch([rows[i] for i in idx], rule),
        masked_lm_loss,
        Schedule(epochs=1, max_steps=steps, learning_rate=HEAD_LEARNING_RATE),
        progress=progress,
        description="training a masked-LM head on the frozen encoder",
    )
    for name, parameter in result.model.named_parameters():
        parameter.requires_grad_(flags[name])
    return result.model


def fine_tune_mlm(
    model: Any,
    train: Sequence[MlmRow],
    rule: MaskingRule,
    schedule: Schedule,
    *,
    method: str = "full",
    lora: Any = None,
    batch_size: int = 32,
    seed: int = 0,
    validation: Sequence[MlmRow] | None = None,
    patience: int | None = None,
    run_dir: Path | None = None,
    resume: bool = False,
    fingerprint: dict[str, Any] | None = None,
    progress: ProgressReporter | None = None,
) -> MlmOutcome:
    """Masked-LM training of ``model`` (full, or LoRA merged at the end) on ``train``."""
    torch.manual_seed(seed)
    model = adapt(model, method, lora, head="masked_lm")
    trainable, _ = trainable_counts(model)
    checks = None
    if validation:
        checks = Validation(
            lambda m: {k: v for k, v in masked_scores(m, validation, rule).items()},
            watch="loss",
            patience=patience,
        )
    run = {**(fingerprint or {}), "train": _digest(train), "method": method, "seed": seed}
    result = train_loop(
        model,
        lambda epoch: shuffled_batches(len(train), batch_size, seed, epoch),
        lambda idx: mask_batch([train[i] for i in idx], rule),
        masked_lm_loss,
        schedule,
        validation=checks,
        run_dir=run_dir,
        resume=resume,
        fingerprint=fingerprint_of(run),
        progress=progress,
        description="masked-LM pretraining",
    )
    trained = result.model
    if method == "lora":
        trained = trained.merge_and_unload()
    trained.eval()
    return MlmOutcome(
        trained,
        result.losses,
        result.steps,
        result.seconds,
        trainable,
        sum(p.numel() for p in trained.parameters()),
        result.history,
        result.best,
        result.stopped_early,
    )


def pack_texts(tokenizer: Any, texts: Sequence[str], block: int) -> list[Example]:
    """The texts as one token stream (each followed by the end-of-sequence token) cut into
    blocks of ``block`` tokens, every token labelled; a last block shorter than 2 is dropped."""
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        stream += [*ids, eos] if eos is not None else ids
    blocks = [stream[i : i + block] for i in range(0, len(stream), block)]
    return [Example(b, list(b)) for b in blocks if len(b) >= 2]


def _digest(rows: Sequence[MlmRow]) -> str:
    text = "\n".join(f"{r.input_ids}{r.units}" for r in rows)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
