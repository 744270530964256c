"""Fine-tuning an encoder as a sentence-embedding model on (query, passage) pairs.

The loss is the symmetric InfoNCE of in-batch negatives (as in E5, SimCSE and
sentence-transformers' MultipleNegativesRankingLoss): within a batch, each query's own passage
is the positive and every other passage a negative, and the same the other way round. Embeddings
are the runtime's (mean-pooled over real tokens, L2-normalised), so what is trained is what
/v1/embed and the assistant compute. The word-embedding matrix is frozen by default: for a
multilingual encoder it holds most of the parameters (96 M of e5-small's 118 M) and a few hundred
pairs cannot improve it, only overfit it.

The loss and collator run on the one training loop (:func:`lmforge.train.loop.train`); held-out
pairs, when given, are scored by retrieval among themselves (loss, MRR, recall@1) for early
stopping and the best weights.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoModel, PreTrainedModel

from lmforge.errors import DataError, RecipeError
from lmforge.models.classifier import collate, quiet_transformers
from lmforge.models.encoder import mean_pooled
from lmforge.models.loading import from_pretrained
from lmforge.models.tokenizer import TextTokenizer
from lmforge.progress import ProgressReporter
from lmforge.train.batching import shuffled_batches
from lmforge.train.checkpoint import fingerprint_of
from lmforge.train.loop import Schedule, Validation, train

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
HIGHER_IS_BETTER = {"loss": False, "mrr": True, "recall_at_1": True}


@dataclass
class EmbeddingFit:
    model: PreTrainedModel
    losses: list[float]  # one per step
    steps: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)  # one record per evaluation
    best: dict[str, float] = field(default_factory=dict)  # empty without validation pairs
    stopped_early: bool = False


def pooled(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's sentence embeddings for a collated batch (gradients flow)."""
    hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return mean_pooled(hidden.last_hidden_state, batch["attention_mask"])


def info_nce(queries: torch.Tensor, passages: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE: row i of each side's positive is row i of the other."""
    logits = queries @ passages.T / temperature
    target = torch.arange(len(queries), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def pair_batch(
    queries: Sequence[Sequence[int]], passages: Sequence[Sequence[int]], pad_id: int
) -> dict[str, torch.Tensor]:
    """One batch of pairs: the queries' and the passages' tensors side by side."""
    q, p = collate(queries, pad_id), collate(passages, pad_id)
    return {
        "query_ids": q["input_ids"],
        "query_mask": q["attention_mask"],
        "passage_ids": p["input_ids"],
        "passage_mask": p["attention_mask"],
    }


def pair_loss(model: Any, batch: dict[str, torch.Tensor], temperature: float) -> torch.Tensor:
    """In-batch-negatives loss of one :func:`pair_batch`."""
    q = pooled(model, {"input_ids": batch["query_ids"], "attention_mask": batch["query_mask"]})
    p = pooled(model, {"input_ids": batch["passage_ids"], "attention_mask": batch["passage_mask"]})
    return info_nce(q, p, temperature)


@torch.no_grad()
def retrieval_scores(
    model: Any,
    queries: Sequence[Sequence[int]],
    passages: Sequence[Sequence[int]],
    pad_id: int,
    temperature: float,
    batch_size: int = 64,
) -> dict[str, float]:
    """Each query ranks all the passages: InfoNCE over the whole set, MRR and recall@1."""
    model.eval()
    device = next(model.parameters()).device

    def embed(rows: Sequence[Sequence[int]]) -> torch.Tensor:
        parts = []
        for start in range(0, len(rows), batch_size):
            batch = collate(rows[start : start + batch_size], pad_id)
            parts.append(pooled(model, {k: v.to(device) for k, v in batch.items()}).float())
        return torch.cat(parts)

    q, p = embed(queries), embed(passages)
    sims = q @ p.T
    rank = (sims > sims.diagonal()[:, None]).sum(dim=1) + 1
    return {
        "loss": float(info_nce(q, p, temperature)),
        "mrr": float((1.0 / rank).mean()),
        "recall_at_1": float((rank == 1).float().mean()),
    }


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
    validation: Sequence[tuple[str, str]] | None = None,
    watch: str = "loss",
    patience: int | None = None,
    eval_every_steps: int | None = None,
    run_dir: Path | None = None,
    resume: bool = False,
) -> EmbeddingFit:
    """Fine-tune the encoder in ``folder`` on (query, passage) pairs with in-batch negatives.

    With ``validation`` pairs, every evaluation (once an epoch, or every ``eval_every_steps``)
    scores them by retrieval; the best weights by ``watch`` (``loss``, ``mrr`` or
    ``recall_at_1``) are kept, and ``patience`` evaluations without improvement stop training.
    With ``run_dir``, checkpoints are written there and ``resume`` continues from the last one.
    """
    if len(pairs) < 2:
        raise DataError(
            f"contrastive fine-tuning needs at least 2 pairs, got {len(pairs)}",
            "give more (query, passage) pairs: the other pairs of a batch are the negatives",
        )
    if watch not in HIGHER_IS_BETTER:
        raise RecipeError(
            f"cannot stop early on {watch!r}", f"watch one of {', '.join(HIGHER_IS_BETTER)}"
        )
    torch.manual_seed(seed)
    with quiet_transformers():
        model = from_pretrained(AutoModel, folder, use_safetensors=True)
    tokenizer = TextTokenizer(folder, max_length)
    queries = tokenizer([query_prefix + q for q, _ in pairs])
    passages = tokenizer([passage_prefix + p for _, p in pairs])
    if freeze_word_embeddings:
        model.get_input_embeddings().requires_grad_(False)
    if getattr(model, "pooler", None) is not None:
        # Mean pooling never uses BERT's pooler: it gets no gradient, which DDP (torchrun)
        # refuses in a parameter that is meant to train.
        model.pooler.requires_grad_(False)

    def batches(epoch: int) -> list[list[int]]:
        # A lone pair has no negative to learn from.
        cut = shuffled_batches(len(pairs), batch_size, seed, epoch, drop_last=True)
        return [b for b in cut if len(b) >= 2]

    checks = None
    if validation:
        val_q = tokenizer([query_prefix + q for q, _ in validation])
        val_p = tokenizer([passage_prefix + p for _, p in validation])
        checks = Validation(
            lambda m: retrieval_scores(m, val_q, val_p, tokenizer.pad_id, temperature),
            watch=watch,
            higher_is_better=HIGHER_IS_BETTER[watch],
            patience=patience,
        )
    run = {
        "task": "contrastive",
        "folder": str(folder),
        "pairs": _digest(pairs),
        "validation": _digest(validation or []),
        "prefixes": [query_prefix, passage_prefix],
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "temperature": temperature,
        "max_length": max_length,
        "freeze_word_embeddings": freeze_word_embeddings,
        "seed": seed,
    }
    result = train(
        model,
        batches,
        lambda idx: pair_batch(
            [queries[i] for i in idx], [passages[i] for i in idx], tokenizer.pad_id
        ),
        lambda m, batch: pair_loss(m, batch, temperature),
        Schedule(
            epochs=epochs,
            learning_rate=learning_rate,
            weight_decay=0.01,  # AdamW's default, as before the loop was shared
            warmup_ratio=0.1,
            min_warmup_steps=1,
            eval_every_steps=eval_every_steps,
        ),
        validation=checks,
        run_dir=run_dir,
        resume=resume,
        fingerprint=fingerprint_of(run),
        progress=progress,
        description="contrastive fine-tuning",
    )
    return EmbeddingFit(
        result.model,
        result.losses,
        result.steps,
        result.seconds,
        result.history,
        result.best,
        result.stopped_early,
    )


def _digest(pairs: Sequence[tuple[str, str]]) -> str:
    text = "\n".join(f"{q}\t{p}" for q, p in pairs)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_encoder(model: PreTrainedModel, tokenizer_folder: Path, out: Path) -> Path:
    """A folder the runtime's Embedder (and /v1/embed) loads: safetensors weights + tokenizer."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (tokenizer_folder / name).is_file():
            shutil.copy2(tokenizer_folder / name, out / name)
    return out
