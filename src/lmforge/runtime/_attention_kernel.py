"""The decode-attention kernel, compiled by numba (see attention.py, which imports this module
only when an engine starts or a decoder first attends: numba takes seconds to import)."""

from __future__ import annotations

from typing import Any

import numba
import numpy as np


@numba.njit(parallel=True, fastmath=True, nogil=True, cache=True)
def attend(
    queries: Any, keys: Any, values: Any, starts: Any, ends: Any, scale: float, out: Any
) -> None:
    rows, heads, dim = queries.shape
    kv_heads = keys.shape[1]
    group = heads // kv_heads
    for task in numba.prange(rows * kv_heads):
        row = task // kv_heads
        kv = task % kv_heads
        first = starts[row]
        length = ends[row] - first
        scores = np.empty((group, length), np.float32)
        for j in range(length):
            for g in range(group):
                total = np.float32(0.0)
                for d in range(dim):
                    total += queries[row, kv * group + g, d] * keys[row, kv, first + j, d]
                scores[g, j] = total * scale
        for g in range(group):
            top = scores[g, 0]
            for j in range(1, length):
                top = max(top, scores[g, j])
            mass = np.float32(0.0)
            for j in range(length):
                weight = np.exp(scores[g, j] - top)
                scores[g, j] = weight
                mass += weight
            for j in range(length):
                scores[g, j] /= mass
        mixed = np.zeros((group, dim), np.float32)
        for j in range(length):
            for g in range(group):
                weight = scores[g, j]
                for d in range(dim):
                    mixed[g, d] += weight * values[row, kv, first + j, d]
        for g in range(group):
            for d in range(dim):
                out[row, kv * group + g, d] = mixed[g, d]


def run(threads: int, *args: Any) -> None:
    """`attend` on `threads` threads (torch's count, so the two pools do not oversubscribe)."""
    threads = min(threads, numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
    if numba.get_num_threads() != threads:  # numba's setting is per calling thread
        numba.set_num_threads(threads)
    attend(*args)
