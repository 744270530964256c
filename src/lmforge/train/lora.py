"""The one LoRA helper of every fine-tune: which weights train (all, or low-rank adapters).

Encoders and decoders name their projections differently: an encoder classifier adapts the
recipe's ``adaptation.lora.target_modules`` as written (BERT's query/key/value/dense by default);
a decoder adapts Llama-style q/k/v/o and gate/up/down projections unless the recipe names its
own. Either way a name that is not a layer of the model is a one-line recipe error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from lmforge.errors import RecipeError
from lmforge.models.loading import MODEL_BUILD_LOCK
from lmforge.recipe.schema import DECODER_LORA_TARGETS, ENCODER_LORA_TARGETS, LoraConfig

Head = Literal["classifier", "causal_lm", "masked_lm"]


def adapt(
    model: Any,
    method: str,
    lora: LoraConfig | None,
    *,
    head: Head,
    freeze_embeddings: bool = False,
) -> Any:
    """``model`` ready to train: as it is for ``method="full"``, wrapped with LoRA adapters
    (peft) for ``"lora"``; the token-embedding table frozen when asked."""
    if freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    if method == "full":
        return model
    # peft pulls in much of transformers: only LoRA runs pay for it.
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    lora = lora or LoraConfig()
    names = {name.split(".")[-1] for name, _ in model.named_modules()}
    targets = _targets(lora, names, head)
    missing = [t for t in targets if t not in names]
    if missing or not targets:
        defaults = DECODER_LORA_TARGETS if head == "causal_lm" else ENCODER_LORA_TARGETS
        raise RecipeError(
            f"adaptation.lora.target_modules: {(missing or ['(none)'])[0]!r} is not a layer of "
            "this model",
            f"use layer names such as {', '.join(defaults)}",
        )
    # A classifier's pooler is pretrained but never tuned for the task; train it with the head.
    extra = ["pooler"] if head == "classifier" and "pooler" in names else []
    config = PeftLoraConfig(
        task_type=_TASK_TYPES[head],
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        modules_to_save=extra or None,
    )
    with MODEL_BUILD_LOCK:  # LoRA's init must not meet another thread's load
        return get_peft_model(model, config)


# peft's task type of each head (a masked-LM head has none: peft's plain wrapper passes the
# batch through unchanged)
_TASK_TYPES = {"classifier": "SEQ_CLS", "causal_lm": "CAUSAL_LM", "masked_lm": None}


def _targets(lora: LoraConfig, names: set[str], head: Head) -> list[str]:
    """The recipe's defaults are an encoder's layer names; a decoder not told otherwise gets
    its own projections (those it has)."""
    if head != "causal_lm" or "target_modules" in lora.model_fields_set:
        return list(lora.target_modules)
    return [t for t in DECODER_LORA_TARGETS if t in names]


def trainable_counts(model: Any) -> tuple[int, int]:
    """Parameters that train, and all parameters."""
    params: Sequence[Any] = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
