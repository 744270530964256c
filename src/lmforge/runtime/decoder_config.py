"""What a decoder's forward pass needs to know of a model: DecoderConfig, its sizes and the
features that tell one architecture from another.

The runtime has one decoder class (decoder.py), configured by a DecoderConfig the way litgpt's
one ``GPT`` is configured by its ``Config``: Gemma 3 differs from Llama by features (query/key
norms, norms of the attention's and the MLP's outputs, GELU, scaled embeddings, RMSNorm weights
stored as an offset from 1, sliding-window layers with their own rotary table), not by branches
on its name. Sizes, scales, the activation and the layer types are read from the Hugging Face
config; what that config leaves implicit in the model type is listed per type in ARCHITECTURES,
which is also the list of architectures the runtime supports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lmforge.errors import ModelUnavailableError

__all__ = [
    "ACTIVATIONS",
    "ARCHITECTURES",
    "SUPPORTED_ARCHITECTURES",
    "DecoderConfig",
    "Features",
]

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


@dataclass(frozen=True)
class Features:
    """What an architecture adds to Llama's forward pass, where Hugging Face's config leaves it
    implicit in the model type (its sizes, scales and layer types are read from the config)."""

    label: str  # the architecture's name in messages
    norm_offset: float = 0.0  # RMSNorm weights are stored as an offset from 1
    qk_norm: bool = False  # RMSNorm per head of queries and keys, before the rotation
    post_norms: bool = False  # RMSNorm of the attention's and the MLP's outputs
    mlp_norm: str = "post_attention_layernorm"  # the HF module name of the norm before the MLP
    layer_types: bool = False  # sliding-window and global layers, each with its rotary table
    scale_embeddings: bool = False  # embeddings times sqrt(hidden size), as the HF module holds it


ARCHITECTURES: dict[str, Features] = {
    "llama": Features("Llama"),
    "mistral": Features("Mistral"),
    "qwen2": Features("Qwen2"),
    # Gemma uses the name post_attention_layernorm for a norm of the attention's output
    "gemma3_text": Features(
        "Gemma 3",
        norm_offset=1.0,
        qk_norm=True,
        post_norms=True,
        mlp_norm="pre_feedforward_layernorm",
        layer_types=True,
        scale_embeddings=True,
    ),
}
SUPPORTED_ARCHITECTURES = tuple(ARCHITECTURES)

# config fields of variants the forward pass does not implement (set: refused at load)
_UNSUPPORTED_FIELDS = (
    "attn_logit_softcapping",
    "final_logit_softcapping",
    "use_bidirectional_attention",
)


@dataclass(frozen=True)
class DecoderConfig:
    """All the forward pass reads of a model's config: its sizes and its features."""

    architecture: str  # Hugging Face's model_type
    features: Features
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab_size: int
    context: int  # the context window, in positions
    eps: float  # RMSNorm's epsilon
    attention_scale: float  # 1 / sqrt(query_pre_attn_scalar, else head_dim)
    activation: str  # the MLP's gate activation, a key of ACTIVATIONS
    windows: tuple[int | None, ...]  # per layer: the sliding window (None: all positions)
    rope_tables: tuple[str | None, ...]  # per layer: its rotary table (None: the only one)
    eos_token_id: int | list[int] | None

    @classmethod
    def from_hf(cls, config: Any) -> DecoderConfig:
        """From a Hugging Face model config. A model the forward pass does not implement exists
        but cannot be served: ModelUnavailableError (the server's 503), not "not found"."""
        features = ARCHITECTURES.get(config.model_type)
        if features is None:
            raise ModelUnavailableError(
                f"decoder architecture '{config.model_type}' is not supported by the runtime",
                f"use a model of one of: {', '.join(SUPPORTED_ARCHITECTURES)}",
            )
        if any(getattr(config, name, None) for name in _UNSUPPORTED_FIELDS):
            raise ModelUnavailableError(
                f"this {features.label} variant (logit soft-capping or bidirectional attention) "
                "is not supported by the runtime",
                f"use a causal {features.label} text model without soft-capping",
            )
        heads = int(config.num_attention_heads)
        head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
        activation = getattr(config, "hidden_activation", None) or config.hidden_act
        if activation not in ACTIVATIONS:
            raise ModelUnavailableError(
                f"the decoder's MLP activation '{activation}' is not supported by the runtime",
                f"use a model whose activation is one of: {', '.join(ACTIVATIONS)}",
            )
        layers = int(config.num_hidden_layers)
        kinds: list[str | None] = [None] * layers
        if features.layer_types:
            kinds = list(config.layer_types)
        return cls(
            architecture=config.model_type,
            features=features,
            layers=layers,
            heads=heads,
            kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
            head_dim=head_dim,
            intermediate=int(config.intermediate_size),
            vocab_size=int(config.vocab_size),
            context=int(config.max_position_embeddings),
            eps=float(config.rms_norm_eps),
            attention_scale=float(getattr(config, "query_pre_attn_scalar", None) or head_dim)
            ** -0.5,
            activation=activation,
            windows=tuple(
                config.sliding_window if kind == "sliding_attention" else None for kind in kinds
            ),
            rope_tables=tuple(kinds),
            eos_token_id=getattr(config, "eos_token_id", None),
        )
