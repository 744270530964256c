"""Fine-tuning an encoder as a sentence-embedding model on (query, passage) pairs.

The loss is the symmetric InfoNCE of in-batch negatives (as in E5, SimCSE and
sentence-transformers' MultipleNegativesRankingLoss): within a batch, each query's own passage
is the positive and every other passage a negative, and the same the other way round. Embeddings
are the runtime's (mean-pooled over real tokens, L2-normalised), so what is trained is what
/v1/embed and the assistant compute. The word-embedding matrix is frozen by default: for a
multilingual encoder it holds most of the parameters (96 M of e5-small's 118 M) and a few hundred
pairs cannot improve it, only overfit it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, PreTrainedModel, get_linear_schedule_with_warmup

from lmforge.errors import DataError
from lmforge.models.classifier import collate, quiet_transformers
from lmforge.models.encoder import mean_pooled
from lmforge.models.loading import from_pretrained
from lmforge.models.tokenizer import TextTokenizer
from lmforge.progress import ProgressReporter, SilentProgress

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


@dataclass
class EmbeddingFit:
    model: PreTrainedModel
    losses: list[float]  # one per step
    steps: int
    seconds: float


def pooled(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's sentence embeddings for a collated batch (gradients flow)."""
    hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return mean_pooled(hidden.last_hidden_state, batch["attention_mask"])


def fit_embeddings(
    folder: Path,
    pairs: Sequence[tuple[str, str]],
    *,
    query_prefix: str = "",
    passage_prefix: str = "",
    epochs: int = 1,
    batch_size: int = 16,
    learning_rate: float = 2e-5,
    temperature: float = 0.05,
    max_length: int = 128,
    freeze_word_embeddings: bool = True,
    seed: int = 0,
    progress: ProgressReporter | None = None,
) -> EmbeddingFit:
    """Fine-tune the encoder in ``folder`` on (query, passage) pairs with in-batch negatives."""
    if len(pairs) < 2:
        raise DataError(
            f"contrastive fine-tuning needs at least 2 pairs, got {len(pairs)}",
            "give more (query, passage) pairs: the other pairs of a batch are the negatives",
        )
    progress = progress or SilentProgress()
    torch.manual_seed(seed)
    with quiet_transformers():
        model = from_pretrained(AutoModel, folder, use_safetensors=True)
    tokenizer = TextTokenizer(folder, max_length)
    queries = tokenizer([query_prefix + q for q, _ in pairs])
    passages = tokenizer([passage_prefix + p for _, p in pairs])
    if freeze_word_embeddings:
        model.get_input_embeddings().requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate)
    batches_per_epoch = max(1, len(pairs) // batch_size)
    total = batches_per_epoch * epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, max(1, total // 10), total)
    rng = np.random.default_rng(seed)
    losses: list[float] = []
    start = time.perf_counter()
    progress.start("contrastive fine-tuning", total)
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(pairs))
        for b in range(batches_per_epoch):
            idx = order[b * batch_size : (b + 1) * batch_size]
            if len(idx) < 2:
                continue
            q = pooled(model, collate([queries[i] for i in idx], tokenizer.pad_id))
            p = pooled(model, collate([passages[i] for i in idx], tokenizer.pad_id))
            logits = q @ p.T / temperature
            target = torch.arange(len(idx))
            loss = (
                torch.nn.functional.cross_entropy(logits, target)
                + torch.nn.functional.cross_entropy(logits.T, target)
            ) / 2
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            progress.advance(1, loss=losses[-1])
    progress.stop()
    model.eval()
    return EmbeddingFit(model, losses, len(losses), time.perf_counter() - start)


def save_encoder(model: PreTrainedModel, tokenizer_folder: Path, out: Path) -> Path:
    """A folder the runtime's Embedder (and /v1/embed) loads: safetensors weights + tokenizer."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (tokenizer_folder / name).is_file():
            shutil.copy2(tokenizer_folder / name, out / name)
    return out
