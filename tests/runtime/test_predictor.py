from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lmforge.errors import CheckpointError, LmforgeError, ModelUnavailableError
from lmforge.models.classifier import collate, load_classifier, load_tokenizer, tokenize
from lmforge.models.tokenizer import TextTokenizer
from lmforge.runtime import BACKENDS, Predictor, available_backends, length_buckets

TEXTS = [
    "a wonderful film",
    "dull",
    "an utterly, completely tedious two hours that never seem to end at all",
    "fine",
    "Ｆｕｌｌ-width  text\nwith   spaces",
    "i loved every minute of it and would watch it again tomorrow",
]


def reference_logits(folder: Path, texts: list[str], max_length: int = 32) -> np.ndarray:
    """Plain transformers, fp32, one padded batch: what every backend must agree with."""
    tokenizer = load_tokenizer(folder)
    batch = collate(tokenize(tokenizer, texts, max_length), int(tokenizer.pad_token_id or 0))
    with torch.inference_mode():
        return load_classifier(folder).eval()(**batch).logits.numpy()


def test_every_backend_is_available_in_a_full_folder(tiny_model_dir: Path) -> None:
    assert available_backends(tiny_model_dir) == list(BACKENDS)


def test_tokenizer_matches_transformers(tiny_model_dir: Path) -> None:
    hf = load_tokenizer(tiny_model_dir)
    ours = TextTokenizer(tiny_model_dir, max_length=12, prefix="query: ")
    assert ours(TEXTS) == tokenize(hf, TEXTS, 12, "query: ")
    assert ours.pad_id == hf.pad_token_id


@pytest.mark.parametrize("backend", ["torch-fp32", "onnx-fp32"])
def test_fp32_backends_match_transformers(tiny_model_dir: Path, backend: str) -> None:
    cleaned = [" ".join(t.split()) for t in TEXTS]  # what the default cleaning does here
    cleaned[4] = "Full-width text with spaces"
    expected = reference_logits(tiny_model_dir, cleaned)
    predictor = Predictor(tiny_model_dir, backend=backend, batch_size=4)
    got = predictor.logits_for_ids(predictor.tokenize(TEXTS))
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("backend", ["torch-bf16", "torch-int8", "onnx-int8"])
def test_reduced_precision_backends_stay_close(tiny_model_dir: Path, backend: str) -> None:
    fp32 = Predictor(tiny_model_dir, backend="torch-fp32")
    low = Predictor(tiny_model_dir, backend=backend)
    rows = fp32.tokenize(TEXTS * 4)
    expected, got = fp32.logits_for_ids(rows), low.logits_for_ids(rows)
    # A random tiny model has small logit margins, so compare values, then agreement where the
    # fp32 margin is clear of the quantisation error.
    assert np.abs(got - expected).max() < 0.1
    margin = np.abs(expected[:, 1] - expected[:, 0])
    clear = margin > 2 * np.abs(got - expected).max()
    assert (got.argmax(1) == expected.argmax(1))[clear].all()


def test_length_buckets_sort_and_pad_per_batch() -> None:
    rows = [[1] * n for n in (9, 2, 5, 3, 8)]
    batches = list(length_buckets(rows, batch_size=2, pad_id=0))
    assert [b[0].tolist() for b in batches] == [[1, 3], [2, 4], [0]]
    assert [b[1].shape[1] for b in batches] == [3, 8, 9]  # each batch as wide as its longest
    _, ids, mask = batches[0]
    assert mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    assert ids[0, 2] == 0


def test_length_buckets_keep_padding_under_a_quarter_of_the_real_tokens() -> None:
    rows = [[1] * n for n in (10, 2, 11, 12, 10, 40)]
    batches = list(length_buckets(rows, batch_size=8, pad_id=0))
    # 2 alone (10 beside it would be 8 pads for 12 tokens); 10, 10, 11, 12 together (5 pads for
    # 43 tokens); 40 alone (28 × 4 pads otherwise)
    assert [sorted(b[0].tolist()) for b in batches] == [[1], [0, 2, 3, 4], [5]]
    for _, ids, mask in batches:
        assert (mask.size - mask.sum()) <= 0.25 * mask.sum()
        assert (ids[mask == 0] == 0).all()  # the padding is pad_id
    assert sorted(i for b in batches for i in b[0].tolist()) == list(range(len(rows)))
    # without the padding rule (max_padding large), the batch size alone cuts
    loose = list(length_buckets(rows, batch_size=8, pad_id=0, max_padding=100))
    assert len(loose) == 1 and loose[0][1].shape == (6, 40)


def test_bucketing_does_not_change_results(tiny_model_dir: Path) -> None:
    predictor = Predictor(tiny_model_dir, backend="onnx-fp32", batch_size=2)
    together = predictor.predict_proba(TEXTS)
    alone = np.vstack([predictor.predict_proba([t]) for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_lru_cache_returns_the_same_answers_and_evicts(tiny_model_dir: Path) -> None:
    predictor = Predictor(tiny_model_dir, backend="onnx-fp32", cache_size=2)
    first = predictor.predict_proba(["a wonderful film", "dull"])
    again = predictor.predict_proba(["a  wonderful film", "dull"])  # same text once cleaned
    np.testing.assert_array_equal(first, again)
    assert predictor.cache_hits == 2
    predictor.predict_proba(["fine"])  # evicts the least recently used ("a wonderful film")
    predictor.predict_proba(["a wonderful film"])
    assert predictor.cache_hits == 2


def test_predictions_carry_labels_and_scores(tiny_model_dir: Path) -> None:
    predictions = Predictor(tiny_model_dir, backend="onnx-int8").predict(TEXTS[:2])
    assert [p.text for p in predictions] == TEXTS[:2]
    for p in predictions:
        assert p.label in {"negative", "positive"}
        assert abs(sum(p.scores.values()) - 1) < 1e-5
        assert p.score == max(p.scores.values())
    assert Predictor(tiny_model_dir, backend="onnx-int8").predict([]) == []


def test_registered_backend_is_the_default(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_model_dir, tmp_path / "m")
    meta = json.loads((folder / "lmforge.json").read_text())
    meta["runtime"] = {"backend": "onnx-int8"}
    (folder / "lmforge.json").write_text(json.dumps(meta))
    assert Predictor(folder).backend.name == "onnx-int8"
    assert Predictor(tiny_model_dir).backend.name == "torch-fp32"


def test_unknown_or_missing_backend_is_a_clear_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(LmforgeError, match=r"unknown backend 'tensorrt'.*choose one of"):
        Predictor(tiny_model_dir, backend="tensorrt")
    folder = shutil.copytree(tiny_model_dir, tmp_path / "m")
    (folder / "model.int8.onnx").unlink()
    with pytest.raises(LmforgeError, match=r"'onnx-int8' is not available.*lmforge compress"):
        Predictor(folder, backend="onnx-int8")


def test_corrupt_onnx_is_a_load_error_and_other_models_keep_working(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    good = Predictor(tiny_model_dir, backend="onnx-int8")
    folder = shutil.copytree(tiny_model_dir, tmp_path / "m")
    (folder / "model.int8.onnx").write_bytes(b"\x08\x07not a protobuf" * 50)
    with pytest.raises(ModelUnavailableError, match=r"cannot load the ONNX model .*corrupt"):
        Predictor(folder, backend="onnx-int8")
    assert good.predict(["still serving"])[0].label in {"negative", "positive"}


def test_corrupt_safetensors_is_a_load_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_model_dir, tmp_path / "m")
    (folder / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ModelUnavailableError, match=r"cannot load the model .*damaged"):
        Predictor(folder, backend="torch-fp32")


def test_damaged_metadata_or_tokenizer_is_a_clear_error(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = shutil.copytree(tiny_model_dir, tmp_path / "m")
    (folder / "lmforge.json").write_text("{not json")
    with pytest.raises(ModelUnavailableError, match=r"lmforge\.json is damaged"):
        Predictor(folder)
    shutil.copy2(tiny_model_dir / "lmforge.json", folder / "lmforge.json")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="cannot read the tokenizer"):
        Predictor(folder, backend="onnx-fp32")


def test_onnx_prediction_needs_neither_torch_nor_transformers(tiny_model_dir: Path) -> None:
    # Start-up time of a compressed model is dominated by what it imports.
    code = (
        "import sys; from pathlib import Path; from lmforge.runtime import Predictor;"
        f"p = Predictor(Path({str(tiny_model_dir)!r}), backend='onnx-int8');"
        "p.predict(['hello']);"
        "print(sorted(m for m in ('torch', 'transformers', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_truncated_weights_or_an_unknown_architecture_are_unavailable(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = shutil.copytree(tiny_model_dir, tmp_path / "m")
    weights = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(weights[: len(weights) // 2])  # an interrupted copy
    with pytest.raises(ModelUnavailableError, match=r"cannot load the model .*damaged") as info:
        Predictor(folder, backend="torch-fp32")
    assert "\n" not in info.value.message
    shutil.copy2(tiny_model_dir / "model.safetensors", folder / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "no-such-arch"}))
    with pytest.raises(ModelUnavailableError, match="cannot load the model"):
        Predictor(folder, backend="torch-fp32")


@pytest.mark.parametrize(
    ("task", "served_by"),
    [
        ("similarity", "Embedder and POST /v1/embed"),
        ("generation", "`lmforge generate` and POST /v1/chat/completions"),
        ("assistant", "`lmforge app assistant` and POST /v1/assistant/ask"),
    ],
)
def test_a_version_of_another_task_is_refused_in_one_line(
    tiny_model_dir: Path, tmp_path: Path, task: str, served_by: str
) -> None:
    folder = shutil.copytree(tiny_model_dir, tmp_path / "m")
    meta = {"task": task, "labels": [], "base_model": "tiny", "max_length": 32}
    (folder / "lmforge.json").write_text(json.dumps(meta))
    with pytest.raises(LmforgeError, match=f"holds a {task} model, not a classifier") as info:
        Predictor(folder)
    assert served_by in info.value.message and "\n" not in info.value.message


def _with_meta(tiny_model_dir: Path, tmp_path: Path, **changes: object) -> Path:
    folder = shutil.copytree(tiny_model_dir, tmp_path / "m")
    meta = json.loads((folder / "lmforge.json").read_text())
    (folder / "lmforge.json").write_text(json.dumps({**meta, **changes}))
    return folder


@pytest.mark.parametrize("backend", ["torch-fp32", "onnx-int8"])
def test_labels_that_do_not_match_the_head_are_refused_at_load(
    tiny_model_dir: Path, tmp_path: Path, backend: str
) -> None:
    folder = _with_meta(tiny_model_dir, tmp_path, labels=["a", "b", "c"])
    with pytest.raises(
        ModelUnavailableError, match="lists 3 labels but the model's head has 2 "
    ) as info:
        Predictor(folder, backend=backend)
    assert str(folder / "lmforge.json") in info.value.message and "\n" not in info.value.message


def test_a_max_length_beyond_the_models_positions_is_refused_at_load(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = _with_meta(tiny_model_dir, tmp_path, max_length=4096)  # the tiny BERT has 128
    with pytest.raises(ModelUnavailableError, match=r"max_length 4096, over the model's 128"):
        Predictor(folder, backend="onnx-fp32")


@pytest.mark.parametrize("content", [b"\x89garbage{{", b'["a list"]'])
def test_a_damaged_tokenizer_config_is_a_clear_error(
    tiny_model_dir: Path, tmp_path: Path, content: bytes
) -> None:
    folder = shutil.copytree(tiny_model_dir, tmp_path / "m")
    (folder / "tokenizer_config.json").write_bytes(content)
    with pytest.raises(CheckpointError, match=r"tokenizer settings .*tokenizer_config\.json"):
        Predictor(folder, backend="onnx-fp32")


def test_a_model_that_fails_on_a_test_text_is_refused_at_load(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # A tokenizer from a larger vocabulary than the model's embeddings: ids out of range.
    folder = shutil.copytree(tiny_model_dir, tmp_path / "m")
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    size = max(vocab.values()) + 1
    for token in ("a", "short", "test", "text"):
        vocab[token] = size + 1000
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(ModelUnavailableError, match="fails on a test text") as info:
        Predictor(folder, backend="torch-fp32")
    assert "\n" not in info.value.message


def test_an_encoder_that_fails_on_a_test_text_is_refused_at_load(
    tiny_base: Path, tmp_path: Path
) -> None:
    from lmforge.runtime.embedder import Embedder

    folder = shutil.copytree(tiny_base, tmp_path / "encoder")
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    size = max(vocab.values()) + 1
    for token in ("a", "short", "test", "text"):
        vocab[token] = size + 1000  # beyond the encoder's embeddings
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(ModelUnavailableError, match=r"encoder in .* fails on a test text") as info:
        Embedder(folder)
    assert "\n" not in info.value.message
