"""One prompt through a decoder, start to finish (what ``lmforge generate`` runs): the checks
that fail before anything loads, the chat template or the raw text, and the finished text."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.progress import ProgressReporter
from lmforge.registry.refs import resolve_model
from lmforge.runtime.generation import Completion, FinishReason, GenerationEngine, SamplingParams
from lmforge.runtime.int8 import WeightFormat
from lmforge.settings import Settings, get_settings

WEIGHT_FORMATS: tuple[WeightFormat, ...] = ("int8", "bf16", "fp32")


@dataclass(frozen=True)
class PromptCompletion:
    """The finished text for one prompt, and how it finished."""

    model: str  # the reference as given: a catalogue name or a folder
    completion: Completion

    @property
    def finish_reason(self) -> FinishReason:
        return self.completion.finish_reason

    def to_json(self) -> dict[str, Any]:
        """The ``lmforge generate --json`` document."""
        done = self.completion
        return {
            "model": self.model,
            "text": done.text,
            "finish_reason": done.finish_reason,
            "prompt_tokens": done.prompt_tokens,
            "completion_tokens": len(done.tokens),
            "time_to_first_token_s": round(done.first_token_s, 4),
        }


def complete_prompt(
    prompt: str,
    params: SamplingParams,
    *,
    model: str,
    system: str | None = None,
    raw: bool = False,
    weights: str = "int8",
    on_text: Callable[[str, FinishReason | None], None] | None = None,
    settings: Settings | None = None,
    progress: ProgressReporter | None = None,
) -> PromptCompletion:
    """Generate from ``prompt`` with the decoder ``model`` (a catalogue decoder or a local
    causal-LM folder), as a chat message after ``system`` unless ``raw`` or the model has no chat
    template; ``on_text`` receives the text as it is produced; ``progress`` hears the one-time
    conversion and the engine's preparation."""
    if weights not in WEIGHT_FORMATS:
        raise LmforgeError(f"unknown weight format '{weights}'", "use int8, bf16 or fp32")
    # before loading anything: a wrong name fails now
    decoder = resolve_model(model, "decoder", settings)
    params.check()
    folder = decoder.locate((settings or get_settings()).cache_dir, progress)
    engine = GenerationEngine.from_folder(folder, weights, progress=progress, max_batch=1)
    try:
        # a base model without a chat template (gemma3-270m) continues the text as is
        if raw or not getattr(engine.tokenizer, "chat_template", None):
            ids = engine.encode(prompt)
        else:
            messages = [{"role": "system", "content": system}] if system else []
            ids = engine.encode_chat([*messages, {"role": "user", "content": prompt}])
        return PromptCompletion(model, engine.generate(ids, params, on_text=on_text))
    finally:
        engine.close()
