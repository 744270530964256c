"""Llama-family and Gemma 3 decoders for serving: one readable forward pass over a slot-based
KV cache.

transformers' ``generate()`` decodes one request at a time (or a padded batch that starts and
ends together). A server needs requests to join and leave the running batch between steps, so
the runtime keeps its own cache (kv_cache.py): one row ("slot") per running sequence, each with
its own length. DecoderModel runs the same maths as ``LlamaForCausalLM`` (RMSNorm, rotary
positions, grouped-query attention, SwiGLU) on the weights of a loaded Hugging Face model.

There is one decoder class: what tells architectures apart is a handful of features in its
DecoderConfig (as litgpt's one ``GPT`` is configured by its ``Config``), each read from the
Hugging Face config or, where that leaves it implicit in the model type, from ARCHITECTURES.
Gemma 3, for one, adds query/key norms, norms of the attention's and the MLP's outputs, GELU,
scaled embeddings, RMSNorm weights stored as an offset from 1, and sliding-window layers with
their own rotary table. Rotary embeddings come from the HF model itself, so its RoPE variant
and scaling are used as they are.

The linears run in one of the weight formats of int8.py (fp32, bf16, int8 after SmoothQuant).
The 49k-row output layer is a fifth of the model's weights: it gets the same format, and runs
on one position per sequence only (never on a prompt's other positions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from lmforge.errors import CheckpointError, ModelNotFoundError, first_line
from lmforge.models.loading import from_pretrained
from lmforge.runtime.attention import decode_attention
from lmforge.runtime.decoder_config import ACTIVATIONS, DecoderConfig
from lmforge.runtime.int8 import (
    CALIBRATION_TEXTS,
    Linear,
    SmoothSite,
    WeightFormat,
    fused_linear,
    smooth_quant,
)
from lmforge.runtime.kv_cache import KVCache

__all__ = ["DecodeAttention", "DecoderModel", "load_decoder"]

# decoding rows' attention: our kernel (runtime/attention.py), or SDPA under a mask (the reference)
DecodeAttention = Literal["kernel", "sdpa"]


@dataclass
class _Layer:
    """One transformer layer's weights; the optional norms are there where the features ask."""

    attn_norm: torch.Tensor
    qkv: Linear
    out: Linear
    mlp_norm: torch.Tensor
    gate_up: Linear
    down: Linear
    window: int | None = None  # sliding-window attention: only the last `window` positions
    rope: str | None = None  # which rotary table (local and global layers use different ones)
    qk_norm: torch.Tensor | None = None  # RMSNorm per head of queries and keys: (heads, 1, dim)
    attn_out_norm: torch.Tensor | None = None  # RMSNorm of the attention's output
    mlp_out_norm: torch.Tensor | None = None  # RMSNorm of the MLP's output


class DecoderModel:
    """The forward pass; sequences live in KVCache slots and are addressed by slot number."""

    def __init__(
        self,
        hf_model: Any,
        fmt: WeightFormat = "fp32",
        calibration: list[list[int]] | None = None,
    ) -> None:
        config = DecoderConfig.from_hf(hf_model.config)
        features = config.features
        self.config = config
        self.format: WeightFormat = fmt
        self.attention: DecodeAttention = "kernel"
        self.activation = ACTIVATIONS[config.activation]

        def norm(module: Any) -> torch.Tensor:
            weight: torch.Tensor = module.weight.detach().float()
            return weight + features.norm_offset

        core = hf_model.model
        self.embed = core.embed_tokens.weight.detach().float().contiguous()
        self.embed_scale: torch.Tensor | None = None
        if features.scale_embeddings:
            self.embed_scale = core.embed_tokens.embed_scale.detach().float()
        self.rotary = core.rotary_emb
        self.norm = norm(core.norm)
        self.layers: list[_Layer] = []
        for i, layer in enumerate(core.layers):
            attention = layer.self_attn
            part = _Layer(
                attn_norm=norm(layer.input_layernorm),
                qkv=fused_linear([attention.q_proj, attention.k_proj, attention.v_proj]),
                out=fused_linear([attention.o_proj]),
                mlp_norm=norm(getattr(layer, features.mlp_norm)),
                gate_up=fused_linear([layer.mlp.gate_proj, layer.mlp.up_proj]),
                down=fused_linear([layer.mlp.down_proj]),
                window=config.windows[i],
                rope=config.rope_tables[i],
            )
            if features.qk_norm:
                q_norm = norm(attention.q_norm).expand(config.heads, -1)
                k_norm = norm(attention.k_norm).expand(config.kv_heads, -1)
                part.qk_norm = torch.cat([q_norm, k_norm]).unsqueeze(1)
            if features.post_norms:
                part.attn_out_norm = norm(layer.post_attention_layernorm)
                part.mlp_out_norm = norm(layer.post_feedforward_layernorm)
            self.layers.append(part)
        self.lm_head = fused_linear([hf_model.lm_head])
        if fmt == "int8" and calibration:
            smooth_quant(self._smooth_sites(), lambda: self._calibrate(calibration))
        if fmt != "fp32":
            self._convert(fmt)

    # --- reduced formats ------------------------------------------------------------------

    def _smooth_sites(self) -> list[SmoothSite]:
        """The linears SmoothQuant rescales, and where each one's input is divided in return:
        the RMSNorm weight before q/k/v, gate/up and the output layer, the up projection's rows
        before down."""
        up = slice(self.config.intermediate, None)
        sites: list[SmoothSite] = []
        for layer in self.layers:

            def fold_attn_norm(s: torch.Tensor, layer: _Layer = layer) -> None:
                layer.attn_norm = layer.attn_norm / s

            def fold_mlp_norm(s: torch.Tensor, layer: _Layer = layer) -> None:
                layer.mlp_norm = layer.mlp_norm / s

            def fold_up(s: torch.Tensor, layer: _Layer = layer) -> None:
                layer.gate_up.weight[up] /= s[:, None]
                if layer.gate_up.bias is not None:
                    layer.gate_up.bias[up] /= s

            sites += [
                SmoothSite(layer, "qkv", fold_attn_norm),
                SmoothSite(layer, "gate_up", fold_mlp_norm),
                SmoothSite(layer, "down", fold_up),
            ]

        def fold_norm(s: torch.Tensor) -> None:
            self.norm = self.norm / s

        return [*sites, SmoothSite(self, "lm_head", fold_norm)]

    def _calibrate(self, calibration: list[list[int]]) -> None:
        for tokens in calibration:
            self.prefill(self.new_cache(1), 0, tokens, every_position=True)

    def _convert(self, fmt: WeightFormat) -> None:
        for layer in self.layers:
            layer.qkv = layer.qkv.to_format(fmt)
            layer.out = layer.out.to_format(fmt)
            layer.gate_up = layer.gate_up.to_format(fmt)
            layer.down = layer.down.to_format(fmt)
        self.lm_head = self.lm_head.to_format(fmt)

    # --- the forward pass -----------------------------------------------------------------

    def new_cache(self, slots: int) -> KVCache:
        c = self.config
        return KVCache(c.layers, slots, c.kv_heads, c.head_dim, c.context)

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), weight, self.config.eps)

    def _blocks(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        write: Any,
        attend: Any,
    ) -> torch.Tensor:
        """The transformer layers over token ids (1, rows) at `positions` (1, rows); `write`
        stores a layer's new keys/values, `attend` attends."""
        hidden: torch.Tensor = self.embed[ids]
        if self.embed_scale is not None:
            hidden = hidden * self.embed_scale
        batch, steps, _ = hidden.shape
        heads, kv_heads, head_dim = self.config.heads, self.config.kv_heads, self.config.head_dim
        rotary = {}  # per rotary table: (cos, sin) as (batch, 1, steps, head_dim)
        for kind in {layer.rope for layer in self.layers}:
            cos, sin = self.rotary(hidden, positions, *([kind] if kind else []))
            rotary[kind] = cos.unsqueeze(1), sin.unsqueeze(1)
        half = head_dim // 2
        rotated_heads = heads + kv_heads  # queries and keys are rotated together
        q_size = heads * head_dim
        for i, layer in enumerate(self.layers):
            qkv = layer.qkv(self._rms(hidden, layer.attn_norm))
            qk = qkv[..., : rotated_heads * head_dim]
            qk = qk.view(batch, steps, rotated_heads, head_dim).transpose(1, 2)
            if layer.qk_norm is not None:
                qk = F.rms_norm(qk, (head_dim,), None, self.config.eps) * layer.qk_norm
            cos, sin = rotary[layer.rope]
            qk = qk * cos + torch.cat((-qk[..., half:], qk[..., :half]), dim=-1) * sin
            q, k = torch.split(qk, [heads, kv_heads], dim=1)
            v = qkv[..., rotated_heads * head_dim :]
            v = v.view(batch, steps, kv_heads, head_dim).transpose(1, 2)
            write(i, k, v)
            attended = attend(i, q, k, v)  # (batch, heads, steps, head_dim)
            out = layer.out(attended.transpose(1, 2).reshape(batch, steps, q_size))
            if layer.attn_out_norm is not None:
                out = self._rms(out, layer.attn_out_norm)
            hidden = hidden + out
            gate_up = layer.gate_up(self._rms(hidden, layer.mlp_norm))
            gate, up = torch.split(gate_up, self.config.intermediate, dim=-1)
            out = layer.down(self.activation(gate) * up)
            if layer.mlp_out_norm is not None:
                out = self._rms(out, layer.mlp_out_norm)
            hidden = hidden + out
        return hidden

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self._rms(hidden, self.norm))

    def _windows(self) -> set[int | None]:
        return {layer.window for layer in self.layers}

    @torch.inference_mode()
    def prefill(
        self, cache: KVCache, slot: int, tokens: list[int], every_position: bool = False
    ) -> torch.Tensor:
        """Run a prompt into an empty slot; return the logits of its last position (vocab,),
        or with `every_position` those of all positions (tokens, vocab) for scoring text."""
        n = len(tokens)
        scale = self.config.attention_scale
        cache.reserve(n + 1)
        positions = torch.arange(n)
        masks = {w: _prompt_mask(0, n, w) for w in self._windows()}

        def write(i: int, k: torch.Tensor, v: torch.Tensor) -> None:
            cache.keys[i][slot, :, :n] = k[0]
            cache.values[i][slot, :, :n] = v[0]

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            mask = masks[self.layers[i].window]
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None, scale=scale, enable_gqa=True
            )

        hidden = self._blocks(torch.tensor([tokens]), positions.unsqueeze(0), write, attend)
        if every_position:
            return self._logits(hidden[0])
        # only the last position's logits are needed: the 49k-wide output layer runs once
        return self._logits(hidden[0, -1:])[0]

    @torch.inference_mode()
    def step(
        self,
        cache: KVCache,
        lengths: Sequence[int],
        tokens: Sequence[int],
        prompts: Sequence[Sequence[int]] = (),
        offsets: Sequence[int] = (),
    ) -> torch.Tensor:
        """One pass for everything that runs. Slots 0..n-1 (n = len(tokens)) decode: slot s
        holds lengths[s] positions and gets tokens[s] next. Each prompt is prefilled into the
        next empty slot (n, n+1, ...). All their rows share the matmuls, so a request that
        arrives while others decode costs them part of one step, not a pass of its own.

        A prompt whose slot already holds the keys and values of its first `offsets[j]`
        positions (a reused prefix, see PrefixStore) passes only the tokens after them.

        Returns the logits of each decoding slot, then of each prompt's last position
        (n + len(prompts), vocab); the caller advances the lengths.
        """
        n = len(tokens)
        scale = self.config.attention_scale
        offsets = list(offsets) or [0] * len(prompts)
        ends = [offset + len(p) for offset, p in zip(offsets, prompts, strict=True)]
        cache.reserve(max([*lengths, *ends]) + 1)
        parts, start = [], n  # (slot, first row, length, offset) of each prompt
        for slot, (prompt, offset) in enumerate(zip(prompts, offsets, strict=True), start=n):
            parts.append((slot, start, len(prompt), offset))
            start += len(prompt)
        ids = torch.tensor([*tokens, *(t for p in prompts for t in p)])
        pos = torch.tensor(lengths, dtype=torch.long)
        positions = torch.cat(
            [pos, *(torch.arange(offset, offset + length) for _, _, length, offset in parts)]
        )
        rows = torch.arange(n)
        span = int(pos.max()) + 1 if n else 0
        # Decoding rows attend through the kernel from two rows up; a single row through SDPA,
        # where the kernel measured no faster and its thread pool may as well stay idle.
        kernel = self.attention == "kernel" and n > 1
        seen_until = pos + 1  # each decoding row's positions end after its new token

        def decoding_sees(window: int | None) -> torch.Tensor:
            """Each decoding row sees its slot's past and new token (within the window): for
            the kernel as each row's first visible position, for SDPA as a mask."""
            if not kernel:
                return _visible(pos, span, window).view(n, 1, 1, span)
            return torch.zeros_like(pos) if window is None else (seen_until - window).clamp(min=0)

        # per sliding window (None: none), what the decoding rows see and each prompt's mask
        masks = {
            w: (
                decoding_sees(w),
                [_prompt_mask(offset, length, w) for _, _, length, offset in parts],
            )
            for w in self._windows()
        }

        def write(i: int, k: torch.Tensor, v: torch.Tensor) -> None:  # (1, kv_heads, rows, dim)
            cache.keys[i][rows, :, pos] = k[0, :, :n].transpose(0, 1)
            cache.values[i][rows, :, pos] = v[0, :, :n].transpose(0, 1)
            for slot, first, length, offset in parts:
                cache.keys[i][slot, :, offset : offset + length] = k[0, :, first : first + length]
                cache.values[i][slot, :, offset : offset + length] = v[0, :, first : first + length]

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            decoding, prompt_masks = masks[self.layers[i].window]
            attended = []
            if kernel:  # each decoding row attends to its slot's cache
                one = q[0, :, :n].transpose(0, 1)  # (n, heads, dim)
                out = decode_attention(
                    one, cache.keys[i], cache.values[i], decoding, seen_until, scale
                )
                attended.append(out.transpose(0, 1).unsqueeze(0))
            elif n:
                keys = cache.keys[i][:n, :, :span]
                values = cache.values[i][:n, :, :span]
                one = q[0, :, :n].transpose(0, 1).unsqueeze(2)  # (n, heads, 1, dim)
                out = F.scaled_dot_product_attention(
                    one, keys, values, attn_mask=decoding, scale=scale, enable_gqa=True
                )
                attended.append(out.squeeze(2).transpose(0, 1).unsqueeze(0))
            for (slot, first, length, offset), seen in zip(parts, prompt_masks, strict=True):
                rows_of = slice(first, first + length)
                if seen is None:  # a whole prompt attends causally to itself
                    out = F.scaled_dot_product_attention(
                        q[:, :, rows_of],
                        k[:, :, rows_of],
                        v[:, :, rows_of],
                        is_causal=True,
                        scale=scale,
                        enable_gqa=True,
                    )
                else:  # its rows attend to its slot's cache, written above
                    end = offset + length
                    out = F.scaled_dot_product_attention(
                        q[:, :, rows_of],
                        cache.keys[i][slot : slot + 1, :, :end],
                        cache.values[i][slot : slot + 1, :, :end],
                        attn_mask=seen,
                        scale=scale,
                        enable_gqa=True,
                    )
                attended.append(out)
            return attended[0] if len(attended) == 1 else torch.cat(attended, dim=2)

        hidden = self._blocks(ids.unsqueeze(0), positions.unsqueeze(0), write, attend)
        last = [*range(n), *(first + length - 1 for _, first, length, _ in parts)]
        return self._logits(hidden[0, last])


def _visible(queries: torch.Tensor, keys: int, window: int | None) -> torch.Tensor:
    """The additive mask (len(queries), keys) of queries at positions `queries` over keys
    0..keys-1: key j is seen from position p when j <= p, and within a sliding window when
    p - j < window (as transformers' sliding_window_overlay)."""
    j = torch.arange(keys).unsqueeze(0)
    p = queries.unsqueeze(1)
    seen = j <= p
    if window is not None:
        seen &= j > p - window
    return _additive(seen)


def _prompt_mask(offset: int, length: int, window: int | None) -> torch.Tensor | None:
    """The mask of a prompt's `length` new positions after `offset` reused ones: None where
    causal attention over its own rows alone is exact (no reused prefix, and no sliding window
    shorter than the prompt), else the mask over its slot's positions 0..offset+length-1."""
    if offset == 0 and (window is None or length <= window):
        return None
    return _visible(torch.arange(offset, offset + length), offset + length, window)


def _additive(visible: torch.Tensor) -> torch.Tensor:
    """A boolean attention mask as 0 / -inf, built once per pass: SDPA would otherwise convert
    the boolean mask again in each of the layers."""
    return torch.zeros(visible.shape).masked_fill_(~visible, float("-inf"))


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
            hf_model = from_pretrained(
                AutoModelForCausalLM, folder, use_safetensors=True, dtype=torch.float32
            ).eval()
            tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as exc:
        raise CheckpointError(
            f"cannot load the decoder in {folder}: {first_line(exc, 160)}",
            "the folder is damaged or not a causal language model; use another",
        ) from exc
    calibration = [tokenizer(text)["input_ids"][:256] for text in CALIBRATION_TEXTS]
    return DecoderModel(hf_model, fmt, calibration), tokenizer
