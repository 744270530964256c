"""The three methods on a tiny classifier whose label depends on one token ('positive' exactly
when the text holds "zebra"): each ranks it first, the integrated gradients add up to the logit
difference, and compressed versions say what ran."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from conftest import as_registered_classifier
from lmforge.errors import LmforgeError
from lmforge.explain import Explainer, attention_rollout
from lmforge.runtime import Predictor

FILLER = [
    "the",
    "a",
    "film",
    "story",
    "actor",
    "plot",
    "scene",
    "music",
    "long",
    "short",
    "slow",
    "quick",
    "old",
    "new",
    "good",
    "bad",
    "red",
    "blue",
    "cast",
    "ending",
    "day",
    "night",
    "city",
    "road",
    "house",
    "river",
    "tree",
]
KEY = "zebra"


def sentences(n: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = rng.choices(FILLER, k=rng.randint(3, 9))
        label = i % 2
        if label:  # in place of a word: both classes have the same lengths, no other cue
            words[rng.randrange(len(words))] = KEY
        rows.append((" ".join(words), label))
    return rows


@pytest.fixture(scope="session")
def zebra_model(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registered-version-like folder (torch weights, ONNX fp32 and int8) of the tiny BERT
    fine-tuned until it separates the two classes."""
    from lmforge.models.classifier import build_classifier, collate

    folder = tmp_path_factory.mktemp("zebra-model")
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_base))
    torch.manual_seed(0)
    model = build_classifier(tiny_base, ["negative", "positive"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        rows = sentences(512, seed=1)
        model.train()
        for epoch in range(4):
            random.Random(epoch).shuffle(rows)
            for start in range(0, len(rows), 32):
                chunk = rows[start : start + 32]
                ids = [tokenizer(t)["input_ids"] for t, _ in chunk]
                batch = collate(ids, tokenizer.pad_token_id)
                logits = model(**batch).logits
                # label smoothing keeps the logits moderate: a saturated model's gradients
                # vanish except at a sharp step, which no few-step integral finds
                loss = torch.nn.functional.cross_entropy(
                    logits, torch.tensor([y for _, y in chunk]), label_smoothing=0.2
                )
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return as_registered_classifier(folder)


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
    assert (
        coarse.completeness_error is not None
        and coarse.completeness_error > fine.completeness_error
    )
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
    (onnx_only / "lmforge.json").write_text(meta[:-1] + ', "runtime": {"backend": "onnx-int8"}}')
    e = Explainer(onnx_only, "zebra:v2", torch_folder=zebra_model, torch_ref="zebra:v1").explain(
        TEXTS[0], "ig"
    )
    assert e.backend == "onnx-int8" and e.explained_with == "zebra:v1 (torch-fp32)"
    assert e.agrees is True
    with pytest.raises(LmforgeError, match="use --method occlusion"):
        Explainer(onnx_only, "zebra:v2").explain(TEXTS[0], "ig")


def test_bad_requests_fail_in_one_line(explainer: Explainer) -> None:
    with pytest.raises(LmforgeError, match=r"unknown target label 'neutral'.*negative, positive"):
        explainer.explain(TEXTS[0], "ig", target="neutral")
    with pytest.raises(LmforgeError, match="unknown method 'shap'"):
        explainer.explain(TEXTS[0], "shap")  # type: ignore[arg-type]
    with pytest.raises(LmforgeError, match="over the limit of 3"):
        explainer.explain(TEXTS[0], "occlusion", max_tokens=3)


def test_steps_apply_to_integrated_gradients_only(explainer: Explainer) -> None:
    for method in ("occlusion", "attention"):
        with pytest.raises(LmforgeError, match=f"integrated gradients only, not to {method}"):
            explainer.explain(TEXTS[0], method, steps=64)  # type: ignore[arg-type]


def test_the_token_limit_counts_the_text_before_truncation(explainer: Explainer) -> None:
    """max_length is 32: a 52-token text is cut to 32, but it is still over a limit of 40."""
    long = " ".join(["film"] * 50)
    cut = explainer.explain(long, "occlusion", max_tokens=60)
    assert cut.truncated and len(cut.words) == 30  # [CLS] and [SEP] take two of the 32
    with pytest.raises(LmforgeError, match="has 52 tokens, over the limit of 40"):
        explainer.explain(long, "occlusion", max_tokens=40)
