"""Masked-LM masking rules, measured over many draws on MiniLM's real tokenizer: special tokens
are never masked, whole words go together, a Chinese character is its own unit, and the chosen
tokens split 80/10/10 into mask / random / kept."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from lmforge.data.corpus import is_chinese
from lmforge.train.masking import IGNORE, MaskingRule, encode_mlm, mask_batch

TEXTS = [
    "Shares fell unbelievably sharply as investors fled",
    "Unemployment claims reach a record, unprecedented high",
    "中国股市今天大幅下跌",
    "Brexit talks 继续 in Brussels",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_base: Path) -> object:
    return AutoTokenizer.from_pretrained(tiny_base)


def test_units_group_word_pieces_and_split_chinese_into_characters(tokenizer: object) -> None:
    rows = encode_mlm(tokenizer, TEXTS, 64)
    tokens = tokenizer.convert_ids_to_tokens(rows[0].input_ids)  # type: ignore[attr-defined]
    # [CLS] and [SEP] belong to no unit; "unbelievably" is several pieces and one unit
    assert rows[0].units[0] == -1 and rows[0].units[-1] == -1
    units = rows[0].units
    pieces = [j for j, t in enumerate(tokens) if t.startswith("##")]
    assert pieces and all(units[j] == units[j - 1] for j in pieces)
    assert max(units) + 1 == 7  # seven words
    chinese = rows[2]
    inner = [u for u in chinese.units if u >= 0]
    known = [t for t in tokenizer.convert_ids_to_tokens(chinese.input_ids) if t != "[UNK]"]  # type: ignore[attr-defined]
    assert inner == list(range(len(inner))) and len(inner) == len(known) - 2  # [CLS], [SEP]
    assert len(inner) >= 5  # one unit per known character
    # token-level masking: one unit per non-special token
    flat = encode_mlm(tokenizer, TEXTS[:1], 64, whole_word=False)[0]
    assert [u for u in flat.units if u >= 0] == list(range(len(flat.units) - 2))


def test_special_tokens_are_never_masked_and_the_split_is_80_10_10(tokenizer: object) -> None:
    rows = encode_mlm(tokenizer, TEXTS * 8, 64)
    rule = MaskingRule.of(tokenizer, 0.15)
    special = set(tokenizer.all_special_ids)  # type: ignore[attr-defined]
    generator = torch.Generator().manual_seed(7)
    chosen_units = total_units = 0
    masked = randomised = kept = 0
    for _ in range(300):
        batch = mask_batch(rows, rule, generator)
        original = mask_batch(rows, MaskingRule(rule.mask_id, rule.pad_id, rule.replacements, 1e-9))
        labels = batch["labels"]
        chosen = labels != IGNORE
        is_special = torch.isin(original["input_ids"], torch.tensor(sorted(special)))
        assert not (chosen & is_special).any()  # never a special token (nor padding)
        assert torch.equal(batch["input_ids"][is_special], original["input_ids"][is_special])
        # a random replacement is never a special token either
        assert not torch.isin(
            batch["input_ids"][chosen], torch.tensor(sorted(special - {rule.mask_id}))
        ).any()
        got = batch["input_ids"][chosen]
        masked += int((got == rule.mask_id).sum())
        kept += int((got == labels[chosen]).sum())
        randomised += int(((got != rule.mask_id) & (got != labels[chosen])).sum())
        for i, row in enumerate(rows):
            units = torch.tensor(row.units)
            picked = chosen[i, : len(row.units)]
            # a unit is chosen whole or not at all
            for u in units[units >= 0].unique():
                inside = picked[units == u]
                assert bool(inside.all()) or not bool(inside.any())
            total_units += int(units.max()) + 1
            chosen_units += len(units[picked].unique())
    n = masked + randomised + kept
    assert chosen_units / total_units == pytest.approx(0.15, abs=0.01)
    assert masked / n == pytest.approx(0.8, abs=0.02)
    assert randomised / n == pytest.approx(0.1, abs=0.015)  # a random pick equal to itself
    assert kept / n == pytest.approx(0.1, abs=0.015)  # counts as kept: 1 in ~30k


def test_replace_all_hides_every_chosen_token_and_a_seed_repeats_the_masks(
    tokenizer: object,
) -> None:
    rows = encode_mlm(tokenizer, TEXTS, 64)
    rule = MaskingRule.of(tokenizer, 0.5)
    first = mask_batch(rows, rule, torch.Generator().manual_seed(0), replace_all=True)
    again = mask_batch(rows, rule, torch.Generator().manual_seed(0), replace_all=True)
    chosen = first["labels"] != IGNORE
    assert chosen.any() and (first["input_ids"][chosen] == rule.mask_id).all()
    assert torch.equal(first["input_ids"], again["input_ids"])


def test_chinese_detection_is_by_script() -> None:
    assert is_chinese("中国股市") and is_chinese("Brexit 继续")
    assert not is_chinese("Shares fell") and not is_chinese("café, naïve — ½")
