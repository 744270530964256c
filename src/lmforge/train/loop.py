"""The one training loop of lmforge, and the classification fine-tune that runs on it.

:func:`train` takes a model, a batching rule (epoch → batches of row indices), a collator
(indices → tensors), a loss function and, optionally, a validation; it does the rest the same way
for every task: 🤗 Accelerate (bf16 autocast, gradient accumulation, torchrun/DDP), fused AdamW
with linear warm-up and decay, gradient clipping, evaluation and early stopping on any validation
metric, atomic checkpoints and resume, TensorBoard and progress. A short loop rather than the
Trainer, so that it reads in one sitting (the nanoGPT/litgpt idea).

Each task is a loss function and a collator over it: classification here (:func:`fine_tune`),
contrastive embeddings in :mod:`lmforge.train.contrastive`, instruction tuning in
:mod:`lmforge.train.sft`, and the compression fine-tunes in :mod:`lmforge.compress._finetune`.
(A little over 400 lines because the classification task stays here, where code imports it
from; batching rules, checkpoints and LoRA are in their own modules.)
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState, GradientState
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from lmforge.data import PreparedData
from lmforge.errors import CheckpointError
from lmforge.evaluate.metrics import classification_metrics
from lmforge.hardware import cpu_has_native_bf16, resolve_precision
from lmforge.models.catalogue import ResolvedBase
from lmforge.models.classifier import (
    build_classifier,
    collate,
    load_tokenizer,
    pad_token_id,
    predict_logits,
    tokenize,
)
from lmforge.progress import ProgressReporter, SilentProgress
from lmforge.recipe.schema import Recipe, TrainingConfig

# epoch_batches, read_checkpoint_state and recipe_fingerprint are re-exported (``as``): code
# imports them from here.
from lmforge.train.batching import epoch_batches as epoch_batches
from lmforge.train.checkpoint import (
    load_checkpoint,
    load_weights,
    read_state,
    save_checkpoint,
)
from lmforge.train.checkpoint import read_checkpoint_state as read_checkpoint_state
from lmforge.train.checkpoint import recipe_fingerprint as recipe_fingerprint
from lmforge.train.class_weights import classification_loss
from lmforge.train.lora import adapt, trainable_counts

Batches = Callable[[int], list[list[int]]]  # epoch → that epoch's batches of row indices
Collate = Callable[[list[int]], dict[str, torch.Tensor]]  # row indices → one batch of tensors
LossFn = Callable[[Any, dict[str, torch.Tensor]], torch.Tensor]  # (model, batch) → mean loss


@dataclass(frozen=True)
class Schedule:
    """How long and how fast one run trains."""

    epochs: float
    learning_rate: float
    max_steps: int | None = None  # optimiser steps; overrides epochs
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    min_warmup_steps: int = 0
    gradient_accumulation: int = 1
    precision: str = "fp32"  # "fp32" or "bf16" (autocast), already resolved for this machine
    eval_every_steps: int | None = None  # evaluate (and checkpoint) every N steps; default: epoch

    @classmethod
    def of(cls, training: TrainingConfig, precision: str) -> Schedule:
        """A recipe's ``training`` section as a schedule (``precision`` already resolved)."""
        return cls(
            epochs=training.epochs,
            learning_rate=training.learning_rate,
            max_steps=training.max_steps,
            weight_decay=training.weight_decay,
            warmup_ratio=training.warmup_ratio,
            gradient_accumulation=training.gradient_accumulation,
            precision=precision,
            eval_every_steps=training.eval_every_steps,
        )


@dataclass(frozen=True)
class Validation:
    """What is measured on held-out data during training, and when training stops."""

    metrics: Callable[[Any], dict[str, float]]  # the (unwrapped) model → metric name → value
    watch: str = "loss"  # the metric that picks the best weights and stops early
    higher_is_better: bool = False
    patience: int | None = None  # evaluations without improvement before stopping; None: never
    describe: Callable[[dict[str, float]], str] | None = None  # the progress note of a record


@dataclass
class LoopResult:
    model: Any  # unwrapped (a peft wrapper stays), in eval mode, with the best validated weights
    history: list[dict[str, float]]  # one record per evaluation
    best: dict[str, float]  # the record of the best evaluation; empty without a validation
    losses: list[float]  # mean training loss of each optimiser step
    stopped_early: bool
    steps: int
    samples: int  # rows trained on in this call (a resumed run counts only the new steps)
    seconds: float  # time in training steps, evaluation excluded


def train(
    model: torch.nn.Module,
    batches: Batches,
    collate_rows: Collate,
    loss_fn: LossFn,
    schedule: Schedule,
    *,
    validation: Validation | None = None,
    run_dir: Path | None = None,
    resume: bool = False,
    fingerprint: str = "",
    progress: ProgressReporter | None = None,
    description: str = "training",
) -> LoopResult:
    """Train ``model`` in place on ``loss_fn`` over ``batches``; see the module docstring.

    With ``run_dir``, checkpoints go to ``run_dir/checkpoints`` (``best`` and a resumable
    ``last``, written at every evaluation) and TensorBoard logs to ``run_dir/tensorboard``;
    ``resume`` continues from ``last`` if its ``fingerprint`` matches. The batches of an epoch
    must be deterministic in the epoch, so that a resumed run sees the same ones.
    """
    progress = progress or SilentProgress()
    if resume and run_dir is None:
        raise CheckpointError("nothing to resume: no run folder given", "drop --resume")
    # Accelerate keeps per-process singletons; a second run in one process (tests, a service)
    # may want another precision or accumulation. The process group (PartialState) is kept.
    AcceleratorState._reset_state()
    GradientState._reset_state()
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),  # makes torchrun on CPUs a gloo process group
        mixed_precision="bf16" if schedule.precision == "bf16" else "no",
        gradient_accumulation_steps=schedule.gradient_accumulation,
    )
    ckpt_dir = run_dir / "checkpoints" if run_dir is not None else None
    state = read_state(ckpt_dir, fingerprint) if resume and ckpt_dir is not None else None

    world, rank = accelerator.num_processes, accelerator.process_index
    micro_per_epoch = len(batches(0)) // world
    steps_per_epoch = max(1, micro_per_epoch // schedule.gradient_accumulation)
    total_steps = schedule.max_steps or max(1, math.ceil(schedule.epochs * steps_per_epoch))
    eval_every = schedule.eval_every_steps or steps_per_epoch
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=schedule.learning_rate,
        weight_decay=schedule.weight_decay,
        fused=True,  # one kernel over all tensors: several times faster on a CPU than foreach
    )
    warmup = max(schedule.min_warmup_steps, int(schedule.warmup_ratio * total_steps))
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    # The scheduler stays unwrapped: Accelerate would step it once per process, but our step
    # count already divides the data between processes.
    objective, optimizer = accelerator.prepare(_Objective(model, loss_fn), optimizer)

    step, bad_evals = 0, 0
    history: list[dict[str, float]] = []
    best: dict[str, float] = {}
    losses: list[float] = []
    if state is not None and ckpt_dir is not None:
        load_checkpoint(ckpt_dir / "last", model, optimizer, scheduler)
        step, history, best = state["step"], state["history"], state["best"]
        bad_evals, losses = state["bad_evals"], state["losses"]
        progress.note(f"resumed from step {step} of {total_steps}")

    best_weights: dict[str, torch.Tensor] | None = None  # kept in memory when there is no run_dir
    writer = _tensorboard(run_dir) if run_dir is not None and accelerator.is_main_process else None
    seconds, samples, stopped_early = 0.0, 0, False
    running_loss, running_n, step_loss, step_micro = 0.0, 0, 0.0, 0
    micro_done = step * schedule.gradient_accumulation
    progress.start(description, total_steps, completed=step)
    objective.train()
    try:
        while step < total_steps and micro_per_epoch and not stopped_early:
            epoch, skip = divmod(micro_done, micro_per_epoch)
            for idx in batches(epoch)[: micro_per_epoch * world][rank::world][skip:]:
                tick = time.perf_counter()
                batch = {k: v.to(accelerator.device) for k, v in collate_rows(idx).items()}
                with accelerator.accumulate(objective):
                    loss = objective(batch)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(objective.parameters(), 1.0)
                        optimizer.step()
                        scheduler.step()
                        optimizer.zero_grad()
                seconds += time.perf_counter() - tick
                samples += len(idx)
                value = float(loss.detach())
                running_loss, running_n = running_loss + value * len(idx), running_n + len(idx)
                step_loss, step_micro = step_loss + value, step_micro + 1
                micro_done += 1
                if not accelerator.sync_gradients:
                    continue
                step += 1
                losses.append(step_loss / step_micro)
                step_loss, step_micro = 0.0, 0
                # Validated runs show the training loss their next record will hold.
                shown = running_loss / running_n if validation is not None else losses[-1]
                progress.advance(1, loss=shown)
                if writer is not None:
                    writer.add_scalar("train/loss", losses[-1], step)
                    writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
                if step % eval_every == 0 or step == total_steps:
                    record = {
                        "step": float(step),
                        "epoch": round(step / steps_per_epoch, 3),
                        "train_loss": running_loss / running_n,
                    }
                    running_loss, running_n = 0.0, 0
                    improved = False
                    if validation is not None:
                        scores = validation.metrics(model)
                        objective.train()  # a validation may leave the model in eval mode
                        record.update({f"val_{k}": float(v) for k, v in scores.items()})
                        key = f"val_{validation.watch}"
                        sign = 1.0 if validation.higher_is_better else -1.0
                        improved = not best or sign * record[key] > sign * best[key]
                        best, bad_evals = (record, 0) if improved else (best, bad_evals + 1)
                        if writer is not None:
                            for name, v in record.items():
                                if name.startswith("val_"):
                                    writer.add_scalar(name.replace("_", "/", 1), v, step)
                        progress.note((validation.describe or _describe)(record))
                        patience = validation.patience
                        if patience is not None and bad_evals >= patience and step < total_steps:
                            stopped_early = True
                    history.append(record)
                    if ckpt_dir is None:
                        if improved:
                            best_weights = _copy_weights(model)
                    elif accelerator.is_main_process:
                        if improved:
                            save_checkpoint(ckpt_dir / "best", model)
                        loop_state = {
                            "step": step,
                            "history": history,
                            "best": best,
                            "bad_evals": bad_evals,
                            "losses": losses,
                            "fingerprint": fingerprint,
                        }
                        save_checkpoint(ckpt_dir / "last", model, optimizer, scheduler, loop_state)
                if step >= total_steps or stopped_early:
                    break
    finally:
        progress.stop()
        if writer is not None:
            writer.close()
    accelerator.wait_for_everyone()

    if ckpt_dir is not None and (ckpt_dir / "best" / "model.safetensors").is_file():
        load_weights(ckpt_dir / "best", model)
    elif best_weights is not None:
        model.load_state_dict(best_weights)
    model.eval()
    return LoopResult(model, history, best, losses, stopped_early, step, samples, seconds)


class _Objective(torch.nn.Module):
    """The model with the task's loss as its forward. Under DDP, gradients are synchronised only
    for what runs inside the wrapped module's forward, and a task may run the model twice a step
    (contrastive: queries, then passages) or not through its own forward at all (instruction
    tuning: the decoder body, then the output layer where it is needed)."""

    def __init__(self, model: torch.nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.loss_fn(self.model, batch)


def _describe(record: dict[str, float]) -> str:
    scores = ", ".join(f"{k[4:]} {v:.4f}" for k, v in record.items() if k.startswith("val_"))
    return f"step {int(record['step'])}: val {scores}"


def _copy_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _tensorboard(run_dir: Path) -> Any:
    # TensorBoard's writer imports tensorboard and protobuf: only runs with a folder pay for it.
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


# --- classification ---------------------------------------------------------------------------


@dataclass
class TrainOutcome:
    model: PreTrainedModel  # plain transformers model with the best weights (LoRA merged)
    tokenizer: PreTrainedTokenizerBase
    text_prefix: str
    history: list[dict[str, float]]
    best: dict[str, float]
    stopped_early: bool
    steps: int
    train_samples: int
    train_seconds: float
    adapter_dir: Path | None = None
    trainable_parameters: int = 0
    total_parameters: int = 0
    precision: str = "fp32"

    @property
    def samples_per_second(self) -> float:
        return self.train_samples / self.train_seconds if self.train_seconds else 0.0


def fine_tune(
    recipe: Recipe,
    data: PreparedData,
    base: ResolvedBase,
    run_dir: Path,
    *,
    resume: bool = False,
    progress: ProgressReporter | None = None,
) -> TrainOutcome:
    """Fine-tune a sequence classifier (full or LoRA) on ``data``: cross-entropy over
    length-grouped batches, validated on accuracy, macro-F1 and loss."""
    cfg = recipe.training
    progress = progress or SilentProgress()
    # Under torchrun the processes on one machine share its cores.
    per_process = (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(cfg.num_threads or max(1, per_process))
    torch.manual_seed(cfg.seed)
    precision = resolve_precision(cfg.precision)
    if precision == "bf16" and not torch.cuda.is_available() and not cpu_has_native_bf16():
        progress.note("bf16 asked for, but this CPU has no native bf16: expect it to be slow")
    fingerprint = recipe_fingerprint(recipe)
    if resume:  # fail before the data is tokenised and the model built
        read_state(run_dir / "checkpoints", fingerprint)

    tokenizer = load_tokenizer(base.path)
    prefix = recipe.model.text_prefix if recipe.model.text_prefix is not None else base.text_prefix
    train_ids = tokenize(tokenizer, data.train["text"].tolist(), cfg.max_length, prefix)
    train_y = data.label_ids("train")
    val_ids = tokenize(tokenizer, data.validation["text"].tolist(), cfg.max_length, prefix)
    val_y = data.label_ids("validation")
    lengths = np.array([len(t) for t in train_ids])
    pad_id = pad_token_id(tokenizer)

    adaptation = recipe.adaptation
    model = build_classifier(base.path, data.labels, recipe.model.dropout)
    model = adapt(
        model,
        adaptation.method,
        adaptation.lora,
        head="classifier",
        freeze_embeddings=adaptation.freeze_embeddings,
    )
    trainable, total = trainable_counts(model)

    def rows(idx: list[int]) -> dict[str, torch.Tensor]:
        return {
            **collate([train_ids[i] for i in idx], pad_id),
            "labels": torch.as_tensor(train_y[idx]),
        }

    def validate(model: Any) -> dict[str, float]:
        logits = predict_logits(model, val_ids, pad_id=pad_id, precision=precision)
        val = classification_metrics(val_y, logits, data.labels, detail=False)
        return {"loss": val["loss"], "accuracy": val["accuracy"], "macro_f1": val["macro_f1"]}

    es = cfg.early_stopping
    result = train(
        model,
        lambda epoch: epoch_batches(lengths, cfg.batch_size, cfg.seed, epoch),
        rows,
        classification_loss(cfg.class_weights, train_y, len(data.labels)),
        Schedule.of(cfg, precision),
        validation=Validation(
            validate,
            watch=es.metric,
            higher_is_better=es.metric != "loss",
            patience=es.patience if es.enabled else None,
            describe=lambda r: (
                f"step {int(r['step'])}: val acc {r['val_accuracy']:.4f}, "
                f"macro-F1 {r['val_macro_f1']:.4f}, loss {r['val_loss']:.4f}"
            ),
        ),
        run_dir=run_dir,
        resume=resume,
        fingerprint=fingerprint,
        progress=progress,
        description="fine-tuning",
    )
    raw_model = result.model
    adapter_dir = None
    if adaptation.method == "lora":
        adapter_dir = run_dir / "adapter"
        if PartialState().is_main_process:
            raw_model.save_pretrained(str(adapter_dir))
        raw_model = raw_model.merge_and_unload()
    raw_model.eval()
    return TrainOutcome(
        model=raw_model,
        tokenizer=tokenizer,
        text_prefix=prefix,
        history=result.history,
        best=result.best,
        stopped_early=result.stopped_early,
        steps=result.steps,
        train_samples=result.samples,
        train_seconds=result.seconds,
        adapter_dir=adapter_dir,
        trainable_parameters=trainable,
        total_parameters=total,
        precision=precision,
    )
