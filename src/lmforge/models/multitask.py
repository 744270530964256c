"""A multi-task classifier: one shared encoder, mean-pooled, and one linear head per sub-task.

One forward pass of the encoder gives every head's logits, so serving a text for all its
sub-tasks costs one encoder pass (the heads are a few thousand weights each). The encoder is
saved as an ordinary Hugging Face folder (so it can also be a later recipe's base), the heads
beside it in ``heads.safetensors``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, PreTrainedModel

from lmforge.models.classifier import (
    autocast,
    collate,
    length_sorted_batches,
    quiet_transformers,
)
from lmforge.models.loading import from_pretrained

HEADS_FILE = "heads.safetensors"


class MultitaskModel(torch.nn.Module):
    """The encoder and a head per sub-task; ``forward`` returns every head's logits."""

    def __init__(
        self, encoder: PreTrainedModel, heads: Mapping[str, int], dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.encoder: Any = encoder  # a transformers model, or its peft wrapper while training
        pooler = getattr(encoder, "pooler", None)
        if isinstance(pooler, torch.nn.Module):
            # BERT's pooler (CLS → dense → tanh) is computed but unused by mean pooling: frozen,
            # so that it is not a parameter without a gradient (which DDP refuses).
            pooler.requires_grad_(False)
        hidden = int(encoder.config.hidden_size)
        self.dropout = torch.nn.Dropout(dropout)
        self.heads = torch.nn.ModuleDict({n: torch.nn.Linear(hidden, k) for n, k in heads.items()})

    @property
    def task_names(self) -> list[str]:
        return list(self.heads.keys())

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The mean of the last hidden states over the text's tokens (how MiniLM and e5 were
        trained to embed a sentence)."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        hidden: torch.Tensor = out.last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        pooled = self.dropout(self.pooled(input_ids, attention_mask))
        return {name: head(pooled) for name, head in self.heads.items()}


def build_multitask(
    base_path: Path, heads: Mapping[str, Sequence[str]], dropout: float | None = None
) -> MultitaskModel:
    """The base encoder with a freshly initialised head per sub-task (name → labels)."""
    with quiet_transformers():  # a folder with an MLM or classifier head: those are dropped
        encoder = from_pretrained(AutoModel, str(base_path))
    rate = (
        dropout
        if dropout is not None
        else float(getattr(encoder.config, "hidden_dropout_prob", 0.1))
    )
    return MultitaskModel(encoder, {n: len(labels) for n, labels in heads.items()}, rate)


def save_multitask(model: MultitaskModel, folder: Path) -> None:
    """The encoder as a Hugging Face folder, the heads in ``heads.safetensors``."""
    with quiet_transformers():
        model.encoder.save_pretrained(str(folder))
    state = {k: v.detach().contiguous() for k, v in model.heads.state_dict().items()}
    save_file(state, str(folder / HEADS_FILE))


def load_multitask(folder: Path, heads: Mapping[str, int]) -> MultitaskModel:
    """A saved multi-task model, its heads checked against ``heads`` (name → outputs); raises
    ValueError when they disagree (the caller turns it into its own error)."""
    with quiet_transformers():
        encoder = from_pretrained(AutoModel, str(folder))
    model = MultitaskModel(encoder, heads)
    state = load_file(str(folder / HEADS_FILE))
    expected = model.heads.state_dict()
    if set(state) != set(expected):
        raise ValueError(
            f"{HEADS_FILE} holds heads {sorted({k.split('.')[0] for k in state})}, "
            f"lmforge.json names {sorted(heads)}"
        )
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise ValueError(
                f"{HEADS_FILE}: {key} has shape {tuple(value.shape)}, expected "
                f"{tuple(expected[key].shape)} (one output per label)"
            )
    model.heads.load_state_dict(state)
    model.eval()
    return model


@torch.inference_mode()
def multitask_logits(
    model: MultitaskModel,
    token_ids: Sequence[Sequence[int]],
    *,
    pad_id: int,
    batch_size: int = 64,
    precision: str = "fp32",
) -> dict[str, np.ndarray]:
    """Every head's logits for every row, in input order: one encoder pass per row."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = {n: np.zeros((len(token_ids), h.out_features), np.float32) for n, h in _heads(model)}
    with autocast(precision):
        for idx in length_sorted_batches([len(t) for t in token_ids], batch_size):
            batch = collate([token_ids[i] for i in idx], pad_id)
            logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))
            for name, values in logits.items():
                out[name][idx] = values.float().cpu().numpy()
    model.train(was_training)
    return out


def _heads(model: MultitaskModel) -> list[tuple[str, torch.nn.Linear]]:
    return [(n, h) for n, h in model.heads.items() if isinstance(h, torch.nn.Linear)]
