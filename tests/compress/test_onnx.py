from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from lmforge.compress import (
    export_onnx,
    optimize_onnx,
    quantize_dynamic_int8,
    quantize_static_int8,
)
from lmforge.errors import LmforgeError
from lmforge.models.classifier import (
    build_classifier,
    collate,
    load_classifier,
    load_tokenizer,
    tokenize,
)

TEXTS = ["a wonderful film", "dull", "an utterly, completely tedious two hours", "fine"]


@pytest.fixture(scope="module")
def classifier_dir(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("classifier")
    torch.manual_seed(0)
    build_classifier(tiny_base, ["negative", "positive"]).save_pretrained(str(folder))
    load_tokenizer(tiny_base).save_pretrained(str(folder))
    return folder


def _logits(session: ort.InferenceSession, batch: dict[str, torch.Tensor]) -> np.ndarray:
    feeds = {name: batch[name].numpy() for name in ("input_ids", "attention_mask")}
    return np.asarray(session.run(["logits"], feeds)[0])


def _torch_batch_and_logits(folder: Path) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """TEXTS as one padded batch, and plain transformers' fp32 logits for it."""
    tokenizer = load_tokenizer(folder)
    batch = collate(tokenize(tokenizer, TEXTS, 32), int(tokenizer.pad_token_id or 0))
    with torch.inference_mode():
        return batch, load_classifier(folder).eval()(**batch).logits.numpy()


def test_onnx_fp32_matches_torch_and_int8_keeps_argmax(
    classifier_dir: Path, tmp_path: Path
) -> None:
    fp32 = export_onnx(classifier_dir, tmp_path / "model.onnx")
    int8 = quantize_dynamic_int8(fp32, tmp_path / "int8.onnx")
    assert int8.stat().st_size < fp32.stat().st_size
    batch, expected = _torch_batch_and_logits(classifier_dir)
    got = _logits(ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]), batch)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    quant = _logits(ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"]), batch)
    assert quant.shape == expected.shape
    assert np.abs(quant - expected).max() < 0.5
    assert not list(tmp_path.glob("*.tmp"))


def test_export_failure_is_a_clear_error_and_leaves_nothing(
    classifier_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Unsupported: ONNX export of operator foo")

    monkeypatch.setattr(torch.onnx, "export", unsupported)
    with pytest.raises(LmforgeError, match=r"cannot export .* to ONNX"):
        export_onnx(classifier_dir, tmp_path / "model.onnx")
    assert not list(tmp_path.iterdir())


def test_optimised_graph_matches_torch_and_static_int8_keeps_argmax(
    classifier_dir: Path, tmp_path: Path
) -> None:
    exported = export_onnx(classifier_dir, tmp_path / "export.onnx")
    fused = optimize_onnx(exported, tmp_path / "model.onnx", num_heads=2, hidden_size=32)
    ops = {node.op_type for node in onnx.load(str(fused)).graph.node}
    assert "Attention" in ops  # the optimiser really fused attention
    batch, expected = _torch_batch_and_logits(classifier_dir)
    got = _logits(ort.InferenceSession(str(fused), providers=["CPUExecutionProvider"]), batch)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    calibration = [(batch["input_ids"].numpy(), batch["attention_mask"].numpy())] * 8
    static = quantize_static_int8(fused, tmp_path / "static.onnx", calibration)
    quant = _logits(ort.InferenceSession(str(static), providers=["CPUExecutionProvider"]), batch)
    assert np.abs(quant - expected).max() < 0.5
    assert not list(tmp_path.glob("*.tmp"))


def test_static_int8_names_the_minimum_calibration_size(
    classifier_dir: Path, tmp_path: Path
) -> None:
    fp32 = export_onnx(classifier_dir, tmp_path / "model.onnx")
    ids = np.ones((4, 8), dtype=np.int64)
    with pytest.raises(LmforgeError, match="at least 32 rows, got 8"):
        quantize_static_int8(fp32, tmp_path / "static.onnx", [(ids, ids), (ids, ids)])
    assert not (tmp_path / "static.onnx").exists()


def test_a_failing_quantiser_leaves_no_temporary_files(
    classifier_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime.quantization as quantization

    fp32 = export_onnx(classifier_dir, tmp_path / "model.onnx")

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("quantiser bug")

    monkeypatch.setattr(quantization, "quantize_dynamic", broken)
    with pytest.raises(RuntimeError, match="quantiser bug"):
        quantize_dynamic_int8(fp32, tmp_path / "int8.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
