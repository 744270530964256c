"""Multi-task training on the one loop: a batching rule over several sub-tasks, and their loss.

Every batch holds rows of one sub-task (its own head, its own labels); which sub-task each
batch of an epoch comes from is drawn by the recipe's rule — ``proportional`` to the
sub-tasks' training rows, ``temperature`` (rows^(1/T): small sub-tasks drawn more often than
their share, as in multilingual pretraining), or ``round_robin`` (each in turn). An epoch has
as many batches as all sub-tasks' epochs together; a sub-task drawn more often than it has
batches starts its next (reshuffled) pass. Rows are numbered globally: sub-task ``t``'s row
``i`` is ``offsets[t] + i``.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lmforge.evaluate.metrics import classification_metrics
from lmforge.hardware import resolve_precision
from lmforge.models.catalogue import ResolvedBase
from lmforge.models.classifier import collate, load_tokenizer, pad_token_id, tokenize
from lmforge.models.multitask import MultitaskModel, build_multitask, multitask_logits
from lmforge.progress import ProgressReporter
from lmforge.recipe.schema import Recipe
from lmforge.train.batching import epoch_batches
from lmforge.train.checkpoint import read_state, recipe_fingerprint
from lmforge.train.loop import LoopResult, Schedule, Validation, train
from lmforge.train.lora import adapt, trainable_counts


@dataclass(frozen=True)
class SubTask:
    """One sub-task's training and validation rows, as label ids."""

    name: str
    labels: list[str]
    train_texts: list[str]
    train_y: np.ndarray
    val_texts: list[str]
    val_y: np.ndarray
    loss_weight: float = 1.0


def sampling_probabilities(sizes: list[int], rule: str, temperature: float) -> np.ndarray:
    """The probability of drawing each sub-task for a batch (round-robin: equal shares)."""
    n = np.asarray(sizes, dtype=np.float64)
    if rule == "proportional":
        p = n
    elif rule == "temperature":
        p = n ** (1.0 / temperature)
    elif rule == "round_robin":
        p = np.ones_like(n)
    else:
        raise ValueError(f"unknown sampling rule {rule!r}")
    return p / p.sum()  # type: ignore[no-any-return]


def task_order(
    sizes: list[int], rule: str, temperature: float, count: int, seed: int, epoch: int
) -> list[int]:
    """Which sub-task each of an epoch's ``count`` batches comes from; deterministic in
    (seed, epoch), so a resumed run sees the same order."""
    if rule == "round_robin":
        return [i % len(sizes) for i in range(count)]
    rng = np.random.default_rng([seed, epoch, 7])
    p = sampling_probabilities(sizes, rule, temperature)
    return [int(t) for t in rng.choice(len(sizes), size=count, p=p)]


class MultitaskBatches:
    """The loop's batching rule over sub-tasks (epoch → batches of global row indices)."""

    def __init__(
        self,
        lengths: list[np.ndarray],
        batch_size: int,
        rule: str,
        temperature: float,
        seed: int,
    ) -> None:
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.rule, self.temperature = rule, temperature
        self.offsets = [0, *np.cumsum([len(x) for x in lengths]).tolist()]

    def task_of(self, row: int) -> int:
        return bisect.bisect_right(self.offsets, row) - 1

    def __call__(self, epoch: int) -> list[list[int]]:
        passes = [  # each sub-task's passes over its rows, drawn as needed
            [epoch_batches(x, self.batch_size, self.seed + t, epoch)]
            for t, x in enumerate(self.lengths)
        ]
        count = sum(len(p[0]) for p in passes)
        order = task_order(
            [len(x) for x in self.lengths], self.rule, self.temperature, count, self.seed, epoch
        )
        used = [0] * len(self.lengths)
        out = []
        for t in order:
            k, i = divmod(used[t], len(passes[t][0]))
            while k >= len(passes[t]):  # a further pass: another seed, same epoch
                more = epoch_batches(
                    self.lengths[t], self.batch_size, self.seed + t, epoch + 1000 * len(passes[t])
                )
                passes[t].append(more)
            out.append([self.offsets[t] + r for r in passes[t][k][i]])
            used[t] += 1
        return out


@dataclass
class MultitaskOutcome:
    model: MultitaskModel  # the best validated weights, LoRA merged
    text_prefix: str
    result: LoopResult
    trainable_parameters: int
    total_parameters: int
    precision: str


def train_multitask(
    recipe: Recipe,
    subtasks: list[SubTask],
    base: ResolvedBase,
    run_dir: Path,
    *,
    resume: bool = False,
    progress: ProgressReporter | None = None,
) -> tuple[MultitaskOutcome, Any]:
    """Train the shared encoder and its heads on every sub-task; validated on the sub-tasks'
    mean accuracy, macro-F1 and loss (and each one's macro-F1). Returns the outcome and the
    tokenizer."""
    cfg, section = recipe.training, recipe.multitask
    # Under torchrun the processes on one machine share its cores.
    per_process = (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(cfg.num_threads or max(1, per_process))
    torch.manual_seed(cfg.seed)
    precision = resolve_precision(cfg.precision)
    fingerprint = recipe_fingerprint(recipe)
    if resume:
        read_state(run_dir / "checkpoints", fingerprint)

    tokenizer = load_tokenizer(base.path)
    prefix = recipe.model.text_prefix if recipe.model.text_prefix is not None else base.text_prefix
    pad_id = pad_token_id(tokenizer)
    train_ids = [tokenize(tokenizer, s.train_texts, cfg.max_length, prefix) for s in subtasks]
    val_ids = [tokenize(tokenizer, s.val_texts, cfg.max_length, prefix) for s in subtasks]
    batches = MultitaskBatches(
        [np.array([len(r) for r in rows]) for rows in train_ids],
        cfg.batch_size,
        section.sampling,
        section.temperature,
        cfg.seed,
    )
    flat_ids = [r for rows in train_ids for r in rows]
    flat_y = np.concatenate([s.train_y for s in subtasks])
    names = [s.name for s in subtasks]
    weights = [s.loss_weight for s in subtasks]

    model = build_multitask(base.path, {s.name: s.labels for s in subtasks}, recipe.model.dropout)
    adaptation = recipe.adaptation
    # LoRA adapts the encoder only (peft's plain wrapper); the heads always train in full.
    model.encoder = adapt(
        model.encoder,
        adaptation.method,
        adaptation.lora,
        head="masked_lm",
        freeze_embeddings=adaptation.freeze_embeddings,
    )
    trainable, total = trainable_counts(model)

    def rows(idx: list[int]) -> dict[str, torch.Tensor]:
        return {
            **collate([flat_ids[i] for i in idx], pad_id),
            "labels": torch.as_tensor(flat_y[idx]),
            "task": torch.tensor(batches.task_of(idx[0])),
        }

    def loss(m: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = m(batch["input_ids"], batch["attention_mask"])
        t = int(batch["task"])
        value = weights[t] * F.cross_entropy(logits[names[t]], batch["labels"])
        # The other heads join the graph at zero weight: under DDP every parameter then gets a
        # gradient on every process, though each process's batch trains one head.
        return value + sum((0.0 * v.sum() for n, v in logits.items() if n != names[t]), value * 0)

    def validate(m: Any) -> dict[str, float]:
        scores: dict[str, float] = {}
        for s, ids in zip(subtasks, val_ids, strict=True):
            logits = multitask_logits(m, ids, pad_id=pad_id, precision=precision)[s.name]
            val = classification_metrics(s.val_y, logits, s.labels, detail=False)
            for k in ("loss", "accuracy", "macro_f1"):
                scores[f"{s.name}_{k}"] = float(val[k])
        for k in ("loss", "accuracy", "macro_f1"):
            scores[k] = float(np.mean([scores[f"{n}_{k}"] for n in names]))
        return scores

    es = cfg.early_stopping
    result = train(
        model,
        batches,
        rows,
        loss,
        Schedule.of(cfg, precision),
        validation=Validation(
            validate,
            watch=es.metric,
            higher_is_better=es.metric != "loss",
            patience=es.patience if es.enabled else None,
            describe=lambda r: (
                f"step {int(r['step'])}: val "
                + ", ".join(f"{n} macro-F1 {r[f'val_{n}_macro_f1']:.4f}" for n in names)
            ),
        ),
        run_dir=run_dir,
        resume=resume,
        fingerprint=fingerprint,
        progress=progress,
        description="multi-task fine-tuning",
    )
    trained: MultitaskModel = result.model
    if adaptation.method == "lora":
        trained.encoder = trained.encoder.merge_and_unload()
    trained.eval()
    outcome = MultitaskOutcome(trained, prefix, result, trainable, total, precision)
    return outcome, tokenizer
