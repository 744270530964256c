"""Masked-language-model inputs: which tokens are hidden, and what they are replaced with.

A text is tokenized once into its token ids and its *units* — the groups of tokens masked
together. English (any text without Chinese characters) is masked by whole words: every
sub-word piece of a chosen word is hidden at once, since predicting ``##ably`` from ``unbeliev``
teaches little. A token holding Chinese characters is a unit of its own: a single character with
BERT-style tokenizers (which cut CJK text into characters), the smallest piece a sentencepiece
tokenizer has; a whole unspaced Chinese sentence is never one "word". Special tokens ([CLS],
[SEP], [UNK], padding) belong to no unit and are never masked.

Each unit is chosen with the recipe's probability; of the chosen tokens 80% become the mask
token, 10% a random (non-special) token and 10% stay as they are, and all of them are predicted
(BERT's rule). transformers' ``DataCollatorForLanguageModeling(whole_word_mask=True)`` is not
used: in 5.x it drops the random/kept 20% under whole-word masking and groups tokens by
contiguous offsets, which makes an unspaced Chinese sentence a single word. Token-level masking
(``whole_word: false``) follows the same code with one unit per token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lmforge.data.corpus import is_chinese

IGNORE = -100  # label of a position the loss skips
MASK_SHARE = 0.8  # of the chosen tokens: replaced by the mask token
RANDOM_SHARE = 0.1  # ... by a random token (the rest, 10%, stay as they are)


@dataclass(frozen=True)
class MlmRow:
    input_ids: list[int]
    units: list[int]  # the unit of each token (0, 1, …); -1 for special tokens


@dataclass(frozen=True)
class MaskingRule:
    """What a masked batch needs to know of the tokenizer, and the probability."""

    mask_id: int
    pad_id: int
    replacements: torch.Tensor  # the token ids a random replacement draws from
    probability: float = 0.15

    @classmethod
    def of(cls, tokenizer: Any, probability: float) -> MaskingRule:
        special = set(tokenizer.all_special_ids)
        ids = [i for i in range(len(tokenizer)) if i not in special]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return cls(tokenizer.mask_token_id, pad, torch.tensor(ids), probability)


def encode_mlm(
    tokenizer: Any, texts: Sequence[str], max_length: int, *, whole_word: bool = True
) -> list[MlmRow]:
    """Each text's token ids (with the model's special tokens) and units."""
    encoded = tokenizer(
        list(texts),
        truncation=True,
        max_length=max_length,
        return_special_tokens_mask=True,
        return_offsets_mapping=True,
    )
    # [UNK] is special too: predicting "unknown" teaches nothing
    specials = set(tokenizer.all_special_ids)
    rows = []
    for i, text in enumerate(texts):
        ids = encoded["input_ids"][i]
        special = encoded["special_tokens_mask"][i]
        offsets = encoded["offset_mapping"][i]
        words = encoded.word_ids(i) if whole_word and tokenizer.is_fast else [None] * len(ids)
        units: list[int] = []
        unit, previous = -1, None
        for j in range(len(ids)):
            if special[j] or ids[j] in specials:
                units.append(-1)
                previous = None
                continue
            start, end = offsets[j]
            alone = words[j] is None or is_chinese(text[start:end])
            if alone or words[j] != previous:
                unit += 1
            previous = None if alone else words[j]
            units.append(unit)
        rows.append(MlmRow(list(ids), units))
    return rows


def mask_batch(
    rows: Sequence[MlmRow],
    rule: MaskingRule,
    generator: torch.Generator | None = None,
    *,
    replace_all: bool = False,
) -> dict[str, torch.Tensor]:
    """One right-padded batch with units chosen and their tokens replaced: ``input_ids``,
    ``attention_mask``, and ``labels`` (the original token where chosen, else IGNORE).

    Without a ``generator`` the draws come from torch's global generator, which the training
    loop's checkpoints save, so a resumed run masks as the uninterrupted one would.
    ``replace_all`` hides every chosen token behind the mask token (evaluation: accuracy on
    what the model could not see)."""
    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), rule.pad_id, dtype=torch.long)
    units = torch.full((len(rows), width), -1, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row.input_ids)
        ids[i, :n] = torch.tensor(row.input_ids)
        units[i, :n] = torch.tensor(row.units)
        attention[i, :n] = 1
    # one draw per unit (a row has at most `width` units); a token takes its unit's draw
    draws = torch.rand((len(rows), width), generator=generator)
    chosen = (draws.gather(1, units.clamp(min=0)) < rule.probability) & (units >= 0)
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    how = torch.rand(ids.shape, generator=generator)
    if replace_all:
        masked, randomised = chosen, torch.zeros_like(chosen)
    else:
        masked = chosen & (how < MASK_SHARE)
        randomised = chosen & (how >= MASK_SHARE) & (how < MASK_SHARE + RANDOM_SHARE)
    picks = torch.randint(len(rule.replacements), ids.shape, generator=generator)
    inputs = torch.where(masked, torch.full_like(ids, rule.mask_id), ids)
    inputs = torch.where(randomised, rule.replacements[picks], inputs)
    return {"input_ids": inputs, "attention_mask": attention, "labels": labels}
