"""The decoder's linear layers in its weight formats, and the int8 quantisation behind the
fastest of them.

Weight formats: ``fp32`` (exact), ``bf16`` (half the memory traffic, but emulated on CPUs without
native bf16), ``int8`` (per-output-channel int8 weights with dynamically quantised activations,
fbgemm's int8 GEMM: a quarter of the traffic and 2.5–3.5× fp32's speed, for 1 row or 8; 8-bit
activations where the CPU has VNNI, 7-bit on AVX2 without it).

int8 needs SmoothQuant first (`smooth_quant`): a few input channels of a decoder's linears run
100× larger than the rest. This module knows nothing of the decoder's layout: the decoder names
the linears to smooth and what produces each one's input (`SmoothSite`), and runs its own
forward pass over the calibration texts.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from lmforge.hardware import cpu_has_int8_dot

__all__ = [
    "CALIBRATION_TEXTS",
    "ROW_GROUP",
    "Linear",
    "SmoothSite",
    "WeightFormat",
    "fused_linear",
    "smooth_quant",
]

WeightFormat = Literal["fp32", "bf16", "int8"]

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

# Rows quantised together in one call: a decoding step's batch and the rows of a prompt joining
# it after a reused prefix fit one call; longer prompts go in groups. Groups of 32 score the
# perplexity of 16 (26.59 vs 26.55 with 8-bit activations, 27.934 vs 27.933 with 7-bit) and
# make a pass with 8 decoding rows and an 18-token prompt 0.71× as long (one call, not two).
ROW_GROUP = 32


class Linear:
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

    def to_format(self, fmt: WeightFormat) -> Linear:
        """This fp32 linear's weights in another format (after SmoothQuant for int8)."""
        return Linear(self.weight, self.bias, fmt)

    def _int8(self, x: torch.Tensor) -> torch.Tensor:
        """fbgemm quantises a call's activations with one scale, so many rows (a prompt) go in
        groups of similar magnitude: a token with "massive activations" (the first, in late
        layers) would otherwise flatten every other row of its call to a few levels."""
        if x.shape[0] <= ROW_GROUP:
            out: torch.Tensor = torch.ops.quantized.linear_dynamic(
                x, self.packed, self.reduce_range
            )
            return out
        order = x.abs().amax(dim=1).argsort()
        y = torch.empty(x.shape[0], self.out_features)
        for rows in torch.split(order, ROW_GROUP):
            y[rows] = torch.ops.quantized.linear_dynamic(x[rows], self.packed, self.reduce_range)
        return y


def fused_linear(parts: Sequence[Any], fmt: WeightFormat = "fp32") -> Linear:
    """Several nn.Linear with one input fused into one (q/k/v, gate/up): fewer, larger matmuls."""
    weight = parts[0].weight if len(parts) == 1 else torch.cat([p.weight for p in parts])
    biases = [p.bias for p in parts]
    bias = None
    if any(b is not None for b in biases):
        bias = torch.cat([torch.zeros(p.out_features) if p.bias is None else p.bias for p in parts])
    return Linear(weight, bias, fmt)


@dataclass
class SmoothSite:
    """One fp32 linear for SmoothQuant to rescale: attribute `name` of `owner` holds it, and
    `fold(s)` divides input channel j of it by s_j where that input is produced (an RMSNorm's
    weight, or the rows of the projection before it)."""

    owner: Any
    name: str
    fold: Callable[[torch.Tensor], None]


class _Recorder:
    """Passes through to a linear and keeps the largest |input| seen per input channel."""

    def __init__(self, inner: Linear) -> None:
        self.inner = inner
        self.amax = torch.zeros(inner.weight.shape[1])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.amax = torch.maximum(self.amax, x.detach().abs().reshape(-1, x.shape[-1]).amax(0))
        return self.inner(x)


def smooth_quant(
    sites: Sequence[SmoothSite], calibrate: Callable[[], None], alpha: float = 0.5
) -> None:
    """SmoothQuant: move activation outliers into the weights before int8.

    A few channels of a linear's input (the SwiGLU product above all) run 100× larger than
    the rest, and one scale per row of activations would flatten everything else to zero.
    Dividing input channel j by s_j and multiplying weight column j by s_j leaves the
    product unchanged; s_j = max|x_j|^α / max|W_j|^(1-α) from a few calibration texts
    balances the two. `calibrate` runs the model over them while each site's linear records
    its inputs; the sites are then rescaled in order, so a fold into a linear (the up
    projection's rows, before down) lands on that linear's already rescaled weights.
    """
    recorders = [_Recorder(getattr(site.owner, site.name)) for site in sites]
    for site, recorder in zip(sites, recorders, strict=True):
        setattr(site.owner, site.name, recorder)
    try:
        calibrate()
    finally:
        for site, recorder in zip(sites, recorders, strict=True):
            setattr(site.owner, site.name, recorder.inner)
    for site, recorder in zip(sites, recorders, strict=True):
        linear = recorder.inner
        weight = linear.weight.abs().amax(dim=0).clamp(min=1e-5)
        s = (recorder.amax.clamp(min=1e-5) ** alpha / weight ** (1 - alpha)).clamp(min=1e-5)
        site.fold(s)
        linear.weight = linear.weight * s
