"""A registered classifier behind one interface, whatever backend computes it.

The predictor applies the version's own cleaning, text prefix and maximum length, batches by
length (sort, chunk while the padding stays small, pad each chunk to its own longest row) so
short texts never pay for long ones, and can keep an LRU cache of results keyed by the cleaned
text.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.data.text import clean_text
from lmforge.errors import LmforgeError, ModelUnavailableError, describe_exception
from lmforge.models.meta import META_FILE, ClassificationMeta, read_model_meta, require_classifier
from lmforge.models.tokenizer import TextTokenizer
from lmforge.runtime.backends import Backend, available_backends, load_backend

#: What a version is run on once when it loads, to prove its parts fit together.
PROBE_TEXT = "a short test text"


@dataclass(frozen=True)
class Prediction:
    """One text's classification: the best ``label``, its probability ``score``, and the
    probability of every label (``scores``)."""

    text: str
    label: str
    score: float
    scores: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "label": self.label, "score": self.score, "scores": self.scores}


#: Padding allowed in one call, as a share of its real tokens: rows are sorted by length and a
#: call takes the next row only while that keeps its padding under this (and under the batch
#: size). 25 % made 32-text requests of real snippets 1.3–1.6× faster per row than one call per
#: 32 rows padded to the longest (docs/benchmarks.md, "Dense length buckets").
MAX_PADDING = 0.25


def length_buckets(
    rows: Sequence[Sequence[int]], batch_size: int, pad_id: int, max_padding: float = MAX_PADDING
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(row indices, input_ids, attention_mask) per call: rows sorted by length, each call at
    most ``batch_size`` rows and padded to its longest, with padding tokens at most
    ``max_padding`` × its real tokens (a row that would break that starts the next call)."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    order = np.argsort(lengths, kind="stable")
    start = 0
    while start < len(order):
        stop, real = start + 1, int(lengths[order[start]])
        while stop < len(order) and stop - start < batch_size:
            longest = int(lengths[order[stop]])  # sorted: the new row is the longest
            if longest * (stop - start + 1) > (1 + max_padding) * (real + longest):
                break
            real += longest
            stop += 1
        idx = order[start:stop]
        width = int(lengths[idx].max())
        ids = np.full((len(idx), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(idx), width), dtype=np.int64)
        for j, i in enumerate(idx):
            ids[j, : lengths[i]] = rows[i]
            mask[j, : lengths[i]] = 1
        yield idx, ids, mask
        start = stop


class Predictor:
    """Load a model folder (a registered version) and classify texts.

    A folder of another task (similarity, generation, assistant) is refused with a one-line
    error naming what serves it.

    ``backend`` defaults to the one the version was registered for; any of
    :func:`available_backends` may be asked for instead.
    """

    def __init__(
        self,
        folder: Path,
        *,
        backend: str | None = None,
        batch_size: int = 32,
        cache_size: int = 0,
        threads: int | None = None,
    ) -> None:
        meta = require_classifier(read_model_meta(folder), folder)
        self.folder = folder
        self.meta: ClassificationMeta = meta
        self.labels: list[str] = list(meta.labels)
        self.text_prefix: str = meta.text_prefix
        self.max_length: int = meta.max_length
        self.cleaning = meta.cleaning
        self.batch_size = batch_size
        self.tokenizer = TextTokenizer(folder, self.max_length, self.text_prefix)
        self.backend: Backend = load_backend(folder, backend or meta.backend, threads=threads)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.cache_hits = 0
        self._check_loaded()

    def _check_loaded(self) -> None:
        """Refuse a folder whose parts disagree, now rather than on every request: the maximum
        length against the model's positions, and one forward pass on a short text, whose
        output must have one column per label."""
        meta_file = self.folder / META_FILE
        positions = _max_positions(self.folder)
        if positions is not None and self.max_length > positions:
            raise ModelUnavailableError(
                f"{meta_file} sets max_length {self.max_length}, over the model's "
                f"{positions} positions (config.json)",
                "correct max_length in lmforge.json, or re-register the version",
            )
        try:
            rows = self.tokenize([PROBE_TEXT])
            _, ids, mask = next(length_buckets(rows, 1, self.tokenizer.pad_id))
            shape = np.shape(self.backend(ids, mask))
        except LmforgeError:
            raise
        except Exception as exc:  # any backend or tokenizer failure: the folder is unusable
            raise ModelUnavailableError(
                f"the model in {self.folder} fails on a test text ({describe_exception(exc)})",
                "the version folder is damaged; re-register it or use another version",
            ) from exc
        if len(shape) != 2 or shape[0] != 1:
            raise ModelUnavailableError(
                f"the model in {self.folder} returns logits of shape {shape} for one text",
                "the version folder is damaged; re-register it or use another version",
            )
        if shape[1] != len(self.labels):
            raise ModelUnavailableError(
                f"{meta_file} lists {len(self.labels)} labels but the model's head has "
                f"{shape[1]} outputs",
                "correct the labels in lmforge.json (one per output, in order), or re-register",
            )

    @property
    def backends(self) -> list[str]:
        return available_backends(self.folder)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer([clean_text(t, self.cleaning) for t in texts])

    def logits_for_ids(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
        out = np.zeros((len(rows), len(self.labels)), dtype=np.float32)
        for idx, ids, mask in length_buckets(rows, self.batch_size, self.tokenizer.pad_id):
            out[idx] = self.backend(ids, mask)
        return out

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities, one row per text, in input order."""
        cleaned = [clean_text(t, self.cleaning) for t in texts]
        proba = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        todo = []
        for i, text in enumerate(cleaned):
            hit = self._cache.get(text) if self.cache_size else None
            if hit is None:
                todo.append(i)
            else:
                self._cache.move_to_end(text)
                self.cache_hits += 1
                proba[i] = hit
        if todo:
            logits = self.logits_for_ids(self.tokenizer([cleaned[i] for i in todo]))
            z = np.exp(logits - logits.max(axis=-1, keepdims=True))
            proba[todo] = z / z.sum(axis=-1, keepdims=True)
            if self.cache_size:
                for i in todo:
                    self._cache[cleaned[i]] = proba[i]
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return proba

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        if not texts:
            return []
        out = []
        for text, row in zip(texts, self.predict_proba(texts), strict=True):
            best = int(row.argmax())
            scores = {label: float(p) for label, p in zip(self.labels, row, strict=True)}
            out.append(Prediction(text, self.labels[best], float(row[best]), scores))
        return out


def _max_positions(folder: Path) -> int | None:
    """The positions the model can encode, from its config.json (None when it does not say:
    an ONNX-only folder, or a model without position embeddings)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # no config.json, or one the backend already refused
        return None
    positions = config.get("max_position_embeddings") if isinstance(config, dict) else None
    return positions if isinstance(positions, int) and positions > 0 else None
