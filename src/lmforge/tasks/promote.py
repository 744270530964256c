"""Promotion that cannot half-succeed: a version becomes production only once it has loaded.

:func:`check_version` loads a registered version as what serves its task would — a classifier
through :class:`Predictor`, an embedding model through :class:`Embedder` (both validate the
metadata, the labels against the head and run one short text), a decoder through
``load_decoder``, an assistant through ``open_assistant`` and one question — and raises a
one-line :class:`ModelUnavailableError` naming the damaged file when it cannot.
:func:`promote_version` checks first and only then changes the stages, in one registry
transaction; a refused promotion leaves the registry as it was. ``lmforge models promote`` and
the server's promote route both go through here (the server checks classifier and similarity
versions by loading them into its own pool, the version it will then serve).

It lives in the tasks stage because checking every task's versions needs the assistant and the
runtime, which the registry stage below them cannot import.
"""

from __future__ import annotations

from lmforge.assistant.assistant import open_assistant
from lmforge.errors import LmforgeError, ModelUnavailableError, describe_exception
from lmforge.models.meta import (
    ClassificationMeta,
    GenerationMeta,
    MultitaskMeta,
    PretrainMeta,
    RecommendationMeta,
    SimilarityMeta,
    read_model_meta,
)
from lmforge.registry import ModelVersion, Registry, StageChange
from lmforge.runtime.decoder import load_decoder
from lmforge.runtime.embedder import Embedder
from lmforge.runtime.multitask import MultitaskPredictor
from lmforge.runtime.predictor import PROBE_TEXT, Predictor
from lmforge.runtime.recommender import Recommender
from lmforge.settings import Settings, get_settings

__all__ = ["check_version", "promote_version"]


def check_version(
    version: ModelVersion, settings: Settings | None = None, *, backend: str | None = None
) -> None:
    """Load ``version`` completely, as serving it would (``backend``: the classifier backend to
    check, default the registered one); a one-line ModelUnavailableError when it cannot."""
    settings = settings or get_settings()
    meta = read_model_meta(version.path)
    if meta.task != version.task:
        raise ModelUnavailableError(
            f"{version.path / 'lmforge.json'} says task {meta.task}, the registry row of "
            f"{version.ref} {version.task}",
            "re-register the version",
        )
    try:
        if isinstance(meta, ClassificationMeta):
            Predictor(version.path, backend=backend, batch_size=1)
        elif isinstance(meta, SimilarityMeta):
            Embedder(version.path, max_length=meta.max_length, text_prefix=meta.text_prefix)
        elif isinstance(meta, GenerationMeta):
            load_decoder(version.path)
        elif isinstance(meta, RecommendationMeta):
            Recommender.load(version.path)
        elif isinstance(meta, MultitaskMeta):
            MultitaskPredictor(version.path, batch_size=1).predict_tasks([PROBE_TEXT])
        elif isinstance(meta, PretrainMeta):  # a base for later recipes: load it as one
            if meta.kind == "decoder":
                load_decoder(version.path)
            else:
                Embedder(version.path, max_length=meta.max_length, text_prefix=meta.text_prefix)
        else:
            opened = open_assistant(version.path, settings.cache_dir)
            opened.assistant.ask([PROBE_TEXT], opened.top_k)
    except LmforgeError as exc:
        if isinstance(exc, ModelUnavailableError):
            raise
        raise ModelUnavailableError(exc.problem, exc.fix) from exc
    except Exception as exc:  # what a library raises for a folder it cannot use
        raise ModelUnavailableError(
            f"cannot load {version.ref} from {version.path} ({describe_exception(exc)})",
            "the version folder is damaged; re-register it or use another version",
        ) from exc


def promote_version(
    ref: str,
    settings: Settings | None = None,
    *,
    registry: Registry | None = None,
    backend: str | None = None,
) -> StageChange:
    """Make the version ``ref`` names the production one once :func:`check_version` has loaded
    it; the previous production version is archived in the same transaction. Refused (the
    registry unchanged) with the check's one-line error. ``changed`` is False when the version
    already was in production (nothing is loaded then)."""
    registry = registry or Registry(settings)
    version = registry.get(ref)
    if version.stage == "production":
        return StageChange(version, changed=False)
    check_version(version, settings, backend=backend)
    return registry.promote(version.ref)  # the version checked, whatever ``ref`` names now
