"""End to end on the real shipped models and real data, on small slices so CI stays quick."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from conftest import LiveServer, serve_config
from lmforge import Predictor, Registry, load_recipe, run_recipe
from lmforge.settings import Settings

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def small_english_recipe(tmp_path: Path, **training: object) -> Path:
    recipe = yaml.safe_load((EXAMPLES / "sentiment-en.yaml").read_text())
    recipe["name"] = "rt-small"
    recipe["data"]["source"]["limit"] = 500
    recipe["training"].update({"epochs": 2, "batch_size": 16, "eval_every_steps": 5, **training})
    recipe["training"]["early_stopping"] = {"enabled": False}
    path = tmp_path / "rt-small.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_minilm_run_predict_and_registry_round_trip(home: Settings, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lmforge.cli", "run", str(small_english_recipe(tmp_path)), "--json"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    version = report["version"]
    assert version["ref"] == "rt-small:v1"
    assert version["base_model"] == "minilm-l6"
    # 400 real training rows already beat the majority baseline.
    test, majority = version["test_metrics"], version["baseline_metrics"]["majority"]
    assert test["accuracy"] > majority["accuracy"]
    assert test["roc_auc"] > 0.7

    registry = Registry(home)
    fetched = registry.get("rt-small")
    assert fetched.to_json()["test_metrics"] == version["test_metrics"]
    card = (fetched.path / "README.md").read_text()
    assert "tfidf_lr" in card and "minilm-l6" in card
    predictor = Predictor(fetched.path)
    preds = predictor.predict(["A masterpiece, moving and funny.", "Dull, lifeless, a chore."])
    assert {p.label for p in preds} <= {"positive", "negative"}
    # The registered folder is a plain transformers model.
    from transformers import AutoModelForSequenceClassification

    plain = AutoModelForSequenceClassification.from_pretrained(str(fetched.path))
    assert plain.config.id2label == {0: "negative", 1: "positive"}


def test_minilm_resume_after_interruption(home: Settings, tmp_path: Path) -> None:
    first = run_recipe(load_recipe(small_english_recipe(tmp_path, max_steps=5)), register=False)
    assert first.output.outcome.steps == 5
    resumed = run_recipe(
        load_recipe(small_english_recipe(tmp_path, max_steps=10)),
        register=False,
        resume=first.run_dir,
    )
    assert resumed.output.outcome.steps == 10
    assert resumed.output.outcome.history[0] == first.output.outcome.history[0]
    assert (first.run_dir / "model" / "model.safetensors").is_file()


def test_e5_lora_on_chinese_reviews(home: Settings, tmp_path: Path) -> None:
    recipe = yaml.safe_load((EXAMPLES / "sentiment-zh.yaml").read_text())
    recipe["data"]["source"]["limit"] = 240
    recipe["training"].update({"max_steps": 4, "eval_every_steps": 4, "max_length": 48})
    recipe["evaluation"]["baselines"] = ["majority", "snownlp"]
    recipe["registry"] = {"allow_below_baseline": True}  # 4 steps: registered whatever it learnt
    path = tmp_path / "zh.yaml"
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True))
    result = run_recipe(load_recipe(path))
    assert result.version is not None
    assert result.output.outcome.trainable_parameters < result.output.outcome.total_parameters / 10
    assert (result.version.path / "adapter" / "adapter_model.safetensors").is_file()
    assert set(result.baselines) == {"majority", "snownlp"}
    meta = json.loads((result.version.path / "lmforge.json").read_text())
    assert meta["text_prefix"] == "query: "
    assert Predictor(result.version.path).predict(["这本书非常好"])[0].label in {
        "positive",
        "negative",
    }


def test_minilm_run_then_compress_registers_an_int8_child(home: Settings, tmp_path: Path) -> None:
    recipe = yaml.safe_load(small_english_recipe(tmp_path).read_text())
    recipe["compress"] = {
        "enabled": True,
        "structures": ["original", "pruned"],
        "formats": ["torch-fp32", "onnx-int8-per-channel"],
        "prune": {"head_fraction": 0.25, "ffn_fraction": 0.5, "recovery_epochs": 1},
        "max_accuracy_drop": 5.0,  # 100 test rows: one row is a point
        "bench_seconds": 0.2,
        "latency_runs": 6,
    }
    path = tmp_path / "compress.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = run_recipe(load_recipe(path))
    compression = result.compression
    assert compression is not None and result.version is not None
    by_name = {v.name: v for v in compression.variants}
    assert set(by_name) == {
        "original/torch-fp32",
        "original/onnx-int8-per-channel",
        "pruned/torch-fp32",
        "pruned/onnx-int8-per-channel",
    }
    reference = by_name["original/torch-fp32"]
    assert reference.accuracy == pytest.approx(result.metrics["accuracy"], abs=1e-9)
    # Per-channel int8 of the real MiniLM keeps its predictions (activation outliers and all).
    delta = by_name["original/onnx-int8-per-channel"].delta_points
    assert delta is not None and abs(delta) <= 3.0
    assert len(json.loads((compression.run_dir / "tradeoff.json").read_text())["variants"]) == 4
    # int8 variants are ~1.5-2.5x faster than torch fp32 here, timed interleaved: one is chosen.
    child = compression.version
    assert child is not None and compression.chosen is not None
    assert "int8" in compression.chosen.name
    assert child.parent == result.version.ref and child.version == 2
    int8 = Predictor(child.path)
    assert int8.backend.name == "onnx-int8"
    # What the runtime serves is what the compress stage measured.
    texts = result.output.data.test["text"].tolist()
    truth = result.output.data.label_ids("test")
    served = (int8.predict_proba(texts).argmax(1) == truth).mean()
    assert served == pytest.approx(compression.chosen.accuracy, abs=1.5 / len(texts))
    # ... and what the server answers over HTTP is the runtime's own answer.
    with LiveServer(serve_config(auth={"enabled": False}), home) as server:
        r = httpx.post(server.url + "/v1/predict", json={"inputs": texts[:16]}, timeout=60)
        assert r.status_code == 200 and r.json()["model"] == child.ref
        assert r.json()["backend"] == "onnx-int8"
        http_scores = [p["scores"] for p in r.json()["predictions"]]
        local = int8.predict(texts[:16])
        for remote, mine in zip(http_scores, local, strict=True):
            assert remote == pytest.approx(mine.scores, abs=1e-6)


def test_real_minilm_embeddings_over_http(home: Settings) -> None:
    """The catalogue's MiniLM through /v1/embed: paraphrases are closer than unrelated texts."""
    with LiveServer(serve_config(auth={"enabled": False}, models=[]), home) as server:
        texts = [
            "How do I reset my password?",
            "I forgot my password and need to change it.",
            "The weather is sunny in Lisbon today.",
        ]
        r = httpx.post(server.url + "/v1/embed", json={"inputs": texts}, timeout=120)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "minilm-l6" and body["dimensions"] == 384
        a, b, c = (np.array(v) for v in body["embeddings"])
        assert float(a @ b) > 0.5 > float(a @ c)
