"""The reference a window of traffic is compared with: a classifier version's own validation
split, as that version sees it.

The split is rebuilt from the ``recipe.yaml`` registered with the version, by the same
``prepare_data`` that made it at training time (so it is the same rows); the version's runtime
predictor gives each text's predicted label and confidence, and the model's own encoder
(mean-pooled, L2-normalised: :class:`lmforge.runtime.Embedder`) its sentence embedding. That is
seconds to minutes of work, so it is done once per version and kept in the cache folder, in a
file keyed by the version and a digest of its files: a second ``lmforge monitor`` run, and the
server's scheduled runs, read it back in milliseconds; a version folder that changed is a new
key, never a stale hit.

A compressed version without torch weights (ONNX only) embeds with the nearest version it was
made from that has them; both windows are always embedded by the same encoder, which is what
the domain-classifier test needs.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.data.text import clean_text
from lmforge.errors import LmforgeError
from lmforge.models.meta import ClassificationMeta, read_model_meta, require_classifier
from lmforge.monitor.drift import Window
from lmforge.monitor.textstats import Encode
from lmforge.registry import ModelVersion, Registry
from lmforge.runtime import Predictor
from lmforge.runtime.embedder import Embedder
from lmforge.settings import Settings

#: Bumped when what the cache file holds changes: older files are then simply not found.
FORMAT = 1
#: The reference keeps at most this many validation rows (drawn with a fixed seed): the drift
#: detectors use at most 1,000 per side, and embedding more only costs time.
MAX_REFERENCE_ROWS = 2000
_WEIGHTS = ("model.safetensors", "model.onnx", "model.int8.onnx")


@dataclass(frozen=True)
class ReferenceData:
    """A version's validation split as it sees it: the (cleaned) texts, its predicted labels and
    confidences on them, and their sentence embeddings (None when no version in its lineage has
    encoder weights). ``encoder`` is the version whose encoder embedded them."""

    model: str
    version: int
    texts: list[str]
    labels: list[str]
    confidences: np.ndarray
    embeddings: np.ndarray | None
    encoder: str | None
    key: str  # the cache key: the version and a digest of its files
    cache_file: Path | None = None

    @property
    def ref(self) -> str:
        return f"{self.model}:v{self.version}"

    def prediction_window(self) -> Window:
        return Window(labels=self.labels, confidences=self.confidences)

    def text_window(self) -> Window:
        return Window(texts=self.texts, embeddings=self.embeddings)

    def describe(self) -> dict[str, Any]:
        """What the JSON report says of the reference."""
        counts: dict[str, int] = {}
        for label in self.labels:
            counts[label] = counts.get(label, 0) + 1
        rows = len(self.labels)
        return {
            "model": self.model,
            "version": self.version,
            "split": "validation",
            "rows": rows,
            "label_shares": {k: round(v / rows, 6) for k, v in sorted(counts.items())},
            "mean_confidence": round(float(np.mean(self.confidences)), 6) if rows else None,
            "embeddings": self.embeddings is not None,
            "encoder": self.encoder,
            "key": self.key,
        }


def load_reference(
    version: ModelVersion, settings: Settings, registry: Registry | None = None
) -> ReferenceData:
    """The reference of ``version``: from the cache when this version's files are unchanged,
    else built (predictor and encoder run over its validation split) and cached."""
    if version.task != "classification":
        raise LmforgeError(
            f"{version.ref} is a {version.task} model: drift is measured for classifiers",
            "monitor a classification model",
        )
    key = reference_key(version)
    path = settings.cache_dir / "monitor" / f"{version.name}-v{version.version}-{key}.npz"
    with _lock(path):
        if path.is_file():
            cached = _read(path, version, key)
            if cached is not None:
                return cached
        built = _build(version, key, registry or Registry(settings))
        _write(path, built)
    return ReferenceData(**{**built.__dict__, "cache_file": path})


def reference_key(version: ModelVersion) -> str:
    """A digest of what the reference depends on: the version (name, number, when it was
    registered), its recipe and metadata, and its weight files (size and modification time)."""
    digest = hashlib.sha256()
    digest.update(f"{FORMAT}|{version.ref}|{version.created_at.isoformat()}".encode())
    for name in ("recipe.yaml", "lmforge.json"):
        file = version.path / name
        digest.update(name.encode() + (file.read_bytes() if file.is_file() else b"-"))
    for name in _WEIGHTS:
        file = version.path / name
        if file.is_file():
            stat = file.stat()
            digest.update(f"{name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _build(version: ModelVersion, key: str, registry: Registry) -> ReferenceData:
    # Imported here: pandas and scikit-learn are seconds the server need not pay at start.
    from lmforge.data import prepare_data
    from lmforge.recipe import load_recipe

    recipe_file = version.path / "recipe.yaml"
    if not recipe_file.is_file():
        raise LmforgeError(
            f"{version.ref} has no recipe.yaml to rebuild its validation split from",
            "register versions through 'lmforge run' (it keeps the recipe)",
        )
    data = prepare_data(load_recipe(recipe_file).data)
    texts = [str(t) for t in data.validation["text"]]
    if len(texts) > MAX_REFERENCE_ROWS:
        keep = np.sort(np.random.default_rng(0).choice(len(texts), MAX_REFERENCE_ROWS, False))
        texts = [texts[i] for i in keep]
    predictor = Predictor(version.path)
    proba = predictor.predict_proba(texts)
    best = proba.argmax(axis=1)
    labels = [predictor.labels[i] for i in best]
    confidences = proba[np.arange(len(texts)), best].astype(np.float64)
    encoder = encoder_version(version, registry)
    embeddings = None
    if encoder is not None:
        embeddings = version_embedder(encoder.path, predictor.meta).embed(texts)
    return ReferenceData(
        model=version.name,
        version=version.version,
        texts=texts,
        labels=labels,
        confidences=confidences,
        embeddings=embeddings,
        encoder=encoder.ref if encoder is not None else None,
        key=key,
    )


def encoder_version(version: ModelVersion, registry: Registry) -> ModelVersion | None:
    """The version whose encoder embeds for ``version``: itself when it has torch weights,
    else the nearest version it was made from that has them (an ONNX-only compressed one)."""
    seen: set[str] = set()
    current: ModelVersion | None = version
    while current is not None and current.ref not in seen:
        if (current.path / "model.safetensors").is_file():
            return current
        seen.add(current.ref)
        try:
            current = registry.get(current.parent) if current.parent else None
        except LmforgeError:  # the parent was deleted: no encoder to embed with
            return None
    return None


def classifier_meta(version: ModelVersion) -> ClassificationMeta:
    return require_classifier(read_model_meta(version.path), version.path)


def unknown_token_counter(folder: Path) -> tuple[Encode, int] | None:
    """The version's tokenizer (text -> ids) and its unknown-token id, for the unknown-token
    detector; None when the tokenizer has no unknown token (byte-level BPE never needs one)."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        model = json.loads(tokenizer.to_str()).get("model", {})
    except Exception:  # no tokenizer.json, or one this library cannot read: no such detector
        return None
    unknown_id = model.get("unk_id")  # Unigram (SentencePiece) names the id ...
    if not isinstance(unknown_id, int):  # ... WordPiece and BPE the token
        token = model.get("unk_token")
        unknown_id = tokenizer.token_to_id(token) if isinstance(token, str) else None
    if unknown_id is None:
        return None
    tokenizer.no_truncation()

    def encode(text: str) -> list[int]:
        return list(tokenizer.encode(text).ids)

    return encode, int(unknown_id)


class VersionEmbedder:
    """Embeds texts as the reference was embedded: the version's own cleaning and text
    prefix, then the encoder's mean-pooled sentence embedding."""

    def __init__(self, folder: Path, meta: ClassificationMeta) -> None:
        self.meta = meta
        self.embedder = Embedder(folder, max_length=meta.max_length, text_prefix=meta.text_prefix)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        cleaned = [clean_text(t, self.meta.cleaning) for t in texts]
        return self.embedder.embed(cleaned)


@lru_cache(maxsize=2)
def _embedder(folder: str, meta_json: str) -> VersionEmbedder:
    return VersionEmbedder(Path(folder), ClassificationMeta.model_validate_json(meta_json))


def version_embedder(folder: Path, meta: ClassificationMeta) -> VersionEmbedder:
    """A loaded encoder for ``folder`` (the last two are kept: scheduled runs reuse them)."""
    return _embedder(str(folder), meta.model_dump_json())


_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(path: Path) -> threading.Lock:
    """One build per reference at a time in this process (scheduled runs may overlap)."""
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())


def _write(path: Path, ref: ReferenceData) -> None:
    """Write the cache file whole or not at all (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {
        "texts": np.array(ref.texts, dtype=str),
        "labels": np.array(ref.labels, dtype=str),
        "confidences": ref.confidences,
        "info": np.array(json.dumps({"encoder": ref.encoder, "key": ref.key})),
    }
    if ref.embeddings is not None:
        arrays["embeddings"] = ref.embeddings
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read(path: Path, version: ModelVersion, key: str) -> ReferenceData | None:
    """The cached reference; None when the file is unreadable (it is then rebuilt)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            info = json.loads(str(npz["info"]))
            if info.get("key") != key:
                return None
            embeddings = npz["embeddings"] if "embeddings" in npz.files else None
            return ReferenceData(
                model=version.name,
                version=version.version,
                texts=[str(t) for t in npz["texts"]],
                labels=[str(t) for t in npz["labels"]],
                confidences=np.asarray(npz["confidences"], dtype=np.float64),
                embeddings=None if embeddings is None else np.asarray(embeddings),
                encoder=info.get("encoder"),
                key=key,
                cache_file=path,
            )
    except (OSError, ValueError, KeyError):
        return None
