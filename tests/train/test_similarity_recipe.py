"""The similarity task end to end on a tiny encoder: pairs → contrastive fine-tuning →
retrieval beside the untuned encoder and BM25 → a registered version that /v1/embed serves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import LiveServer, lmforge, serve_config
from lmforge.errors import DataError, RecipeError
from lmforge.recipe import load_recipe
from lmforge.registry import Registry
from lmforge.runtime.embedder import Embedder
from lmforge.settings import Settings
from lmforge.tasks import run_recipe

TOPICS = [
    ("password", "Open Settings, then Account, and choose Reset password."),
    ("invoice", "Invoices are under Billing as PDF files you can download."),
    ("refund", "Refunds go back to the original card within five working days."),
    ("shipping", "Parcels ship within two days and arrive in about a week."),
    ("language", "Change the language under Settings, then Region."),
    ("delete account", "Write to support to have the account and its data deleted."),
    ("two-factor", "Turn on two-factor login under Security with an authenticator app."),
    ("export", "Export your data as CSV from the Reports page."),
]
ASKS = [
    "How do I change my {}?",
    "Where can I find the {} option?",
    "Help with {} please",
    "I have a question about {}",
]


def pairs_csv(folder: Path) -> Path:
    rows = [
        {"question": ask.format(topic), "answer": f"{answer} ({topic}, note {i})"}
        for topic, answer in TOPICS
        for i, ask in enumerate(ASKS)
    ]
    path = folder / "pairs.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def similarity_recipe(folder: Path, base: Path, **source: Any) -> Path:
    recipe = {
        "name": "faq-embed",
        "task": "similarity",
        "data": {
            "source": {
                "path": str(pairs_csv(folder)),
                "text_column": "question",
                "pair_column": "answer",
                **source,
            },
            "split": {"validation": 0.125, "test": 0.25},
        },
        "model": {"base": str(base)},
        "training": {"epochs": 3, "batch_size": 8, "learning_rate": 1e-3, "max_length": 32},
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_similarity_run_registers_an_encoder_that_embed_serves(
    home: Settings, tmp_path: Path, tiny_base: Path, one_thread: None
) -> None:
    result = run_recipe(load_recipe(similarity_recipe(tmp_path, tiny_base)), settings=home)
    assert set(result.baselines) == {"untuned", "bm25"}
    for scores in (result.metrics, *result.baselines.values()):
        assert scores["queries"] == len(result.output.data.test) > 0
        assert 0 <= scores["hit@1"] <= scores["hit@5"] <= 1 and 0 < scores["mrr"] <= 1
    fit = result.output.fit
    assert fit.steps > 0 and fit.losses[-1] < fit.losses[0]
    version = result.version
    assert version is not None and version.task == "similarity" and version.labels == []
    assert version.metrics == result.metrics
    meta = json.loads((version.path / "lmforge.json").read_text())
    assert meta["task"] == "similarity" and meta["max_length"] == 32
    vectors = Embedder(version.path).embed(["How do I change my password?", "refund"])
    assert vectors.shape == (2, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1)

    # served: /v1/embed answers with it; the classifier route refuses it by name
    config = serve_config(models=None, auth={"enabled": False})
    with LiveServer(config, home) as live:
        assert "faq-embed" not in live.state.pool.aliases  # not loaded as a classifier
        r = httpx.post(
            live.url + "/v1/embed",
            json={"model": "faq-embed", "inputs": ["How do I change my password?"]},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        assert r.json()["model"] == version.ref
        assert np.allclose(r.json()["embeddings"][0], vectors[0], atol=1e-5)
        bad = httpx.post(
            live.url + "/v1/predict", json={"model": "faq-embed", "inputs": ["x"]}, timeout=60
        )
        assert bad.status_code == 422 and "/v1/embed" in bad.json()["error"]["message"]


def test_similarity_cli_prints_the_retrieval_table(
    home: Settings, tmp_path: Path, tiny_base: Path
) -> None:
    recipe = similarity_recipe(tmp_path, tiny_base)
    result = lmforge("train", str(recipe), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["version"] is None  # train does not register
    assert set(report["baseline_metrics"]) == {"untuned", "bm25"}
    assert Registry(home).list() == []


def test_bad_similarity_recipes_fail_with_one_line(
    home: Settings, tmp_path: Path, tiny_base: Path
) -> None:
    recipe = yaml.safe_load(similarity_recipe(tmp_path, tiny_base).read_text())
    del recipe["data"]["source"]["pair_column"]
    path = tmp_path / "no-pair.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match="pair_column"):
        load_recipe(path)
    wrong = load_recipe(similarity_recipe(tmp_path, tiny_base, pair_column="reply"))
    with pytest.raises(DataError, match="column 'reply' not in"):
        run_recipe(wrong, settings=home)
    few = load_recipe(similarity_recipe(tmp_path, tiny_base, limit=10))
    with pytest.raises(DataError, match="usable pairs"):
        run_recipe(few, settings=home)
    decoder = yaml.safe_load(similarity_recipe(tmp_path, tiny_base).read_text())
    decoder["model"]["base"] = "smollm2-135m-instruct"
    path.write_text(yaml.safe_dump(decoder))
    with pytest.raises(RecipeError, match="is a decoder"):
        run_recipe(load_recipe(path), settings=home)
    classification = yaml.safe_load(similarity_recipe(tmp_path, tiny_base).read_text())
    classification.update(task="classification", model={"base": "smollm2-135m-instruct"})
    path.write_text(yaml.safe_dump(classification))
    with pytest.raises(RecipeError, match="needs an encoder"):
        run_recipe(load_recipe(path), settings=home)
    assert Registry(home).list() == []
