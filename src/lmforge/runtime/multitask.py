"""A registered multi-task version behind one interface: every head from one encoder pass.

:class:`MultitaskPredictor` applies the version's cleaning, prefix and maximum length, runs the
shared encoder once per text (length-bucketed batches, as :class:`Predictor` does) and returns
each asked sub-task's :class:`Prediction`. Served by torch only (see tasks/multitask.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lmforge.data.text import clean_text
from lmforge.errors import LmforgeError, ModelUnavailableError, describe_exception
from lmforge.models.classifier import softmax
from lmforge.models.loading import LOAD_ERRORS
from lmforge.models.meta import ModelMeta, MultitaskMeta, read_model_meta
from lmforge.models.multitask import load_multitask
from lmforge.models.tokenizer import TextTokenizer
from lmforge.runtime.predictor import Prediction, length_buckets

#: One text's predictions, by sub-task name.
TaskPredictions = dict[str, Prediction]


class UnknownTaskError(LmforgeError):
    """A sub-task the version does not have (or none named, for a multi-task version)."""


def require_multitask(meta: ModelMeta, folder: Path) -> MultitaskMeta:
    """``meta`` if the folder holds a multi-task model; else a one-line error naming what serves
    the folder."""
    if isinstance(meta, MultitaskMeta):
        return meta
    raise LmforgeError(
        f"{folder} holds a {meta.task} model, not a multi-task one",
        f"serve it with {meta.served_by}",
    )


class MultitaskPredictor:
    """Load a multi-task model folder and classify texts for any of its sub-tasks."""

    backend = "torch-fp32"

    def __init__(self, folder: Path, *, batch_size: int = 32, threads: int | None = None) -> None:
        meta = require_multitask(read_model_meta(folder), folder)
        self.folder, self.meta = folder, meta
        self.tasks: list[str] = meta.task_names
        self.batch_size = batch_size
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            self.tokenizer = TextTokenizer(folder, meta.max_length, meta.text_prefix)
            self.model = load_multitask(folder, {h.name: len(h.labels) for h in meta.tasks})
        except LOAD_ERRORS as exc:
            raise ModelUnavailableError(
                f"the multi-task model in {folder} cannot be loaded ({describe_exception(exc)})",
                "the version folder is damaged; re-register it or use another version",
            ) from exc

    def check_tasks(self, tasks: Sequence[str]) -> list[str]:
        """``tasks`` if the version has each of them; else an :class:`UnknownTaskError`."""
        unknown = [t for t in tasks if t not in self.tasks]
        if unknown:
            raise UnknownTaskError(
                f"{self.folder.name} has no sub-task {unknown[0]!r}",
                f"use one of: {', '.join(self.tasks)}",
            )
        return list(tasks)

    @torch.inference_mode()
    def logits(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Every head's logits for every text (one encoder pass per text), in input order."""
        rows = self.tokenizer([clean_text(t, self.meta.cleaning) for t in texts])
        out = {h.name: np.zeros((len(rows), len(h.labels)), np.float32) for h in self.meta.tasks}
        for idx, ids, mask in length_buckets(rows, self.batch_size, self.tokenizer.pad_id):
            heads = self.model(torch.from_numpy(ids), torch.from_numpy(mask))
            for name, values in heads.items():
                out[name][idx] = values.float().numpy()
        return out

    def predict_tasks(
        self, texts: Sequence[str], tasks: Sequence[str] | None = None
    ) -> list[TaskPredictions]:
        """Each text's prediction for each of ``tasks`` (default: all), from one encoder pass."""
        wanted = self.check_tasks(tasks) if tasks is not None else self.tasks
        if not texts:
            return []
        logits = self.logits(texts)
        out: list[TaskPredictions] = [{} for _ in texts]
        for name in wanted:
            labels = self.meta.head(name).labels
            for i, row in enumerate(softmax(logits[name])):
                best = int(row.argmax())
                scores = {label: float(p) for label, p in zip(labels, row, strict=True)}
                out[i][name] = Prediction(texts[i], labels[best], float(row[best]), scores)
        return out

    def predict(self, texts: Sequence[str], task: str) -> list[Prediction]:
        """Each text's prediction for one sub-task."""
        return [p[task] for p in self.predict_tasks(texts, [task])]
