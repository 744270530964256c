"""The one short training loop of the compression stage, and what prune and distill share.

Distillation and the recovery fine-tune after pruning are the same thing (a pruned model is a
student of the unpruned one), so both run :func:`fit_classifier`: the distillation loss and a
collator of rows, labels and teacher logits over the one training loop
(:func:`lmforge.train.loop.train`), fp32, without checkpoints or evaluation — compression runs for
minutes on a model that has already been trained and validated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from lmforge.errors import LmforgeError
from lmforge.models.classifier import collate
from lmforge.progress import ProgressReporter
from lmforge.train.batching import epoch_batches
from lmforge.train.loop import Schedule, train

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

    Runs on the one training loop (:func:`lmforge.train.loop.train`) over length-grouped
    batches (:func:`lmforge.train.batching.epoch_batches`), fp32, with linear warm-up and decay.
    The model ends in eval mode.
    """
    torch.manual_seed(seed)
    lengths = np.array([len(r) for r in rows])
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    soft = None if soft_targets is None else torch.as_tensor(soft_targets, dtype=torch.float32)

    def collate_rows(idx: list[int]) -> dict[str, torch.Tensor]:
        batch = {**collate([rows[i] for i in idx], pad_id), "labels": y[idx]}
        return batch if soft is None else {**batch, "soft": soft[idx]}

    def loss_fn(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return distillation_loss(model, batch, temperature, alpha)

    result = train(
        model,
        lambda epoch: epoch_batches(lengths, batch_size, seed, epoch),
        collate_rows,
        loss_fn,
        Schedule(
            epochs=epochs,
            learning_rate=learning_rate,
            weight_decay=WEIGHT_DECAY,
            warmup_ratio=WARMUP_RATIO,
        ),
        progress=progress,
        description=description,
    )
    steps_per_epoch = len(epoch_batches(lengths, batch_size, seed, 0))
    last = result.losses[-min(len(result.losses), steps_per_epoch) :]
    return DistillReport(
        steps=result.steps,
        samples=result.samples,
        final_loss=float(np.mean(last)),
        seconds=result.seconds,
    )


def distillation_loss(
    model: Any, batch: dict[str, torch.Tensor], temperature: float, alpha: float
) -> torch.Tensor:
    """Cross-entropy on ``labels``, mixed with the temperature-softened KL divergence to the
    teacher's logits in ``soft`` where the batch has them (Hinton et al. 2015)."""
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "soft")}
    logits = model(**inputs).logits.float()
    loss = F.cross_entropy(logits, batch["labels"])
    if "soft" in batch and alpha > 0:
        t = temperature
        kl = F.kl_div(
            F.log_softmax(logits / t, dim=-1),
            F.log_softmax(batch["soft"] / t, dim=-1),
            reduction="batchmean",
            log_target=True,
        )
        loss = alpha * t * t * kl + (1.0 - alpha) * loss
    return loss
