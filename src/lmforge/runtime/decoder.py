"""A Llama-family decoder for serving: one readable forward pass over a slot-based KV cache.

transformers' ``generate()`` decodes one request at a time (or a padded batch that starts and
ends together). A server needs requests to join and leave the running batch between steps, so
this module keeps its own cache: one row ("slot") per running sequence, each with its own
length, and runs the same maths as ``LlamaForCausalLM`` (RMSNorm, rotary positions, grouped-query
attention, SwiGLU) on the weights of a loaded Hugging Face model. Rotary embeddings come from
the HF model itself, so its RoPE variant and scaling are used as they are.

Weight formats: ``fp32`` (exact), ``bf16`` (half the memory traffic), ``int8`` (per-output-channel
int8 weights, bf16 activations, through torch's weight-only int8 kernel: a quarter of the
traffic). At batch 1 decoding reads every weight once per token, so traffic is the cost; the
49k-row output layer alone is a fifth of the model and gets the same treatment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from lmforge.errors import CheckpointError, ModelNotFoundError, first_line

__all__ = ["SUPPORTED_ARCHITECTURES", "DecoderModel", "KVCache", "WeightFormat", "load_decoder"]

WeightFormat = Literal["fp32", "bf16", "int8"]
SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2")


class _Linear:
    """y = x Wᵀ (+ b) in one of the weight formats.

    The output stays in the format's activation type (float32, or bfloat16 for bf16 and int8),
    so chains like gate/up → SiLU → down convert once, not around every matmul.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, fmt: WeightFormat) -> None:
        self.fmt = fmt
        self.dtype = torch.float32 if fmt == "fp32" else torch.bfloat16
        self.bias = None if bias is None else bias.detach().float().contiguous()
        w = weight.detach().float()
        if fmt == "int8":
            scales = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0
            self.weight = (w / scales[:, None]).round().clamp(-127, 127).to(torch.int8)
            self.scales = scales.to(torch.bfloat16).contiguous()
        else:
            self.weight = w.to(self.dtype).contiguous()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype)
        if self.fmt == "int8":
            shape = x.shape
            y = torch._weight_int8pack_mm(x.reshape(-1, shape[-1]), self.weight, self.scales)
            y = y.view(*shape[:-1], -1)
        else:
            y = F.linear(x, self.weight)
        return y if self.bias is None else y + self.bias


def _linear_parts(parts: list[Any], fmt: WeightFormat) -> _Linear:
    """Several nn.Linear with one input fused into one (q/k/v, gate/up): fewer, larger matmuls."""
    weight = parts[0].weight if len(parts) == 1 else torch.cat([p.weight for p in parts])
    biases = [p.bias for p in parts]
    bias = None
    if any(b is not None for b in biases):
        bias = torch.cat([torch.zeros(p.out_features) if p.bias is None else p.bias for p in parts])
    return _Linear(weight, bias, fmt)


@dataclass
class _Layer:
    attn_norm: torch.Tensor
    qkv: _Linear
    out: _Linear
    mlp_norm: torch.Tensor
    gate_up: _Linear
    down: _Linear


class KVCache:
    """Keys and values of up to `slots` sequences: per layer (slots, kv_heads, capacity, head_dim).

    Running sequences occupy slots 0..n-1 (kept contiguous, so a step reads a view, not a copy);
    capacity grows by doubling as sequences get longer and is cut back when the cache empties.
    """

    def __init__(self, layers: int, slots: int, kv_heads: int, head_dim: int, limit: int) -> None:
        self.shape = (slots, kv_heads, head_dim)
        self.layers = layers
        self.limit = limit  # the model's context window
        self.capacity = 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.reserve(min(256, limit))

    def reserve(self, length: int) -> None:
        """Make room for `length` positions per slot (keeping what is stored)."""
        if length <= self.capacity:
            return
        capacity = min(self.limit, max(length, 2 * self.capacity))
        slots, heads, dim = self.shape
        for store in (self.keys, self.values):
            for i in range(self.layers):
                grown = torch.zeros(slots, heads, capacity, dim)
                if store[i:]:
                    grown[:, :, : self.capacity] = store[i]
                    store[i] = grown
                else:
                    store.append(grown)
        self.capacity = capacity

    def reset(self) -> None:
        """Free the memory of long sequences once nothing runs."""
        if self.capacity > 256:
            self.keys, self.values, self.capacity = [], [], 0
            self.reserve(min(256, self.limit))

    def move(self, source: int, target: int, length: int) -> None:
        """Copy slot `source`'s first `length` positions into slot `target` (compaction)."""
        for store in (self.keys, self.values):
            for layer in store:
                layer[target, :, :length] = layer[source, :, :length]


class DecoderModel:
    """The forward pass; sequences live in KVCache slots and are addressed by slot number."""

    def __init__(self, hf_model: Any, fmt: WeightFormat = "fp32") -> None:
        config = hf_model.config
        if config.model_type not in SUPPORTED_ARCHITECTURES:
            raise ModelNotFoundError(
                f"decoder architecture '{config.model_type}' is not supported by the runtime",
                f"use a model of one of: {', '.join(SUPPORTED_ARCHITECTURES)}",
            )
        self.config = config
        self.format: WeightFormat = fmt
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(getattr(config, "num_key_value_heads", None) or self.heads)
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // self.heads)
        self.eps = float(config.rms_norm_eps)
        self.context = int(config.max_position_embeddings)
        self.vocab_size = int(config.vocab_size)
        core = hf_model.model
        self.embed = core.embed_tokens.weight.detach().float().contiguous()
        self.rotary = core.rotary_emb
        self.norm = core.norm.weight.detach().float()
        self.layers = [
            _Layer(
                attn_norm=layer.input_layernorm.weight.detach().float(),
                qkv=_linear_parts(
                    [layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj], fmt
                ),
                out=_linear_parts([layer.self_attn.o_proj], fmt),
                mlp_norm=layer.post_attention_layernorm.weight.detach().float(),
                gate_up=_linear_parts([layer.mlp.gate_proj, layer.mlp.up_proj], fmt),
                down=_linear_parts([layer.mlp.down_proj], fmt),
            )
            for layer in core.layers
        ]
        self.lm_head = _linear_parts([hf_model.lm_head], fmt)
        self.intermediate = int(config.intermediate_size)

    def new_cache(self, slots: int) -> KVCache:
        return KVCache(len(self.layers), slots, self.kv_heads, self.head_dim, self.context)

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), weight, self.eps)

    def _blocks(
        self,
        hidden: torch.Tensor,
        positions: torch.Tensor,
        write: Any,
        attend: Any,
    ) -> torch.Tensor:
        """The transformer layers; `write` stores a layer's new keys/values, `attend` attends."""
        batch, steps, _ = hidden.shape
        cos, sin = self.rotary(hidden, positions)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (batch, 1, steps, head_dim)
        half = self.head_dim // 2
        rotated_heads = self.heads + self.kv_heads  # queries and keys are rotated together
        q_size = self.heads * self.head_dim
        for i, layer in enumerate(self.layers):
            qkv = layer.qkv(self._rms(hidden, layer.attn_norm)).float()
            qk = qkv[..., : rotated_heads * self.head_dim]
            qk = qk.view(batch, steps, rotated_heads, self.head_dim).transpose(1, 2)
            qk = qk * cos + torch.cat((-qk[..., half:], qk[..., :half]), dim=-1) * sin
            q, k = torch.split(qk, [self.heads, self.kv_heads], dim=1)
            v = qkv[..., rotated_heads * self.head_dim :]
            v = v.view(batch, steps, self.kv_heads, self.head_dim).transpose(1, 2)
            write(i, k, v)
            attended = attend(i, q, k, v)  # (batch, heads, steps, head_dim)
            hidden = hidden + layer.out(attended.transpose(1, 2).reshape(batch, steps, q_size))
            gate_up = layer.gate_up(self._rms(hidden, layer.mlp_norm))
            gate, up = torch.split(gate_up, self.intermediate, dim=-1)
            hidden = hidden + layer.down(F.silu(gate) * up)
        return hidden

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self._rms(hidden, self.norm)).float()

    @torch.inference_mode()
    def prefill(self, cache: KVCache, slot: int, tokens: list[int]) -> torch.Tensor:
        """Run a prompt into an empty slot; return the logits of its last position (vocab,)."""
        n = len(tokens)
        cache.reserve(n + 1)
        positions = torch.arange(n).unsqueeze(0)
        hidden = self.embed[torch.tensor(tokens)].unsqueeze(0)

        def write(i: int, k: torch.Tensor, v: torch.Tensor) -> None:
            cache.keys[i][slot, :, :n] = k[0]
            cache.values[i][slot, :, :n] = v[0]

        def attend(_: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

        hidden = self._blocks(hidden, positions, write, attend)
        # only the last position's logits are needed: the 49k-wide output layer runs once
        return self._logits(hidden[0, -1:])[0]

    @torch.inference_mode()
    def decode(self, cache: KVCache, lengths: list[int], tokens: list[int]) -> torch.Tensor:
        """One step for slots 0..len(tokens)-1: slot s holds lengths[s] positions and gets
        tokens[s] next. Returns logits (slots, vocab); the caller advances the lengths."""
        batch = len(tokens)
        cache.reserve(max(lengths) + 1)
        pos = torch.tensor(lengths)
        rows = torch.arange(batch)
        span = int(pos.max()) + 1
        # key j is visible to slot s when j <= lengths[s] (its past and the new token)
        mask = (torch.arange(span).unsqueeze(0) <= pos.unsqueeze(1)).view(batch, 1, 1, span)
        hidden = self.embed[torch.tensor(tokens)].unsqueeze(1)

        def write(i: int, k: torch.Tensor, v: torch.Tensor) -> None:
            cache.keys[i][rows, :, pos] = k[:, :, 0]
            cache.values[i][rows, :, pos] = v[:, :, 0]

        def attend(i: int, q: torch.Tensor, *_: torch.Tensor) -> torch.Tensor:
            keys = cache.keys[i][:batch, :, :span]
            values = cache.values[i][:batch, :, :span]
            return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=True)

        hidden = self._blocks(hidden, pos.unsqueeze(1), write, attend)
        return self._logits(hidden[:, 0])


def load_decoder(folder: Path, fmt: WeightFormat = "fp32") -> tuple[DecoderModel, Any]:
    """(model, tokenizer) from a Hugging Face causal-LM folder with safetensors weights."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmforge.models.classifier import quiet_transformers

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(
            f"folder {folder} has no config.json, so it is not a Hugging Face model",
            "point at a folder saved with save_pretrained()",
        )
    try:
        with quiet_transformers():
            hf_model = AutoModelForCausalLM.from_pretrained(
                folder, use_safetensors=True, dtype=torch.float32
            ).eval()
            tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as exc:
        raise CheckpointError(
            f"cannot load the decoder in {folder}: {first_line(exc, 160)}",
            "the folder is damaged or not a causal language model; use another",
        ) from exc
    return DecoderModel(hf_model, fmt), tokenizer
