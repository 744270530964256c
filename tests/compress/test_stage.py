from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from conftest import LiveServer, serve_config, toy_recipe
from lmforge.compress.stage import compress_version
from lmforge.compress.tradeoff import choose_variant
from lmforge.compress.variants import REFERENCE, Variant
from lmforge.errors import DataError, RecipeError
from lmforge.recipe import parse_recipe
from lmforge.recipe.schema import CompressConfig
from lmforge.registry import Registry
from lmforge.runtime import Predictor
from lmforge.serve import KeyStore
from lmforge.settings import Settings
from lmforge.tasks import run_recipe

FAST = {
    "structures": ["original"],
    "bench_batch_size": 8,
    "bench_length": 16,
    "bench_seconds": 0.05,
    "latency_runs": 3,
}


@pytest.fixture
def toy_version(home: Settings, toy_csv: Path, tiny_base: Path) -> str:
    raw = toy_recipe(toy_csv, tiny_base, epochs=3)
    raw["registry"] = {"allow_below_baseline": True}  # a version to compress, whatever it learnt
    result = run_recipe(parse_recipe(raw), settings=home)
    assert result.version is not None
    return result.version.ref


def _variant(structure: str, fmt: str, accuracy: float, speed: float) -> Variant:
    v = Variant(structure, fmt, Path("."))
    v.accuracy, v.sequences_per_second = accuracy, speed
    return v


def test_gate_picks_the_fastest_within_budget_and_rejects_a_too_lossy_one() -> None:
    reference = _variant("original", "torch-fp32", 0.850, 100)
    ok = _variant("original", "onnx-int8-dynamic", 0.842, 300)
    too_lossy = _variant("distilled", "onnx-int8-dynamic", 0.830, 900)  # 2 points down
    slower = _variant("original", "torch-bf16", 0.851, 20)
    chosen = choose_variant([reference, ok, too_lossy, slower], reference, max_drop=1.0)
    assert chosen is ok
    assert too_lossy.delta_points == pytest.approx(-2.0) and not too_lossy.within_budget
    assert ok.speedup == 3.0
    assert choose_variant([reference, ok, too_lossy], reference, max_drop=2.0) is too_lossy
    assert choose_variant([reference, too_lossy, slower], reference, max_drop=0.5) is None


def test_the_fastest_backend_wins_whatever_its_format_and_ties_go_to_latency() -> None:
    reference = _variant("original", "torch-fp32", 0.850, 100)
    onnx = _variant("pruned", "onnx-int8-per-channel", 0.848, 300)
    torch_int8 = _variant("pruned", "torch-int8", 0.846, 310)
    assert choose_variant([reference, onnx, torch_int8], reference, max_drop=1.0) is torch_int8
    torch_int8.sequences_per_second = 300.0
    onnx.p50_ms, torch_int8.p50_ms = 3.0, 6.0
    assert choose_variant([reference, torch_int8, onnx], reference, max_drop=1.0) is onnx


def test_the_server_runs_the_backend_compress_chose(home: Settings, toy_version: str) -> None:
    """torch int8 chosen (as where it is the fastest) is registered and served as torch int8,
    not swapped for an ONNX file or the fp32 weights."""
    config = CompressConfig(max_accuracy_drop=100, **FAST)
    result = compress_version(
        toy_version, config, settings=home, variant_name="original/torch-int8"
    )
    assert result.chosen is not None and result.version is not None
    assert result.chosen.runtime_backend == "torch-int8"
    with LiveServer(serve_config(), home) as server:
        key = KeyStore(Registry(home).engine).create("p", ["predict"])[1]
        r = httpx.post(
            server.url + "/v1/predict",
            json={"model": result.version.ref, "inputs": ["a wonderful film"]},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
    assert r.status_code == 200, r.text
    assert r.json()["backend"] == "torch-int8"


def test_compress_registers_the_chosen_variant_with_its_parent(
    home: Settings, toy_version: str
) -> None:
    config = CompressConfig(
        formats=["torch-fp32", "onnx-fp32", "onnx-int8-per-channel", "onnx-int8-static"],
        max_accuracy_drop=100,  # a toy test split of 16 rows: the gate itself is tested above
        **FAST,
    )
    result = compress_version(toy_version, config, settings=home)
    names = [v.name for v in result.variants]
    assert names[0] == REFERENCE and len(names) == 4
    for v in result.variants:
        assert v.error is None, v.error
        assert v.accuracy is not None and v.sequences_per_second and v.p50_ms
    for name in ("tradeoff.json", "tradeoff.md", "tradeoff.png"):
        assert (result.run_dir / name).stat().st_size > 0
    assert result.chosen is not None and result.version is not None
    assert result.version.parent == toy_version
    assert result.version.version == 2
    folder = result.version.path
    assert (folder / "tradeoff.png").is_file()
    assert "| variant |" in (folder / "tradeoff.md").read_text()
    meta = json.loads((folder / "lmforge.json").read_text())
    assert meta["compression"] == {"variant": result.chosen.name, "parent": toy_version}
    predictor = Predictor(folder)
    assert predictor.backend.name == result.chosen.runtime_backend
    assert predictor.predict(["a wonderful film"])[0].label in {"negative", "positive"}


def test_nothing_registered_when_no_variant_qualifies(home: Settings, toy_version: str) -> None:
    # Only the reference itself: nothing can be faster within budget.
    config = CompressConfig(formats=["torch-fp32"], **FAST)
    with pytest.raises(RecipeError, match="nothing to try"):
        compress_version(toy_version, CompressConfig(formats=[], **FAST), settings=home)
    result = compress_version(toy_version, config, settings=home)
    assert result.chosen is None and result.version is None
    assert "nothing registered" in result.notes[-1]
    assert [v.version for v in Registry(home).list("toy")] == [1]


def test_unsupported_export_keeps_the_torch_variants(
    home: Settings, toy_version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    def unsupported(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Unsupported: ONNX export of operator foo")

    monkeypatch.setattr(torch.onnx, "export", unsupported)
    config = CompressConfig(
        formats=["torch-fp32", "torch-int8", "onnx-int8-dynamic"], max_accuracy_drop=100, **FAST
    )
    result = compress_version(toy_version, config, settings=home)
    by_name = {v.name: v for v in result.variants}
    assert "cannot export" in (by_name["original/onnx-int8-dynamic"].error or "")
    assert by_name["original/torch-int8"].error is None
    assert by_name["original/torch-int8"].accuracy is not None
    assert any("cannot export" in note for note in result.notes)


def test_bad_compress_settings_fail_before_any_work(home: Settings, toy_version: str) -> None:
    with pytest.raises(ValidationError, match="max_accuracy_drop"):
        CompressConfig(max_accuracy_drop=-0.5)
    with pytest.raises(ValidationError, match="calibration_rows"):
        CompressConfig(calibration_rows=4)
    with pytest.raises(RecipeError, match=r"distill.layers is 2 but the model has only 2"):
        compress_version(
            toy_version,
            CompressConfig(structures=["distilled"], **{"distill": {"layers": 2}}),
            settings=home,
        )


def test_too_small_calibration_set_names_the_minimum(
    home: Settings, toy_csv: Path, tiny_base: Path, tmp_path: Path
) -> None:
    raw = toy_recipe(toy_csv, tiny_base, epochs=1)
    raw["data"]["source"]["limit"] = 40  # type: ignore[index]
    raw["registry"] = {"allow_below_baseline": True}  # 3 steps: registered whatever it learnt
    result = run_recipe(parse_recipe(raw), settings=home)
    assert result.version is not None
    config = CompressConfig(formats=["onnx-int8-static"], **FAST)
    with pytest.raises(DataError, match=r"at least 32 training rows.* has 2[0-9]"):
        compress_version(result.version.ref, config, settings=home)


def test_pruned_and_distilled_structures_are_built_and_measured(
    home: Settings, toy_version: str
) -> None:
    config = CompressConfig(
        **{**FAST, "structures": ["original", "pruned", "distilled"]},
        formats=["torch-fp32", "onnx-int8-dynamic"],
        prune={"head_fraction": 0.5, "ffn_fraction": 0.5, "recovery_epochs": 1},
        distill={"layers": 1, "epochs": 1},
    )
    result = compress_version(toy_version, config, settings=home, register=False)
    assert [v.name for v in result.variants] == [
        "original/torch-fp32",
        "original/onnx-int8-dynamic",
        "pruned/torch-fp32",
        "pruned/onnx-int8-dynamic",
        "distilled/torch-fp32",
        "distilled/onnx-int8-dynamic",
    ]
    assert all(v.error is None and v.accuracy is not None for v in result.variants)
    distilled = json.loads((result.run_dir / "distilled" / "config.json").read_text())
    assert distilled["num_hidden_layers"] == 1
    pruned = json.loads((result.run_dir / "pruned" / "config.json").read_text())
    assert pruned["intermediate_size"] == 32
    meta = json.loads((result.run_dir / "pruned" / "lmforge.json").read_text())
    assert meta["structure"]["kind"] == "pruned"
    assert result.version is None and [v.version for v in Registry(home).list("toy")] == [1]
