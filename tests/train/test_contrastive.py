"""Contrastive fine-tuning of an encoder on a tiny random BERT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lmforge.errors import DataError
from lmforge.runtime.embedder import Embedder
from lmforge.train.contrastive import fit_embeddings, save_encoder

pytestmark = pytest.mark.usefixtures("one_thread")

PAIRS = [
    ("reset password", "open settings and reset the password"),
    ("cancel plan", "billing page, cancel the plan"),
    ("download invoice", "invoices are in billing as pdf"),
    ("install package", "use apt to install the package"),
    ("upgrade kernel", "install a newer kernel image"),
    ("report bug", "use reportbug to report a bug"),
    ("change language", "the language is under preferences"),
    ("delete account", "contact support to delete the account"),
]


def mrr(embedder: Embedder) -> float:
    q = embedder.embed([p[0] for p in PAIRS])
    d = embedder.embed([p[1] for p in PAIRS])
    order = np.argsort(-(q @ d.T), axis=1)
    ranks = [int(np.where(order[i] == i)[0][0]) + 1 for i in range(len(PAIRS))]
    return float(np.mean([1 / r for r in ranks]))


def test_in_batch_negatives_pull_pairs_together(tiny_base: Path, tmp_path: Path) -> None:
    before = mrr(Embedder(tiny_base))
    fit = fit_embeddings(
        tiny_base, PAIRS, epochs=30, batch_size=8, learning_rate=1e-3, temperature=0.1,
        freeze_word_embeddings=False, seed=0,
    )  # fmt: skip
    assert fit.steps == 30 and fit.losses[-1] < fit.losses[0] / 2
    folder = save_encoder(fit.model, tiny_base, tmp_path / "tuned")
    after = mrr(Embedder(folder))  # what the runtime (and /v1/embed) computes from the folder
    assert after > before and after > 0.9


def test_word_embeddings_stay_frozen_by_default(tiny_base: Path) -> None:
    from transformers import AutoModel

    original = AutoModel.from_pretrained(tiny_base).get_input_embeddings().weight.detach().clone()
    fit = fit_embeddings(tiny_base, PAIRS, epochs=1, batch_size=4, learning_rate=1e-3)
    assert np.allclose(fit.model.get_input_embeddings().weight.detach().numpy(), original.numpy())


def test_too_few_pairs_is_a_clear_error(tiny_base: Path) -> None:
    with pytest.raises(DataError, match="at least 2 pairs"):
        fit_embeddings(tiny_base, PAIRS[:1])
