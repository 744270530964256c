"""Llama-family and Gemma 3 decoders for serving: one readable forward pass over a slot-based
KV cache.

transformers' ``generate()`` decodes one request at a time (or a padded batch that starts and
ends together). A server needs requests to join and leave the running batch between steps, so
this module keeps its own cache: one row ("slot") per running sequence, each with its own
length, and runs the same maths as ``LlamaForCausalLM`` (RMSNorm, rotary positions, grouped-query
attention, SwiGLU) on the weights of a loaded Hugging Face model; Gemma 3 adds a few norms,
GELU, scaled embeddings and sliding-window layers (see _Layer). Rotary embeddings come from the
HF model itself, so its RoPE variant and scaling are used as they are.

Weight formats: ``fp32`` (exact), ``bf16`` (half the memory traffic, but emulated on CPUs without
native bf16), ``int8`` (per-output-channel int8 weights with dynamically quantised activations,
fbgemm's int8 GEMM: a quarter of the traffic and 2.5–3.5× fp32's speed, for 1 row or 8; 8-bit
activations where the CPU has VNNI, 7-bit on AVX2 without it).
The 49k-row output layer is a fifth of the model's weights: it gets the same format, and runs
on one position per sequence only (never on a prompt's other positions).
"""

from __future__ import annotations

import collections
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from lmforge.errors import CheckpointError, ModelNotFoundError, first_line
from lmforge.hardware import cpu_has_int8_dot
from lmforge.models.loading import from_pretrained
from lmforge.runtime.attention import decode_attention

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "DecodeAttention",
    "DecoderModel",
    "KVCache",
    "PrefixStore",
    "WeightFormat",
    "load_decoder",
]

WeightFormat = Literal["fp32", "bf16", "int8"]
# decoding rows' attention: our kernel (runtime/attention.py), or SDPA under a mask (the reference)
DecodeAttention = Literal["kernel", "sdpa"]
SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2", "gemma3_text")


# Calibration for int8 (the activations' range per channel): varied everyday English, fixed so
# that a model quantises the same way every time it loads.
CALIBRATION_TEXTS = (
    "How do I reset my password? Open Settings, choose Account, then Reset password.",
    "The package manager downloads software from the archive, checks its signature and "
    "installs it together with the libraries it depends on.",
    "Once upon a time, a lighthouse keeper lived alone on a rocky island in the cold sea.",
    "Q: What is the capital of France? A: The capital of France is Paris.",
    "To bake bread, mix flour, water, salt and yeast, knead the dough, let it rise for two "
    "hours and bake it at 220 degrees for thirty minutes.",
    "The film was a delight: warm, funny and beautifully acted, though a little too long.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # prints 5",
    "In 1969, Apollo 11 landed on the Moon; Neil Armstrong and Buzz Aldrin walked on its "
    "surface while Michael Collins orbited above.",
    "Thank you for contacting support. We have received your request and will reply within "
    "24 hours. Your ticket number is 48213.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
)


_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
}

# Rows quantised together in one call: a decoding step's batch and the rows of a prompt joining
# it after a reused prefix fit one call; longer prompts go in groups. Groups of 32 score the
# perplexity of 16 (26.59 vs 26.55 with 8-bit activations, 27.934 vs 27.933 with 7-bit) and
# make a pass with 8 decoding rows and an 18-token prompt 0.71× as long (one call, not two).
_ROW_GROUP = 32


class _Linear:
    """y = x Wᵀ (+ b) in one of the weight formats; float32 in and out.

    int8 is fbgemm's dynamic quantisation: weights int8 per output channel, activations
    quantised per call (so no calibration), int8 × int8 products accumulated in int32. Its
    matmuls cost 1.1–1.8× as much for 8 rows as for 1, which is what batched decoding needs.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, fmt: WeightFormat) -> None:
        self.fmt = fmt
        w = weight.detach().float().contiguous()
        b = None if bias is None else bias.detach().float().contiguous()
        if fmt == "int8":
            scales = (w.abs().amax(dim=1).clamp(min=1e-8) / 127.0).double()
            zero = torch.zeros(w.shape[0], dtype=torch.long)
            with warnings.catch_warnings():
                # quantized tensors are deprecated in torch (the fbgemm kernels are not yet
                # replaced on CPU); torch is pinned, and tests load this path on every run
                warnings.simplefilter("ignore", UserWarning)
                qweight = torch.quantize_per_channel(w, scales, zero, 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(qweight, b)
            self.out_features = w.shape[0]
            # 7-bit activations where the CPU has no VNNI: its u8×s8 pair sums saturate int16
            self.reduce_range = not cpu_has_int8_dot()
        else:
            self.weight = w.to(torch.bfloat16 if fmt == "bf16" else torch.float32)
            self.bias = b

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.fmt == "int8":
            return self._int8(x.reshape(-1, x.shape[-1])).view(*x.shape[:-1], -1)
        if self.fmt == "bf16":
            y = F.linear(x.to(torch.bfloat16), self.weight).float()
            return y if self.bias is None else y + self.bias
        return F.linear(x, self.weight, self.bias)

    def _int8(self, x: torch.Tensor) -> torch.Tensor:
        """fbgemm quantises a call's activations with one scale, so many rows (a prompt) go in
        groups of similar magnitude: a token with "massive activations" (the first, in late
        layers) would otherwise flatten every other row of its call to a few levels."""
        if x.shape[0] <= _ROW_GROUP:
            out: torch.Tensor = torch.ops.quantized.linear_dynamic(
                x, self.packed, self.reduce_range
            )
            return out
        order = x.abs().amax(dim=1).argsort()
        y = torch.empty(x.shape[0], self.out_features)
        for rows in torch.split(order, _ROW_GROUP):
            y[rows] = torch.ops.quantized.linear_dynamic(x[rows], self.packed, self.reduce_range)
        return y


class _Recorder:
    """Passes through to a linear and keeps the largest |input| seen per input channel."""

    def __init__(self, inner: _Linear) -> None:
        self.inner = inner
        self.amax = torch.zeros(inner.weight.shape[1])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.amax = torch.maximum(self.amax, x.detach().abs().reshape(-1, x.shape[-1]).amax(0))
        return self.inner(x)


def _linear_parts(parts: list[Any], fmt: WeightFormat = "fp32") -> _Linear:
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
    # Gemma 3's additions (None for Llama-family layers)
    window: int | None = None  # sliding-window attention: only the last `window` positions
    rope: str | None = None  # which rotary table (local and global layers use different ones)
    qk_norm: torch.Tensor | None = None  # RMSNorm per head of queries and keys: (heads, 1, dim)
    attn_out_norm: torch.Tensor | None = None  # RMSNorm of the attention's output
    mlp_out_norm: torch.Tensor | None = None  # RMSNorm of the MLP's output


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

    def read(self, slot: int, length: int) -> torch.Tensor:
        """A copy of slot's first `length` positions: (layers, 2, kv_heads, length, head_dim)."""
        return torch.stack(
            [
                torch.stack((keys[slot, :, :length], values[slot, :, :length]))
                for keys, values in zip(self.keys, self.values, strict=True)
            ]
        )

    def write(self, slot: int, stored: torch.Tensor, length: int) -> None:
        """Put the first `length` positions of what `read` returned into slot `slot`."""
        self.reserve(length + 1)
        for layer, (keys, values) in enumerate(zip(self.keys, self.values, strict=True)):
            keys[slot, :, :length] = stored[layer, 0, :, :length]
            values[slot, :, :length] = stored[layer, 1, :, :length]


class PrefixStore:
    """Keys and values of finished sequences, for the prompts that start the same way.

    Chat prompts share the template's system prompt, and a conversation's next turn repeats
    the turns before it: the positions a new prompt shares with a stored sequence are copied
    into its slot instead of computed again (vLLM's automatic prefix caching, with whole
    sequences rather than blocks). Least recently used sequences leave first, so that at most
    `budget` positions are kept; a position of SmolLM2-135M takes 46 KB in float32.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.entries: collections.OrderedDict[tuple[int, ...], torch.Tensor] = (
            collections.OrderedDict()
        )

    @property
    def positions(self) -> int:
        return sum(map(len, self.entries))

    def keeps(self, length: int) -> bool:
        """Whether a sequence of `length` positions would be kept (so the caller can skip
        copying its keys and values out of the cache)."""
        return 0 < length <= self.budget

    def match(self, prompt: Sequence[int]) -> tuple[int, torch.Tensor | None]:
        """The longest stored prefix of `prompt` (its last token excepted: it must run, to give
        the logits of the first new token) and the stored keys and values that hold it."""
        wanted = tuple(prompt[:-1])
        best, found = 0, None
        for tokens in self.entries:
            shared = _shared_prefix(tokens, wanted)
            if shared > best:
                best, found = shared, tokens
        if found is None:
            return 0, None
        self.entries.move_to_end(found)
        return best, self.entries[found]

    def add(self, tokens: Sequence[int], stored: torch.Tensor) -> None:
        """Keep the keys and values `stored` (as KVCache.read gives them) of `tokens`."""
        key = tuple(tokens)
        if not self.keeps(len(key)):
            return
        for other in list(self.entries):
            if other[: len(key)] == key:  # already held by a longer sequence
                self.entries.move_to_end(other)
                return
            if key[: len(other)] == other:  # a shorter one this one replaces
                del self.entries[other]
        self.entries[key] = stored
        while self.positions > self.budget:
            self.entries.popitem(last=False)


def _shared_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """How many leading tokens a and b share (binary search over slice comparisons, which run
    in C: a 2,000-token prompt against a stored sequence costs microseconds)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low


class DecoderModel:
    """The forward pass; sequences live in KVCache slots and are addressed by slot number."""

    def __init__(
        self,
        hf_model: Any,
        fmt: WeightFormat = "fp32",
        calibration: list[list[int]] | None = None,
    ) -> None:
        config = hf_model.config
        if config.model_type not in SUPPORTED_ARCHITECTURES:
            raise ModelNotFoundError(
                f"decoder architecture '{config.model_type}' is not supported by the runtime",
                f"use a model of one of: {', '.join(SUPPORTED_ARCHITECTURES)}",
            )
        gemma = config.model_type == "gemma3_text"
        if gemma and (
            config.attn_logit_softcapping
            or config.final_logit_softcapping
            or config.use_bidirectional_attention
        ):
            raise ModelNotFoundError(
                "this Gemma 3 variant (logit soft-capping or bidirectional attention) is not "
                "supported by the runtime",
                "use a causal Gemma 3 text model without soft-capping",
            )
        self.config = config
        self.format: WeightFormat = fmt
        self.attention: DecodeAttention = "kernel"
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(getattr(config, "num_key_value_heads", None) or self.heads)
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // self.heads)
        self.eps = float(config.rms_norm_eps)
        self.context = int(config.max_position_embeddings)
        self.vocab_size = int(config.vocab_size)
        # Gemma 3: attention scaled by query_pre_attn_scalar, GELU in the MLP, RMSNorm weights
        # stored as an offset from 1, embeddings multiplied by sqrt(hidden size)
        self.scale = float(getattr(config, "query_pre_attn_scalar", None) or self.head_dim) ** -0.5
        activation = getattr(config, "hidden_activation", None) or config.hidden_act
        if activation not in _ACTIVATIONS:
            raise ModelNotFoundError(
                f"the decoder's MLP activation '{activation}' is not supported by the runtime",
                f"use a model whose activation is one of: {', '.join(_ACTIVATIONS)}",
            )
        self.activation = _ACTIVATIONS[activation]
        offset = 1.0 if gemma else 0.0

        def norm(module: Any) -> torch.Tensor:
            weight: torch.Tensor = module.weight.detach().float()
            return weight + offset

        core = hf_model.model
        self.embed = core.embed_tokens.weight.detach().float().contiguous()
        scale = getattr(core.embed_tokens, "embed_scale", None)
        self.embed_scale: torch.Tensor | None = None if scale is None else scale.detach().float()
        self.rotary = core.rotary_emb
        self.norm = norm(core.norm)
        kinds = list(getattr(config, "layer_types", None) or [])
        self.layers = []
        for i, layer in enumerate(core.layers):
            attention = layer.self_attn
            part = _Layer(
                attn_norm=norm(layer.input_layernorm),
                qkv=_linear_parts([attention.q_proj, attention.k_proj, attention.v_proj]),
                out=_linear_parts([attention.o_proj]),
                # Llama names its pre-MLP norm post_attention_layernorm; Gemma uses that name
                # for a norm of the attention's output and has a pre_feedforward_layernorm
                mlp_norm=norm(
                    layer.pre_feedforward_layernorm if gemma else layer.post_attention_layernorm
                ),
                gate_up=_linear_parts([layer.mlp.gate_proj, layer.mlp.up_proj]),
                down=_linear_parts([layer.mlp.down_proj]),
            )
            if gemma:
                part.window = config.sliding_window if kinds[i] == "sliding_attention" else None
                part.rope = kinds[i]
                q_norm = norm(attention.q_norm).expand(self.heads, -1)
                k_norm = norm(attention.k_norm).expand(self.kv_heads, -1)
                part.qk_norm = torch.cat([q_norm, k_norm]).unsqueeze(1)
                part.attn_out_norm = norm(layer.post_attention_layernorm)
                part.mlp_out_norm = norm(layer.post_feedforward_layernorm)
            self.layers.append(part)
        self.lm_head = _linear_parts([hf_model.lm_head])
        self.intermediate = int(config.intermediate_size)
        if fmt == "int8":
            self._smooth(calibration or [])
        if fmt != "fp32":
            self._convert(fmt)

    # --- reduced formats ------------------------------------------------------------------

    def _smooth(self, calibration: list[list[int]], alpha: float = 0.5) -> None:
        """SmoothQuant: move activation outliers into the weights before int8.

        A few channels of a linear's input (the SwiGLU product above all) run 100× larger than
        the rest, and one scale per row of activations would flatten everything else to zero.
        Dividing input channel j by s_j and multiplying weight column j by s_j leaves the
        product unchanged; s_j = max|x_j|^α / max|W_j|^(1-α) from a few calibration texts
        balances the two. The division is folded into what produces the input: the RMSNorm
        weight before q/k/v, gate/up and the output layer, the up projection's rows before down.
        """
        linears = [
            (i, name) for i in range(len(self.layers)) for name in ("qkv", "gate_up", "down")
        ]
        recorders: dict[tuple[int, str], _Recorder] = {}
        for i, name in linears:
            recorders[(i, name)] = _Recorder(getattr(self.layers[i], name))
            setattr(self.layers[i], name, recorders[(i, name)])
        head = _Recorder(self.lm_head)
        self.lm_head = head  # type: ignore[assignment]
        for tokens in calibration:
            self.prefill(self.new_cache(1), 0, tokens, every_position=True)
        for (i, name), recorder in recorders.items():
            setattr(self.layers[i], name, recorder.inner)
        self.lm_head = head.inner
        if not calibration:
            return

        def factor(recorder: _Recorder) -> torch.Tensor:
            weight = recorder.inner.weight.abs().amax(dim=0).clamp(min=1e-5)
            return (recorder.amax.clamp(min=1e-5) ** alpha / weight ** (1 - alpha)).clamp(min=1e-5)

        for i, layer in enumerate(self.layers):
            s = factor(recorders[(i, "qkv")])
            layer.attn_norm = layer.attn_norm / s
            layer.qkv.weight = layer.qkv.weight * s
            s = factor(recorders[(i, "gate_up")])
            layer.mlp_norm = layer.mlp_norm / s
            layer.gate_up.weight = layer.gate_up.weight * s
            s = factor(recorders[(i, "down")])
            layer.down.weight = layer.down.weight * s
            up = slice(self.intermediate, None)
            layer.gate_up.weight[up] /= s[:, None]
            if layer.gate_up.bias is not None:
                layer.gate_up.bias[up] /= s
        s = factor(head)
        self.norm = self.norm / s
        self.lm_head.weight = self.lm_head.weight * s

    def _convert(self, fmt: WeightFormat) -> None:
        for layer in self.layers:
            for name in ("qkv", "out", "gate_up", "down"):
                linear = getattr(layer, name)
                setattr(layer, name, _Linear(linear.weight, linear.bias, fmt))
        self.lm_head = _Linear(self.lm_head.weight, self.lm_head.bias, fmt)

    def new_cache(self, slots: int) -> KVCache:
        return KVCache(len(self.layers), slots, self.kv_heads, self.head_dim, self.context)

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), weight, self.eps)

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
        rotary = {}  # per rotary table: (cos, sin) as (batch, 1, steps, head_dim)
        for kind in {layer.rope for layer in self.layers}:
            cos, sin = self.rotary(hidden, positions, *([kind] if kind else []))
            rotary[kind] = cos.unsqueeze(1), sin.unsqueeze(1)
        half = self.head_dim // 2
        rotated_heads = self.heads + self.kv_heads  # queries and keys are rotated together
        q_size = self.heads * self.head_dim
        for i, layer in enumerate(self.layers):
            qkv = layer.qkv(self._rms(hidden, layer.attn_norm))
            qk = qkv[..., : rotated_heads * self.head_dim]
            qk = qk.view(batch, steps, rotated_heads, self.head_dim).transpose(1, 2)
            if layer.qk_norm is not None:
                qk = F.rms_norm(qk, (self.head_dim,), None, self.eps) * layer.qk_norm
            cos, sin = rotary[layer.rope]
            qk = qk * cos + torch.cat((-qk[..., half:], qk[..., :half]), dim=-1) * sin
            q, k = torch.split(qk, [self.heads, self.kv_heads], dim=1)
            v = qkv[..., rotated_heads * self.head_dim :]
            v = v.view(batch, steps, self.kv_heads, self.head_dim).transpose(1, 2)
            write(i, k, v)
            attended = attend(i, q, k, v)  # (batch, heads, steps, head_dim)
            out = layer.out(attended.transpose(1, 2).reshape(batch, steps, q_size))
            if layer.attn_out_norm is not None:
                out = self._rms(out, layer.attn_out_norm)
            hidden = hidden + out
            gate_up = layer.gate_up(self._rms(hidden, layer.mlp_norm))
            gate, up = torch.split(gate_up, self.intermediate, dim=-1)
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
        cache.reserve(n + 1)
        positions = torch.arange(n)
        masks = {w: _prompt_mask(0, n, w) for w in self._windows()}

        def write(i: int, k: torch.Tensor, v: torch.Tensor) -> None:
            cache.keys[i][slot, :, :n] = k[0]
            cache.values[i][slot, :, :n] = v[0]

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            mask = masks[self.layers[i].window]
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None, scale=self.scale, enable_gqa=True
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
                    one, cache.keys[i], cache.values[i], decoding, seen_until, self.scale
                )
                attended.append(out.transpose(0, 1).unsqueeze(0))
            elif n:
                keys = cache.keys[i][:n, :, :span]
                values = cache.values[i][:n, :, :span]
                one = q[0, :, :n].transpose(0, 1).unsqueeze(2)  # (n, heads, 1, dim)
                out = F.scaled_dot_product_attention(
                    one, keys, values, attn_mask=decoding, scale=self.scale, enable_gqa=True
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
                        scale=self.scale,
                        enable_gqa=True,
                    )
                else:  # its rows attend to its slot's cache, written above
                    end = offset + length
                    out = F.scaled_dot_product_attention(
                        q[:, :, rows_of],
                        cache.keys[i][slot : slot + 1, :, :end],
                        cache.values[i][slot : slot + 1, :, :end],
                        attn_mask=seen,
                        scale=self.scale,
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
