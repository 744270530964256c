"""Asking an assistant once, from scratch (what ``lmforge app assistant`` runs): check the
choice of FAQ or registered assistant, open it, answer, and optionally write an answer from the
cited entries with a decoder."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from lmforge.assistant.assistant import (
    Answer,
    build_assistant,
    grounded_request,
    open_assistant,
)
from lmforge.errors import LmforgeError
from lmforge.models.catalogue import covers_language
from lmforge.progress import ProgressReporter
from lmforge.registry.refs import resolve_model
from lmforge.settings import Settings, get_settings


def ask_assistant(
    questions: Iterable[str],
    *,
    faq: str | None = None,
    model: str | None = None,
    encoder: str | None = None,
    threshold: float | None = None,
    top_k: int | None = None,
    generate: bool = False,
    decoder: str = "smollm2-135m-instruct",
    settings: Settings | None = None,
    progress: ProgressReporter | None = None,
) -> list[Answer]:
    """Answer ``questions`` from the FAQ ``faq`` (default: debian_faq, with ``encoder``,
    default multilingual-e5-small) or from the registered assistant ``model``; ``threshold`` and
    ``top_k`` override the defaults or the registered values. With ``generate``, the decoder
    also writes an answer from the top entries for each answered question in a language it
    covers; ``progress`` hears one-time conversions and the engine's preparation.

    The choices are checked, and the models resolved, before ``questions`` is read: it may be a
    lazy iterable over stdin, and a wrong name should fail before the user types anything."""
    if model is not None and faq is not None:
        raise LmforgeError("give --faq or --model, not both", "drop one of them")
    if model is not None and encoder is not None:
        raise LmforgeError(
            "--encoder cannot change a registered assistant's encoder (its threshold was tuned "
            "for it)",
            "drop --encoder, or run its recipe with another model.base",
        )
    registered = resolve_model(model, "assistant", settings) if model is not None else None
    writer = resolve_model(decoder, "decoder", settings) if generate else None
    asked = list(questions)
    if not asked:
        raise LmforgeError("no question to answer", "pass questions as arguments or on stdin")
    cache_dir = (settings or get_settings()).cache_dir
    if registered is not None:
        opened = open_assistant(registered.locate(cache_dir, progress), cache_dir, threshold, top_k)
        assistant, top_k = opened.assistant, opened.top_k
    else:
        assistant = build_assistant(
            faq or "debian_faq",
            encoder=encoder or "multilingual-e5-small",
            threshold=threshold,  # None: the per-language defaults
            cache_dir=cache_dir,
        )
    answers = assistant.ask(asked, top_k or 3)
    if writer is None:
        return answers
    # the decoder loads torch's generation engine: only when an answer is to be written
    from lmforge.runtime.generation import GenerationEngine

    engine = GenerationEngine.from_folder(
        writer.locate(cache_dir, progress), "int8", progress=progress
    )
    try:
        for i, a in enumerate(answers):
            if a.answered and covers_language(decoder, a.language):
                prompt, params = grounded_request(engine, a, max_tokens=160)
                text = engine.generate(prompt, params, truncate=True).text.strip()
                answers[i] = dataclasses.replace(a, generated=text)
    finally:
        engine.close()
    return answers
