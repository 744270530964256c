"""Sequence classifiers: building one on a base encoder, tokenising, and batched inference.

Batches are formed by length (sort, then chunk) and padded per batch, so short texts never pay
for long ones; this matters more on a CPU than any kernel choice.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lmforge.models.loading import from_pretrained

PAD_MULTIPLE = 8  # padded lengths in multiples of 8 keep the matmul kernels on their fast paths


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(str(path))


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id batches are padded with (masked out, so any id works where none is defined)."""
    return int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else 0


def build_classifier(
    base_path: Path, labels: Sequence[str], dropout: float | None = None
) -> PreTrainedModel:
    """The base encoder with a freshly initialised classification head for ``labels``."""
    config = AutoConfig.from_pretrained(
        str(base_path),
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    if dropout is not None:
        config.classifier_dropout = dropout
    # The base folders carry no head; transformers reports the fresh head loudly — expected here.
    with quiet_transformers():
        model: PreTrainedModel = from_pretrained(
            AutoModelForSequenceClassification, str(base_path), config=config
        )
    return model


def load_classifier(path: Path) -> PreTrainedModel:
    with quiet_transformers():
        model: PreTrainedModel = from_pretrained(AutoModelForSequenceClassification, str(path))
    return model


def tokenize(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int, prefix: str = ""
) -> list[list[int]]:
    if prefix:
        texts = [prefix + t for t in texts]
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    return [list(ids) for ids in encoded["input_ids"]]


def collate(rows: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    longest = max(len(r) for r in rows)
    width = -(-longest // PAD_MULTIPLE) * PAD_MULTIPLE
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    order = np.argsort(np.asarray(lengths), kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size].tolist()


def autocast(precision: str) -> contextlib.AbstractContextManager[object]:
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.inference_mode()
def predict_logits(
    model: PreTrainedModel,
    token_ids: Sequence[Sequence[int]],
    *,
    pad_id: int,
    batch_size: int = 64,
    precision: str = "fp32",
) -> np.ndarray:
    """Logits for every row, in input order, computed in length-sorted batches."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = np.zeros((len(token_ids), len(model.config.id2label or {})), dtype=np.float32)
    with autocast(precision):
        for idx in length_sorted_batches([len(t) for t in token_ids], batch_size):
            batch = collate([token_ids[i] for i in idx], pad_id)
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            out[idx] = logits.float().cpu().numpy()
    model.train(was_training)
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)  # type: ignore[no-any-return]


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_level = hf_logging.get_verbosity()
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()  # the per-tensor "Loading weights" bar is noise here
        try:
            yield
        finally:
            hf_logging.set_verbosity(hf_level)
            if bars:
                hf_logging.enable_progress_bar()
    finally:
        logger.setLevel(level)
