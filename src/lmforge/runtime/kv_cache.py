"""The decoder's memory of running and finished sequences: the slot-based KV cache and the
prefix store.

KVCache holds the keys and values of the sequences that run now, one row ("slot") each, so
that sequences of different lengths join and leave the batch between steps. PrefixStore keeps
those of finished sequences, so that a prompt that starts like one of them (a chat template's
system prompt, a conversation's earlier turns) copies those positions instead of computing
them again. DecoderModel (decoder.py) writes and reads the cache; the generation engine
(generation.py) moves sequences between the two.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import torch

__all__ = ["KVCache", "PrefixStore"]


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
