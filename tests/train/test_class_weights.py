"""training.class_weights: the balanced weights, the weighted loss the loop trains on, and the
key's place in the recipe (read by classification, refused elsewhere)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.utils.class_weight import compute_class_weight
from transformers import BertConfig, BertForSequenceClassification

from conftest import toy_recipe
from lmforge.data import prepare_data
from lmforge.errors import RecipeError
from lmforge.recipe import parse_recipe
from lmforge.registry.refs import resolve_base
from lmforge.settings import Settings
from lmforge.train import loop
from lmforge.train.class_weights import balanced_weights, classification_loss


def test_balanced_weights_match_scikit_learn_and_skip_absent_classes() -> None:
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2])
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    assert np.allclose(balanced_weights(labels, 3), expected)
    # class 3 has no row: weight 0, and the others are weighed among the present classes only
    assert np.allclose(balanced_weights(labels, 4), [*expected, 0.0])


def _model_and_batch() -> tuple[BertForSequenceClassification, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
    )
    model = BertForSequenceClassification(config).eval()
    batch = {
        "input_ids": torch.randint(1, 50, (6, 5)),
        "attention_mask": torch.ones(6, 5, dtype=torch.long),
        "labels": torch.tensor([0, 0, 0, 0, 1, 2]),
    }
    return model, batch


def test_none_is_the_models_own_loss_and_balanced_is_the_weighted_mean() -> None:
    model, batch = _model_and_batch()
    train_labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2])
    with torch.no_grad():
        plain = classification_loss("none", train_labels, 3)(model, batch)
        weighted = classification_loss("balanced", train_labels, 3)(model, batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.isclose(plain, torch.nn.functional.cross_entropy(logits, batch["labels"]))
    w = balanced_weights(train_labels, 3)
    nll = -torch.log_softmax(logits, -1)[torch.arange(6), batch["labels"]].numpy()
    row_w = w[batch["labels"].numpy()]
    assert float(weighted) == pytest.approx(float((row_w * nll).sum() / row_w.sum()), rel=1e-5)
    assert not torch.isclose(plain, weighted)


def test_fine_tune_trains_on_the_weighted_loss_when_asked(
    toy_csv: Path, tiny_base: Path, home: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    real = loop.classification_loss

    def spy(kind, labels, n):  # type: ignore[no-untyped-def]
        asked.append(kind)
        return real(kind, labels, n)

    monkeypatch.setattr(loop, "classification_loss", spy)
    recipe = parse_recipe(toy_recipe(toy_csv, tiny_base, epochs=6, class_weights="balanced"))
    data = prepare_data(recipe.data)
    base = resolve_base(recipe.model.base, "encoder", home.cache_dir)
    outcome = loop.fine_tune(recipe, data, base, tmp_path / "run")
    assert asked == ["balanced"]
    assert outcome.best["val_accuracy"] >= 0.8  # the toy task is still learnt


def test_the_key_is_refused_where_no_classifier_is_trained(toy_csv: Path, tiny_base: Path) -> None:
    raw = toy_recipe(toy_csv, tiny_base, class_weights="balanced")
    assert parse_recipe(raw).training.class_weights == "balanced"
    raw["task"] = "similarity"
    raw["data"]["source"]["pair_column"] = "sentiment"  # type: ignore[index]
    with pytest.raises(RecipeError, match="class_weights"):
        parse_recipe(raw)
