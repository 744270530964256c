"""Sentence embeddings from an encoder's hidden states: the one pooling that training
(train/contrastive.py) and serving (runtime/embedder.py) share."""

from __future__ import annotations

import torch


def mean_pooled(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the hidden states over real (unmasked) tokens, L2-normalised."""
    weights = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    mean = (last_hidden_state * weights).sum(1) / weights.sum(1).clamp(min=1)
    return torch.nn.functional.normalize(mean, dim=-1)
