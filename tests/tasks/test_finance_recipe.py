"""examples/finance-sentiment.yaml on a tiny model: it runs, scores the fixed hand-labelled test
part, and reports the lexicon baselines beside majority and TF-IDF + LR."""

from __future__ import annotations

from pathlib import Path

import yaml

from lmforge.recipe import parse_recipe
from lmforge.settings import Settings
from lmforge.tasks import run_recipe

RECIPE = Path(__file__).resolve().parents[2] / "examples" / "finance-sentiment.yaml"


def test_finance_recipe_on_a_tiny_model(tiny_base: Path, home: Settings, one_thread: None) -> None:
    raw = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    assert raw["data"]["source"]["builtin"] == "guardian_headlines_sentiment"
    raw["data"]["source"]["builtin"] = "guardian_headlines_sentiment_mixed"  # the largest
    raw["model"]["base"] = str(tiny_base)
    raw["data"]["source"]["limit"] = 64  # of the train part; validation and test stay whole
    raw["training"].update(max_steps=2, batch_size=8, eval_every_steps=None)
    raw["compress"] = {"enabled": False}
    raw["registry"] = {"enabled": False}
    result = run_recipe(parse_recipe(raw), progress=False)
    assert result.metrics["n"] == 224
    assert set(result.metrics["per_class"]) == {"negative", "neutral", "positive"}
    assert len(result.metrics["confusion_matrix"]) == 3
    assert set(result.baselines) == {"majority", "tfidf_lr", "lexicon_lm", "lexicon_vader"}
    for scores in result.baselines.values():
        assert scores["n"] == 224
    # the lexicons are far from chance and far from perfect on these headlines
    assert 0.3 < result.baselines["lexicon_vader"]["macro_f1"] < 0.7
    assert (result.run_dir / "confusion_matrix.png").is_file()
