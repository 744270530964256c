"""The three methods on a model whose label depends on one token: each ranks it first, the
integrated gradients add up to the logit difference, and compressed versions say what ran."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lmforge.errors import LmforgeError
from lmforge.explain import Explainer, attention_rollout
from lmforge.runtime import Predictor

TEXTS = ["the quick zebra film", "a slow story with a zebra in the city", "zebra road ending"]


@pytest.fixture(scope="module")
def explainer(zebra_model: Path) -> Explainer:
    return Explainer(zebra_model, "zebra:v1")


def test_the_model_learnt_the_rule(zebra_model: Path) -> None:
    predictions = Predictor(zebra_model).predict([*TEXTS, "the quick film", "a slow city road"])
    assert [p.label for p in predictions] == ["positive"] * 3 + ["negative"] * 2


@pytest.mark.parametrize("method", ["ig", "occlusion"])
@pytest.mark.parametrize("text", TEXTS)
def test_the_deciding_word_ranks_first(explainer: Explainer, method: str, text: str) -> None:
    e = explainer.explain(text, method)  # type: ignore[arg-type]
    assert e.label == e.target == "positive"
    assert e.words[e.ranking()[0]].word == "zebra", [(w.word, w.score) for w in e.words]


def test_occlusion_on_the_int8_onnx_backend_itself(zebra_model: Path) -> None:
    e = Explainer(zebra_model, "zebra:v1", backend="onnx-int8").explain(TEXTS[1], "occlusion")
    assert e.backend == "onnx-int8" and e.explained_with == "zebra:v1 (onnx-int8)"
    assert e.words[e.ranking()[0]].word == "zebra"


def test_explaining_the_other_label_turns_the_sign(explainer: Explainer) -> None:
    e = explainer.explain(TEXTS[0], "ig", target="negative")
    assert e.target == "negative" and e.label == "positive"
    zebra = next(w for w in e.words if w.word == "zebra")
    assert zebra.score == min(w.score for w in e.words) < 0


def test_completeness_holds_with_enough_steps(explainer: Explainer) -> None:
    coarse = explainer.explain(TEXTS[1], "ig", steps=2)
    fine = explainer.explain(TEXTS[1], "ig", steps=512)
    assert fine.logit_difference is not None and fine.completeness_error is not None
    total = sum(w.score for w in fine.words)
    assert total == pytest.approx(fine.logit_difference, abs=0.01 * abs(fine.logit_difference))
    assert fine.completeness_error < 0.01 * abs(fine.logit_difference)
    assert coarse.completeness_error is not None and coarse.completeness_error > fine.completeness_error
    assert fine.baseline == "[PAD]" and fine.steps == 512


def test_attention_gives_rollout_scores_and_maps(explainer: Explainer) -> None:
    e = explainer.explain(TEXTS[0], "attention")
    assert e.attention is not None
    layers = e.attention["layers"]
    assert layers.shape[:2] == (2, 2)  # the tiny BERT: 2 layers, 2 heads
    rollout = attention_rollout(layers)
    assert rollout.sum(axis=-1) == pytest.approx(1.0)
    assert all(w.score > 0 for w in e.words)


def test_a_compressed_version_without_torch_weights_uses_its_parents(
    zebra_model: Path, tmp_path: Path
) -> None:
    onnx_only = tmp_path / "v2"
    onnx_only.mkdir()
    for name in ("model.int8.onnx", "tokenizer.json", "tokenizer_config.json", "config.json"):
        shutil.copy(zebra_model / name, onnx_only / name)
    meta = (zebra_model / "lmforge.json").read_text()
    (onnx_only / "lmforge.json").write_text(
        meta[:-1] + ', "runtime": {"backend": "onnx-int8"}}'
    )
    e = Explainer(onnx_only, "zebra:v2", torch_folder=zebra_model, torch_ref="zebra:v1").explain(
        TEXTS[0], "ig"
    )
    assert e.backend == "onnx-int8" and e.explained_with == "zebra:v1 (torch-fp32)"
    assert e.agrees is True
    with pytest.raises(LmforgeError, match="use --method occlusion"):
        Explainer(onnx_only, "zebra:v2").explain(TEXTS[0], "ig")


def test_bad_requests_fail_in_one_line(explainer: Explainer) -> None:
    with pytest.raises(LmforgeError, match="unknown target label 'neutral'.*negative, positive"):
        explainer.explain(TEXTS[0], "ig", target="neutral")
    with pytest.raises(LmforgeError, match="unknown method 'shap'"):
        explainer.explain(TEXTS[0], "shap")  # type: ignore[arg-type]
    with pytest.raises(LmforgeError, match="over the limit of 3"):
        explainer.explain(TEXTS[0], "occlusion", max_tokens=3)
