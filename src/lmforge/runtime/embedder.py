"""Sentence embeddings from an encoder: the mean of its last hidden states over real tokens.

Any folder with encoder weights (a catalogue base model, or a registered version, whose
classifier head is simply not used) embeds; vectors are L2-normalised, so a dot product is the
cosine similarity.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lmforge.errors import CheckpointError, ModelUnavailableError, describe_exception, first_line
from lmforge.models.loading import from_pretrained
from lmforge.models.tokenizer import TextTokenizer
from lmforge.runtime.backends import cpu_threads
from lmforge.runtime.predictor import PROBE_TEXT, length_buckets


class Embedder:
    def __init__(
        self,
        folder: Path,
        *,
        max_length: int = 256,
        text_prefix: str = "",
        batch_size: int = 32,
        threads: int | None = None,
    ) -> None:
        import torch
        from transformers import AutoModel

        from lmforge.models.classifier import quiet_transformers
        from lmforge.models.encoder import mean_pooled

        if not (folder / "model.safetensors").is_file():
            raise CheckpointError(
                f"{folder.name} has no encoder weights (model.safetensors) to embed with",
                "embed with a version that has them, or a catalogue encoder such as minilm-l6",
            )
        torch.set_num_threads(threads or cpu_threads())
        try:
            with quiet_transformers():
                self.model = from_pretrained(AutoModel, folder, use_safetensors=True).eval()
        except Exception as exc:  # transformers and huggingface_hub raise their own types too
            raise CheckpointError(
                f"cannot load the encoder in {folder} (config.json, model.safetensors): "
                f"{first_line(exc, 160)}",
                "the folder is damaged; use another version",
            ) from exc
        limit = int(getattr(self.model.config, "max_position_embeddings", max_length))
        self.tokenizer = TextTokenizer(folder, min(max_length, limit), text_prefix)
        self.dimensions = int(self.model.config.hidden_size)
        self.batch_size = batch_size
        self._torch = torch
        self._pool = mean_pooled
        self._check_loaded(folder)

    def _check_loaded(self, folder: Path) -> None:
        """Embed a short text once, now rather than on every request: a folder whose tokenizer
        and encoder disagree (ids beyond the vocabulary) is refused when it loads."""
        try:
            self.embed([PROBE_TEXT])
        except Exception as exc:  # any tokenizer or encoder failure: the folder is unusable
            raise ModelUnavailableError(
                f"the encoder in {folder} fails on a test text ({describe_exception(exc)})",
                "the folder is damaged; use another version",
            ) from exc

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised vector per text, in input order: shape (len(texts), dimensions)."""
        torch = self._torch
        rows = self.tokenizer(list(texts))
        out = np.zeros((len(rows), self.dimensions), dtype=np.float32)
        for idx, ids, mask in length_buckets(rows, self.batch_size, self.tokenizer.pad_id):
            attention = torch.from_numpy(mask)
            with torch.inference_mode():
                hidden = self.model(
                    input_ids=torch.from_numpy(ids), attention_mask=attention
                ).last_hidden_state
                out[idx] = self._pool(hidden, attention).numpy()
        return out
