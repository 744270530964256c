"""Decode attention over a slot-based KV cache: one query per running sequence.

A decoding step attends each sequence's new query to its own slot's past keys and values. With
``scaled_dot_product_attention`` every slot is read up to the longest sequence's length under a
mask, and the flash kernel's tiling is made for long query blocks, not one row per sequence:
here it ran at 2–3× the time it takes just to read the cache. The kernel (_attention_kernel.py,
numba) reads each slot's visible positions once per kv head, scores all the query heads that
share them while the key is in cache, and skips what a sequence (or its sliding window) does not
see. It is compiled when an engine starts (`prepare`) and cached on disk by numba (next to the
module, or in numba's user cache directory); it releases the GIL, so the server's event loop
keeps streaming while a step attends. With one decoding row the decoder stays on SDPA (see
DecoderModel.step).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = ["decode_attention", "prepare"]


@functools.cache
def _kernel() -> Callable[..., None]:
    from lmforge.runtime._attention_kernel import run

    return run


def decode_attention(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    starts: torch.Tensor,
    ends: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Softmax attention of query row r (rows, heads, head_dim) over positions
    starts[r]..ends[r]-1 of cache slot r; `keys` and `values` are one layer of the cache
    (slots, kv_heads, capacity, head_dim), float32 and contiguous. Heads share kv heads in
    groups of heads // kv_heads, as in grouped-query attention. Returns (rows, heads, head_dim).
    """
    out = torch.empty(queries.shape)
    arrays: list[Any] = [queries.contiguous(), keys, values, starts, ends]
    _kernel()(torch.get_num_threads(), *(a.numpy() for a in arrays), np.float32(scale), out.numpy())
    return out


def prepare() -> None:
    """Compile the kernel (or load it from numba's cache) now rather than in the first step."""
    position = torch.zeros(1, dtype=torch.long)
    cache = torch.zeros(1, 1, 1, 1)
    decode_attention(torch.zeros(1, 1, 1), cache, cache, position, position + 1, 1.0)
