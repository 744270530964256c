from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from transformers import PreTrainedModel

from conftest import NEGATIVE, POSITIVE
from lmforge.compress import export_onnx
from lmforge.compress.prune import CompressionError, PruneReport, prune_classifier, recover
from lmforge.models.classifier import (
    build_classifier,
    collate,
    load_classifier,
    load_tokenizer,
    pad_token_id,
    tokenize,
)

TEXTS = POSITIVE + NEGATIVE
LABELS = [1] * len(POSITIVE) + [0] * len(NEGATIVE)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def rows(tiny_base: Path) -> list[list[int]]:
    return tokenize(load_tokenizer(tiny_base), TEXTS, 32)


@pytest.fixture(scope="module")
def pad_id(tiny_base: Path) -> int:
    return pad_token_id(load_tokenizer(tiny_base))


def _classifier(tiny_base: Path) -> PreTrainedModel:
    torch.manual_seed(0)
    return build_classifier(tiny_base, ["negative", "positive"]).eval()


def _logits(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> np.ndarray:
    with torch.inference_mode():
        return np.asarray(model.eval()(**batch).logits.numpy())


def _head_weights(model: PreTrainedModel, layer: int, head: int) -> list[torch.Tensor]:
    """Everything a head owns: its query/key/value rows and attention output columns."""
    block = model.base_model.encoder.layer[layer].attention
    part = slice(head * 16, (head + 1) * 16)  # tiny_base: 2 heads of 16
    own = [getattr(block.self, n).weight[part] for n in ("query", "key", "value")]
    own += [getattr(block.self, n).bias[part] for n in ("query", "key", "value")]
    return [*own, block.output.dense.weight[:, part]]


@pytest.fixture(scope="module")
def pruned(
    tiny_base: Path, rows: list[list[int]], pad_id: int, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, PruneReport, np.ndarray]:
    """A pruned tiny classifier saved to a folder, its report and its in-memory logits."""
    model = _classifier(tiny_base)
    report = prune_classifier(
        model, rows, LABELS, pad_id=pad_id, head_fraction=0.25, ffn_fraction=0.5
    )
    folder = tmp_path_factory.mktemp("pruned")
    model.save_pretrained(str(folder))
    load_tokenizer(tiny_base).save_pretrained(str(folder))
    return folder, report, _logits(model, collate(rows, pad_id))


def test_pruning_shrinks_the_model_and_reports_it(
    pruned: tuple[Path, PruneReport, np.ndarray],
) -> None:
    _, report, _ = pruned
    assert (report.heads_before, report.heads_after) == (4, 3)
    assert sorted(report.heads_per_layer) == [1, 2]
    assert len(report.removed_heads) == 1
    assert (report.ffn_neurons_before, report.ffn_neurons_after) == (128, 64)
    # Each layer loses 32 neurons: 32 rows + 32 biases of the up-projection, 32 columns down.
    assert report.parameters_before - report.parameters_after == 2 * 32 * (32 + 1 + 32)
    assert report.masked_parameters == 3 * (16 * 32 + 16) + 32 * 16
    assert report.scored_rows == len(TEXTS)
    assert json.loads(json.dumps(report.to_json()))["removed_heads"] == [
        list(report.removed_heads[0])
    ]


def test_pruned_model_loads_back_with_plain_from_pretrained(
    pruned: tuple[Path, PruneReport, np.ndarray], rows: list[list[int]], pad_id: int
) -> None:
    folder, report, expected = pruned
    loaded = load_classifier(folder)
    assert loaded.config.intermediate_size == 32
    np.testing.assert_allclose(_logits(loaded, collate(rows, pad_id)), expected, atol=1e-5)
    layer, head = report.removed_heads[0]
    assert all(not w.any() for w in _head_weights(loaded, layer, head))


def test_pruned_model_exports_to_onnx_with_the_same_logits(
    pruned: tuple[Path, PruneReport, np.ndarray],
    rows: list[list[int]],
    pad_id: int,
    tmp_path: Path,
) -> None:
    folder, _, expected = pruned
    onnx_path = export_onnx(folder, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    batch = collate(rows, pad_id)
    got = session.run(["logits"], {k: batch[k].numpy() for k in ("input_ids", "attention_mask")})
    np.testing.assert_allclose(np.asarray(got[0]), expected, atol=1e-4)


@pytest.mark.parametrize("weak", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_the_least_important_head_and_neurons_are_the_ones_removed(
    tiny_base: Path, rows: list[list[int]], pad_id: int, weak: tuple[int, int]
) -> None:
    model = _classifier(tiny_base)
    weak_neurons = list(range(5, 21))  # 16 of 64: exactly what ffn_fraction=0.25 removes
    with torch.no_grad():
        # A head whose output barely reaches the residual stream matters least.
        _head_weights(model, *weak)[-1].mul_(0.01)
        # Neurons whose output is not used at all (in a random net, live ones can come close).
        for layer in model.base_model.encoder.layer:
            layer.output.dense.weight[:, weak_neurons] = 0.0
    original = copy.deepcopy(model)
    report = prune_classifier(
        model, rows, LABELS, pad_id=pad_id, head_fraction=0.25, ffn_fraction=0.25
    )
    assert report.removed_heads == (weak,)
    assert all(not w.any() for w in _head_weights(model, *weak))
    other = (weak[0], 1 - weak[1])
    assert _head_weights(model, *other)[0].any()  # its query rows (BERT biases start at 0)
    kept = [i for i in range(64) if i not in weak_neurons]
    for before, after in zip(
        original.base_model.encoder.layer, model.base_model.encoder.layer, strict=True
    ):
        torch.testing.assert_close(
            after.intermediate.dense.weight, before.intermediate.dense.weight[kept]
        )
        torch.testing.assert_close(
            after.intermediate.dense.bias, before.intermediate.dense.bias[kept]
        )
        torch.testing.assert_close(after.output.dense.weight, before.output.dense.weight[:, kept])


def test_max_rows_limits_the_scoring_sample(
    tiny_base: Path, rows: list[list[int]], pad_id: int
) -> None:
    report = prune_classifier(
        _classifier(tiny_base),
        rows,
        LABELS,
        pad_id=pad_id,
        head_fraction=0.0,
        ffn_fraction=0.0,
        max_rows=5,
    )
    assert report.scored_rows == 5
    assert report.parameters_after == report.parameters_before
    assert report.heads_after == report.heads_before and report.masked_parameters == 0


@pytest.mark.parametrize(
    ("heads", "ffn"), [(-0.1, 0.0), (1.0, 0.0), (0.0, 1.0), (0.0, 1.5), (float("nan"), 0.0)]
)
def test_fractions_outside_zero_to_one_are_refused(
    tiny_base: Path, rows: list[list[int]], pad_id: int, heads: float, ffn: float
) -> None:
    model = _classifier(tiny_base)
    with pytest.raises(CompressionError, match=r"fraction must be at least 0 and below 1"):
        prune_classifier(model, rows, LABELS, pad_id=pad_id, head_fraction=heads, ffn_fraction=ffn)


def test_rows_without_labels_are_refused(
    tiny_base: Path, rows: list[list[int]], pad_id: int
) -> None:
    with pytest.raises(CompressionError, match="labelled rows"):
        prune_classifier(
            _classifier(tiny_base),
            rows,
            LABELS[:3],
            pad_id=pad_id,
            head_fraction=0.25,
            ffn_fraction=0.0,
        )


def test_recovery_fine_tune_keeps_removed_heads_removed(
    tiny_base: Path, rows: list[list[int]], pad_id: int
) -> None:
    model = _classifier(tiny_base)
    original = copy.deepcopy(model)
    report = prune_classifier(
        model, rows, LABELS, pad_id=pad_id, head_fraction=0.5, ffn_fraction=0.25
    )
    before = [p.detach().clone() for p in model.parameters()]
    result = recover(
        original, model, rows, LABELS, pad_id=pad_id, epochs=2, learning_rate=1e-3, batch_size=4
    )
    assert result.steps == 8
    assert np.isfinite(result.final_loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    # Every gradient reaching a zeroed head is zero, so AdamW leaves it at zero.
    for layer, head in report.removed_heads:
        assert all(not w.any() for w in _head_weights(model, layer, head))
    assert model.config.intermediate_size == 48
