"""What `lmforge bench` times: the inputs every subject shares, and the subjects themselves —
a runtime backend, and the two baselines a user writes by hand (transformers fp32 eager, and
transformers' text-classification pipeline), each loaded on demand and timed the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lmforge.models.loading import from_pretrained
from lmforge.runtime.backends import Backend, load_backend
from lmforge.runtime.measure import (
    Latency,
    Throughput,
    measure_latency,
    measure_throughput,
    packed_rows,
    time_latency,
    time_throughput,
)


@dataclass
class BenchInputs:
    """What every subject is measured on: the same texts, token rows and packed batches."""

    texts: list[str]  # batch-1 texts, cleaned and prefixed as the model sees them
    rows: list[list[int]]  # their token ids, truncated to the version's max_length
    corpus: list[list[int]]  # every text's token ids, the material packed batches are cut from
    packed: dict[int, np.ndarray]  # rows of exactly L tokens per length L
    max_length: int
    batch_size: int
    _long: dict[int, list[str]] = field(default_factory=dict)

    def long_texts(self, length: int, decode: Callable[[np.ndarray], list[str]]) -> list[str]:
        """Texts of about 2 × ``length`` tokens (decoded packed rows), so a baseline truncating
        to ``length`` runs at exactly that length, as every backend does."""
        if length not in self._long:
            rows = packed_rows(self.corpus, 2 * length, len(self.packed[length]))
            self._long[length] = decode(rows[:, 1:-1])
        return self._long[length]


class Subject(Protocol):
    """One thing bench times: its size on disk, batch-1 latency and throughput per length and
    batch size."""

    size_mb: float | None

    def latency(self, runs: int) -> Latency: ...
    def throughput(self, length: int, min_seconds: float, batch_size: int) -> Throughput: ...


class BackendSubject:
    """A runtime backend of the version, as the server loads it."""

    def __init__(self, folder: Path, name: str, threads: int, inputs: BenchInputs) -> None:
        self.backend: Backend = load_backend(folder, name, threads=threads)
        self.inputs = inputs
        self.size_mb: float | None = self.backend.size_mb()

    def latency(self, runs: int) -> Latency:
        return measure_latency(self.backend, self.inputs.rows, runs=runs)

    def throughput(self, length: int, min_seconds: float, batch_size: int) -> Throughput:
        return measure_throughput(
            self.backend, self.inputs.packed[length], batch_size=batch_size, min_seconds=min_seconds
        )


class TorchEagerBaseline:
    """What a user writes by hand: from_pretrained in fp32 with transformers' default attention,
    the tokenizer's fixed-length padded output, ``torch.no_grad()``."""

    def __init__(self, folder: Path, threads: int, inputs: BenchInputs) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from lmforge.models.classifier import quiet_transformers

        torch.set_num_threads(threads)
        with quiet_transformers():
            self.model = from_pretrained(
                AutoModelForSequenceClassification,
                str(folder),
                dtype=torch.float32,  # transformers 5 defaults to the saved dtype
            )
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model.eval()
        self.inputs = inputs
        self.size_mb = _file_mb(folder / "model.safetensors")
        self._torch = torch

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> object:
        torch = self._torch
        with torch.no_grad():
            return self.model(
                input_ids=torch.from_numpy(input_ids),
                attention_mask=torch.from_numpy(attention_mask),
            ).logits

    def latency(self, runs: int) -> Latency:
        return measure_latency(self.forward, self.inputs.rows, runs=runs)

    def throughput(self, length: int, min_seconds: float, batch_size: int) -> Throughput:
        texts = self.inputs.long_texts(length, _decoder(self.tokenizer))
        encoded = self.tokenizer(
            texts, padding="max_length", truncation=True, max_length=length, return_tensors="np"
        )
        ids = np.asarray(encoded["input_ids"], dtype=np.int64)
        return measure_throughput(self.forward, ids, batch_size=batch_size, min_seconds=min_seconds)


class PipelineBaseline:
    """``transformers.pipeline("text-classification")`` on the CPU, timed end to end: texts in,
    labels out, its own tokenising and batching included."""

    def __init__(self, folder: Path, threads: int, inputs: BenchInputs) -> None:
        import torch
        from transformers import pipeline

        from lmforge.models.classifier import quiet_transformers

        torch.set_num_threads(threads)
        with quiet_transformers():
            self.pipe = pipeline(
                "text-classification", model=str(folder), tokenizer=str(folder), device=-1
            )
        self.inputs = inputs
        self.size_mb = _file_mb(folder / "model.safetensors")

    def latency(self, runs: int) -> Latency:
        texts, limit = self.inputs.texts, self.inputs.max_length
        return time_latency(
            lambda i: self.pipe(texts[i % len(texts)], truncation=True, max_length=limit),
            runs=runs,
        )

    def throughput(self, length: int, min_seconds: float, batch_size: int) -> Throughput:
        size = batch_size
        texts = self.inputs.long_texts(length, _decoder(self.pipe.tokenizer))
        batches = [texts[i : i + size] for i in range(0, len(texts) - size + 1, size)]
        return time_throughput(
            lambda i: self.pipe(
                batches[i % len(batches)], batch_size=size, truncation=True, max_length=length
            ),
            batch_size=size,
            length=length,
            min_seconds=min_seconds,
        )


def _decoder(tokenizer: Any) -> Callable[[np.ndarray], list[str]]:
    def decode(rows: np.ndarray) -> list[str]:
        return [str(t) for t in tokenizer.batch_decode(rows.tolist(), skip_special_tokens=True)]

    return decode


def _file_mb(path: Path) -> float | None:
    return path.stat().st_size / 1e6 if path.is_file() else None
