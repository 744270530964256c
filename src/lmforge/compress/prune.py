"""Structured pruning of a BERT-family classifier: attention heads and FFN neurons by importance.

Importance is first-order Taylor: a gate of ones is put on every head's output and every FFN
neuron's activation, and a unit's score is |∂loss/∂gate| = |Σ_tokens grad · activation| per
example (the loss change from removing it, to first order), summed over examples — Michel et al.
2019, "Are Sixteen Heads Really Better than One?". The loss is the classification loss on the
labels.

What is removed is limited by what a plain ``from_pretrained`` can load back. transformers 5
dropped ``prune_heads`` and ``config.pruned_heads``, and BERT derives the head width from
``hidden_size / num_attention_heads``, so no config can describe a layer with fewer heads of
the same width. Removed heads are therefore *masked*: their query, key and value rows and
their columns of the attention output projection are set to zero. The head then contributes
exactly nothing, the model saves, loads and exports unchanged, and the zeros are a fixed point
of fine-tuning (every gradient reaching them is zero, so AdamW keeps them at zero), but they
are still stored. Heads may differ per layer; at least one is kept in each.

FFN neurons are removed physically (smaller Linear layers). ``intermediate_size`` is one number
for all layers, so every layer loses the same count, each layer choosing its own least
important neurons.

Pruning changes the model in place; fine-tune it afterwards with :func:`recover` (distillation
from a copy of the unpruned model, taken before pruning).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from lmforge.compress._finetune import CompressionError, check_rows, encoder_layers
from lmforge.compress.distill import distill
from lmforge.models.classifier import collate, length_sorted_batches

__all__ = ["CompressionError", "PruneReport", "prune_classifier", "recover"]

# The recovery fine-tune is distillation with the unpruned model as teacher and the pruned one
# as student: ``recover(original, pruned, rows, labels, pad_id=...)``.
recover = distill


@dataclass(frozen=True)
class PruneReport:
    heads_before: int
    heads_after: int
    heads_per_layer: tuple[int, ...]  # kept, per layer
    removed_heads: tuple[tuple[int, int], ...]  # (layer, head), masked to zero
    ffn_neurons_before: int  # all layers together
    ffn_neurons_after: int
    parameters_before: int  # stored parameters
    parameters_after: int
    masked_parameters: int  # weights of removed heads: zero, but still stored
    scored_rows: int

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["heads_per_layer"] = list(self.heads_per_layer)
        data["removed_heads"] = [list(pair) for pair in self.removed_heads]
        return data


def prune_classifier(
    model: PreTrainedModel,
    rows: Sequence[Sequence[int]],
    labels: Sequence[int],
    *,
    pad_id: int,
    head_fraction: float,
    ffn_fraction: float,
    batch_size: int = 32,
    max_rows: int = 512,
) -> PruneReport:
    """Remove the least important ``head_fraction`` of heads and ``ffn_fraction`` of FFN
    neurons of ``model``, in place, scoring on up to ``max_rows`` of the labelled ``rows``."""
    for name, value in (("head_fraction", head_fraction), ("ffn_fraction", ffn_fraction)):
        if not 0.0 <= value < 1.0:
            raise CompressionError(
                f"{name} must be at least 0 and below 1, not {value}",
                "give the share of units to remove, e.g. 0.25",
            )
    check_rows(rows, labels)
    layers = encoder_layers(model)
    heads = int(model.config.num_attention_heads)
    ffn = int(model.config.intermediate_size)
    params_before = _count(model)

    chosen = np.arange(len(rows))
    if len(rows) > max_rows:
        chosen = np.sort(np.random.default_rng(0).choice(len(rows), max_rows, replace=False))
    head_score, ffn_score = _taylor_importance(
        model,
        [rows[i] for i in chosen.tolist()],
        [int(labels[i]) for i in chosen.tolist()],
        pad_id=pad_id,
        batch_size=batch_size,
    )

    removed = _heads_to_remove(head_score, int(head_fraction * len(layers) * heads))
    masked = 0
    with torch.no_grad():
        for layer_idx, head in removed:
            masked += _mask_head(layers[layer_idx], head, heads)
        drop = int(ffn_fraction * ffn)
        if drop:
            for layer, score in zip(layers, ffn_score, strict=True):
                keep = torch.from_numpy(np.sort(np.argsort(-score, kind="stable")[: ffn - drop]))
                _replace(layer, "intermediate.dense", keep, dim=0)
                _replace(layer, "output.dense", keep, dim=1)
            model.config.intermediate_size = ffn - drop

    kept = [heads - sum(1 for li, _ in removed if li == i) for i in range(len(layers))]
    return PruneReport(
        heads_before=len(layers) * heads,
        heads_after=sum(kept),
        heads_per_layer=tuple(kept),
        removed_heads=tuple(removed),
        ffn_neurons_before=len(layers) * ffn,
        ffn_neurons_after=len(layers) * int(model.config.intermediate_size),
        parameters_before=params_before,
        parameters_after=_count(model),
        masked_parameters=masked,
        scored_rows=len(chosen),
    )


def _taylor_importance(
    model: PreTrainedModel,
    rows: Sequence[Sequence[int]],
    labels: Sequence[int],
    *,
    pad_id: int,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit importance: ``(layers, heads)`` and ``(layers, ffn)``, summed over rows."""
    layers = encoder_layers(model)
    heads = int(model.config.num_attention_heads)
    head_score = torch.zeros(len(layers), heads)
    ffn_score = torch.zeros(len(layers), int(model.config.intermediate_size))
    gates: list[tuple[str, int, torch.Tensor]] = []

    def gate_heads(index: int) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            context, *rest = output  # (batch, tokens, heads · head width), attention weights
            gate = torch.ones(context.shape[0], heads, dtype=context.dtype, device=context.device)
            gate.requires_grad_(True)
            gates.append(("head", index, gate))
            split = context.view(*context.shape[:2], heads, -1) * gate[:, None, :, None]
            return (split.view(context.shape), *rest)

        return hook

    def gate_ffn(index: int) -> Any:
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
            gate = torch.ones(output.shape[0], output.shape[-1], dtype=output.dtype)
            gate = gate.to(output.device).requires_grad_(True)
            gates.append(("ffn", index, gate))
            return output * gate[:, None, :]

        return hook

    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.get_submodule("attention.self").register_forward_hook(gate_heads(i)))
        handles.append(layer.get_submodule("intermediate").register_forward_hook(gate_ffn(i)))
    # Only the gates need gradients; the weights' would cost time and memory for nothing.
    trainable = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in trainable:
        p.requires_grad_(False)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.enable_grad():
            for idx in length_sorted_batches([len(r) for r in rows], batch_size):
                batch = collate([rows[i] for i in idx], pad_id)
                target = torch.tensor([labels[i] for i in idx], device=device)
                gates.clear()
                logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
                # Summed, not averaged: each row's gate gradient is then that row's own term.
                loss = F.cross_entropy(logits.float(), target, reduction="sum")
                grads = torch.autograd.grad(loss, [g for _, _, g in gates])
                for (kind, i, _), grad in zip(gates, grads, strict=True):
                    score = grad.detach().abs().sum(0).float().cpu()
                    if kind == "head":
                        head_score[i] += score
                    else:
                        ffn_score[i] += score
    finally:
        gates.clear()
        for handle in handles:
            handle.remove()
        for p, flag in trainable:
            p.requires_grad_(flag)
        model.train(was_training)
    return head_score.numpy(), ffn_score.numpy()


def _heads_to_remove(score: np.ndarray, count: int) -> list[tuple[int, int]]:
    """The ``count`` least important heads over all layers, keeping one in each layer.

    Scores are normalised per layer (L2, as in Michel et al.) so that layers whose gradients
    run larger do not keep all their heads by scale alone.
    """
    norm = np.linalg.norm(score, axis=1, keepdims=True)
    normalised = score / np.where(norm > 0, norm, 1.0)
    left = [score.shape[1]] * score.shape[0]
    removed: list[tuple[int, int]] = []
    for flat in np.argsort(normalised, axis=None, kind="stable"):
        if len(removed) >= count:
            break
        layer, head = divmod(int(flat), score.shape[1])
        if left[layer] > 1:
            left[layer] -= 1
            removed.append((layer, head))
    return sorted(removed)


def _mask_head(layer: nn.Module, head: int, heads: int) -> int:
    """Zero one head's weights; returns how many parameters that set to zero."""
    width = _linear(layer, "attention.self.query").out_features // heads
    part = slice(head * width, (head + 1) * width)
    zeroed = 0
    for name in ("query", "key", "value"):
        proj = _linear(layer, f"attention.self.{name}")
        proj.weight[part].zero_()
        zeroed += proj.weight[part].numel()
        if proj.bias is not None:
            proj.bias[part].zero_()
            zeroed += width
    out = _linear(layer, "attention.output.dense")
    out.weight[:, part].zero_()
    return zeroed + out.weight[:, part].numel()


def _linear(layer: nn.Module, path: str) -> nn.Linear:
    return cast(nn.Linear, layer.get_submodule(path))  # checked by encoder_layers


def _replace(layer: nn.Module, path: str, index: torch.Tensor, dim: int) -> None:
    """Swap the Linear at ``path`` for a copy keeping ``index`` along ``dim`` (0: outputs,
    1: inputs)."""
    linear = _linear(layer, path)
    weight = linear.weight.index_select(dim, index.to(linear.weight.device))
    out_features, in_features = weight.shape
    smaller = nn.Linear(
        in_features,
        out_features,
        bias=linear.bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )
    smaller.weight.copy_(weight)
    if linear.bias is not None:
        bias = linear.bias[index.to(linear.bias.device)] if dim == 0 else linear.bias
        smaller.bias.copy_(bias)
    smaller.weight.requires_grad_(linear.weight.requires_grad)
    if linear.bias is not None and smaller.bias is not None:
        smaller.bias.requires_grad_(linear.bias.requires_grad)
    smaller.train(linear.training)
    parent, name = path.rsplit(".", 1)
    setattr(layer.get_submodule(parent), name, smaller)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
