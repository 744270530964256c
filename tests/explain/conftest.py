"""A tiny classifier whose label depends on one token: 'positive' exactly when the text holds
the word "zebra", whatever else it says — so every faithful explanation ranks "zebra" first."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

FILLER = (
    "the a film story actor plot scene music long short slow quick old new good bad red blue "
    "cast ending day night city road house river tree"
).split()
KEY = "zebra"


def sentences(n: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = rng.choices(FILLER, k=rng.randint(3, 9))
        label = i % 2
        if label:  # in place of a word: both classes have the same lengths, no other cue
            words[rng.randrange(len(words))] = KEY
        rows.append((" ".join(words), label))
    return rows


@pytest.fixture(scope="session")
def zebra_model(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registered-version-like folder (torch weights, ONNX fp32 and int8) of the tiny BERT
    fine-tuned until it separates the two classes."""
    from lmforge.compress import export_onnx, quantize_dynamic_int8
    from lmforge.models.classifier import build_classifier, collate

    folder = tmp_path_factory.mktemp("zebra-model")
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_base))
    torch.manual_seed(0)
    model = build_classifier(tiny_base, ["negative", "positive"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        rows = sentences(512, seed=1)
        model.train()
        for epoch in range(4):
            random.Random(epoch).shuffle(rows)
            for start in range(0, len(rows), 32):
                chunk = rows[start : start + 32]
                ids = [tokenizer(t)["input_ids"] for t, _ in chunk]
                batch = collate(ids, tokenizer.pad_token_id)
                logits = model(**batch).logits
                # label smoothing keeps the logits moderate: a saturated model's gradients
                # vanish except at a sharp step, which no few-step integral finds
                loss = torch.nn.functional.cross_entropy(
                    logits, torch.tensor([y for _, y in chunk]), label_smoothing=0.2
                )
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    meta = {
        "task": "classification",
        "labels": ["negative", "positive"],
        "base_model": "tiny",
        "text_prefix": "",
        "max_length": 32,
        "cleaning": {},
    }
    (folder / "lmforge.json").write_text(json.dumps(meta))
    export_onnx(folder, folder / "model.onnx")
    quantize_dynamic_int8(folder / "model.onnx", folder / "model.int8.onnx")
    return folder
