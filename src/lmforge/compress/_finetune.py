"""The one short training loop of the compression stage, and what prune and distill share.

Distillation and the recovery fine-tune after pruning are the same thing (a pruned model is a
student of the unpruned one), so both run :func:`fit_classifier`. It is deliberately smaller
than :mod:`lmforge.train.loop`: fp32, one process, no checkpoints or evaluation — compression
runs for minutes on a model that has already been trained and validated.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, get_linear_schedule_with_warmup

from lmforge.errors import LmforgeError
from lmforge.models.classifier import collate
from lmforge.progress import ProgressReporter, SilentProgress
from lmforge.train.loop import epoch_batches

WARMUP_RATIO = 0.1
WEIGHT_DECAY = 0.01
# The projections pruning resizes or masks, in every encoder layer.
BERT_LINEARS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)


class CompressionError(LmforgeError):
    """Pruning or distillation was asked for something it cannot do."""


@dataclass(frozen=True)
class DistillReport:
    steps: int
    samples: int
    final_loss: float  # mean training loss over the last epoch's steps
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def encoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The transformer layers of a BERT-family encoder (BERT, RoBERTa, e5, MiniLM, ...)."""
    encoder = getattr(model.base_model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, nn.ModuleList) or not all(
        isinstance(_submodule(layer, part), nn.Linear) for layer in layers for part in BERT_LINEARS
    ):
        raise CompressionError(
            f"{type(model).__name__} is not a BERT-family encoder",
            "prune or distill BERT-like models (BERT, RoBERTa, MiniLM, e5)",
        )
    return layers


def _submodule(module: nn.Module, path: str) -> nn.Module | None:
    try:
        return module.get_submodule(path)
    except AttributeError:
        return None


def check_rows(rows: Sequence[Sequence[int]], labels: Sequence[int]) -> None:
    if not rows or len(rows) != len(labels):
        raise CompressionError(
            f"compression needs labelled rows ({len(rows)} rows, {len(labels)} labels)",
            "pass the tokenised training rows and one label id for each",
        )


def fit_classifier(
    model: PreTrainedModel,
    rows: Sequence[Sequence[int]],
    labels: Sequence[int],
    *,
    pad_id: int,
    soft_targets: np.ndarray | None,
    temperature: float,
    alpha: float,
    epochs: float,
    learning_rate: float,
    batch_size: int,
    seed: int,
    progress: ProgressReporter | None,
    description: str,
) -> DistillReport:
    """Train ``model`` in place on the labels and, where given, on soft targets (teacher
    logits, one row per input row): ``alpha·T²·KL(teacher_T ‖ model_T) + (1−alpha)·CE``.

    Batches are shuffled and grouped by length (:func:`lmforge.train.loop.epoch_batches`);
    AdamW is the fused kernel, with linear warm-up and decay. The model ends in eval mode.
    """
    progress = progress or SilentProgress()
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    lengths = np.array([len(r) for r in rows])
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    soft = None if soft_targets is None else torch.as_tensor(soft_targets, dtype=torch.float32)
    steps_per_epoch = len(epoch_batches(lengths, batch_size, seed, 0))
    total_steps = max(1, math.ceil(epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=learning_rate,
        weight_decay=WEIGHT_DECAY,
        fused=True,  # one kernel over all tensors: several times faster on a CPU than foreach
    )
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(WARMUP_RATIO * total_steps), total_steps
    )
    losses: list[float] = []
    samples, seconds, step, epoch = 0, 0.0, 0, 0
    progress.start(description, total_steps)
    model.train()
    try:
        while step < total_steps:
            for idx in epoch_batches(lengths, batch_size, seed, epoch):
                tick = time.perf_counter()
                batch = collate([rows[i] for i in idx], pad_id)
                logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float()
                loss = F.cross_entropy(logits, y[idx].to(device))
                if soft is not None and alpha > 0:
                    t = temperature
                    kl = F.kl_div(
                        F.log_softmax(logits / t, dim=-1),
                        F.log_softmax(soft[idx].to(device) / t, dim=-1),
                        reduction="batchmean",
                        log_target=True,
                    )
                    loss = alpha * t * t * kl + (1.0 - alpha) * loss
                loss.backward()  # type: ignore[no-untyped-call]
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                seconds += time.perf_counter() - tick
                samples += len(idx)
                step += 1
                losses.append(float(loss.detach()))
                progress.advance(1, loss=losses[-1])
                if step >= total_steps:
                    break
            epoch += 1
    finally:
        progress.stop()
        model.eval()
    last = losses[-min(len(losses), steps_per_epoch) :]
    return DistillReport(
        steps=step, samples=samples, final_loss=float(np.mean(last)), seconds=seconds
    )
