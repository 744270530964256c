"""Batching rules of the training loop: which rows go together, in which order, each epoch.

Both are deterministic in (seed, epoch), so that a resumed run sees the batches it would have.
"""

from __future__ import annotations

import math

import numpy as np

MEGABATCH = 50  # batches shuffled together, then length-sorted: little padding, still random


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch, grouped by length: shuffled, then sorted by length within
    megabatches, then the batches shuffled. Deterministic in (seed, epoch), so a resumed run
    sees the same; padding per batch is where most of the CPU speed on short texts comes from."""
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(lengths))
    batches: list[list[int]] = []
    mega = batch_size * MEGABATCH
    for start in range(0, len(perm), mega):
        chunk = perm[start : start + mega]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size].tolist() for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def shuffled_batches(
    n: int, batch_size: int, seed: int, epoch: int, *, drop_last: bool = False
) -> list[list[int]]:
    """The batches of one epoch in random order: the ``epoch``-th permutation drawn from one
    generator seeded with ``seed``, cut in order (one partial batch at the end, or none with
    ``drop_last`` unless it is the only one)."""
    rng = np.random.default_rng(seed)
    for _ in range(epoch):  # the epochs before, drawn and thrown away: any epoch can be resumed
        rng.permutation(n)
    order = rng.permutation(n)
    count = max(1, n // batch_size) if drop_last else math.ceil(n / batch_size)
    return [order[i * batch_size : (i + 1) * batch_size].tolist() for i in range(count)]
