"""Metrics against scikit-learn, the baselines, and the run's pictures."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)

from lmforge.data import PreparedData
from lmforge.errors import RecipeError
from lmforge.evaluate import classification_metrics, score_baselines
from lmforge.evaluate.baselines import (
    majority_baseline,
    mostly_cjk,
    snownlp_baseline,
    tfidf_lr_baseline,
)
from lmforge.evaluate.metrics import expected_calibration_error, probabilities
from lmforge.evaluate.plots import plot_confusion_matrix, plot_training_curve

PNG = b"\x89PNG\r\n\x1a\n"


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# --- classification_metrics --------------------------------------------------------------------


def test_multiclass_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    labels = ["a", "b", "c"]
    y = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 0, 1])
    logits = rng.normal(size=(len(y), 3))
    logits[np.arange(len(y)), y] += 1.0  # mostly right, some mistakes
    proba = _softmax(logits)
    pred = proba.argmax(axis=1)
    out = classification_metrics(y, logits, labels)

    assert out["n"] == len(y)
    assert out["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert out["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert out["loss"] == pytest.approx(log_loss(y, proba))
    assert out["confusion_matrix"] == confusion_matrix(y, pred).tolist()
    p, r, f, s = precision_recall_fscore_support(y, pred, zero_division=0)
    assert list(out["per_class"]) == labels
    for i, label in enumerate(labels):
        got = out["per_class"][label]
        assert got["precision"] == pytest.approx(p[i])
        assert got["recall"] == pytest.approx(r[i])
        assert got["f1"] == pytest.approx(f[i])
        assert got["support"] == s[i]
    assert "roc_auc" not in out  # binary tasks only
    assert 0.0 <= out["ece"] <= 1.0
    assert out["accuracy"] < 1.0  # the toy case has mistakes, so the checks above mean something


def test_hand_made_logits() -> None:
    y = np.array([0, 1, 1, 0])
    logits = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 0.0], [0.5, 0.0]])  # third one is wrong
    out = classification_metrics(y, logits, ["neg", "pos"])
    assert out["accuracy"] == pytest.approx(0.75)
    assert out["confusion_matrix"] == [[2, 0], [1, 1]]
    assert out["per_class"]["neg"] == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    )
    assert out["per_class"]["pos"] == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
    )
    assert out["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    proba = _softmax(logits)
    assert out["roc_auc"] == pytest.approx(roc_auc_score(y, proba[:, 1]))
    assert out["loss"] == pytest.approx(log_loss(y, proba))


def test_binary_roc_auc_matches_sklearn() -> None:
    y = np.array([0, 0, 1, 1, 0, 1, 1, 0])
    p1 = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.6, 0.7])
    proba = np.stack([1 - p1, p1], axis=1)
    out = classification_metrics(y, proba, ["n", "p"], from_logits=False)
    assert out["roc_auc"] == pytest.approx(roc_auc_score(y, p1))
    assert out["accuracy"] == pytest.approx(accuracy_score(y, (p1 > 0.5).astype(int)))


def test_roc_auc_absent_when_test_has_one_class() -> None:
    y = np.array([1, 1, 1])
    proba = np.array([[0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    out = classification_metrics(y, proba, ["n", "p"], from_logits=False)
    assert "roc_auc" not in out
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert out["per_class"]["n"]["support"] == 0
    assert out["confusion_matrix"] == [[0, 0], [1, 2]]


def test_from_logits_false_uses_probabilities_as_given() -> None:
    y = np.array([0, 1, 2])
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    out = classification_metrics(y, proba, ["a", "b", "c"], from_logits=False)
    assert out["accuracy"] == 1.0
    assert out["loss"] == pytest.approx(-np.mean(np.log([0.7, 0.8, 0.4])))
    # the same numbers read as logits give another (softmaxed) loss
    as_logits = classification_metrics(y, proba, ["a", "b", "c"])
    assert as_logits["loss"] == pytest.approx(log_loss(y, _softmax(proba)))
    assert as_logits["loss"] != pytest.approx(out["loss"])


def test_zero_probabilities_give_finite_loss() -> None:
    y = np.array([0, 1])
    proba = np.array([[0.0, 1.0], [1.0, 0.0]])  # confidently wrong
    out = classification_metrics(y, proba, ["a", "b"], from_logits=False)
    assert np.isfinite(out["loss"])
    assert out["accuracy"] == 0.0


def test_extreme_logits_are_stable() -> None:
    y = np.array([0, 1])
    logits = np.array([[1000.0, -1000.0], [-1000.0, 1000.0]], dtype=np.float32)
    out = classification_metrics(y, logits, ["a", "b"])
    assert out["accuracy"] == 1.0
    assert np.isfinite(out["loss"])
    assert out["loss"] == pytest.approx(0.0, abs=1e-9)


def test_detail_false_has_only_the_summary() -> None:
    y = np.array([0, 1, 1])
    out = classification_metrics(y, np.eye(2)[[0, 1, 0]], ["a", "b"], detail=False)
    assert set(out) == {"accuracy", "macro_f1", "loss", "n"}


def test_labels_missing_from_predictions_count_as_zero_f1() -> None:
    y = np.array([0, 1, 2, 2])
    proba = np.array([[1, 0, 0], [1, 0, 0], [0, 0, 1], [0, 0, 1]], dtype=float)
    out = classification_metrics(y, proba, ["a", "b", "c"], from_logits=False)
    assert out["per_class"]["b"]["f1"] == 0.0
    assert out["macro_f1"] == pytest.approx(f1_score(y, proba.argmax(1), average="macro"))


def test_ece_of_perfectly_calibrated_toy_is_zero() -> None:
    # confidence 0.8 on ten rows, eight of them right; confidence 0.6 on five, three right
    y = np.array([0] * 8 + [1] * 2 + [1] * 3 + [0] * 2)
    proba = np.array([[0.8, 0.2]] * 10 + [[0.4, 0.6]] * 5)
    assert expected_calibration_error(y, proba) == pytest.approx(0.0, abs=1e-9)
    out = classification_metrics(y, proba, ["a", "b"], from_logits=False)
    assert out["ece"] == pytest.approx(0.0, abs=1e-9)


def test_ece_of_overconfident_model() -> None:
    y = np.array([0, 1, 0, 1])
    proba = np.array([[0.9, 0.1]] * 4)  # 90% sure, right half the time
    assert expected_calibration_error(y, proba) == pytest.approx(0.4)


# --- baselines ---------------------------------------------------------------------------------


def test_majority_baseline_picks_most_frequent() -> None:
    proba = majority_baseline(np.array([2, 0, 2, 1, 2, 0]), n_test=4, n_labels=3)
    assert proba.shape == (4, 3)
    assert (proba.argmax(axis=1) == 2).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_majority_baseline_with_unseen_label() -> None:
    proba = majority_baseline(np.array([1, 1, 0]), n_test=2, n_labels=4)
    assert proba.shape == (2, 4)
    assert (proba.argmax(axis=1) == 1).all()


def test_mostly_cjk() -> None:
    assert mostly_cjk(["这本书非常好", "我很喜欢"])
    assert mostly_cjk(["这部电影 great 很好看很好看"])
    assert not mostly_cjk(["a great movie", "terrible acting"])
    assert not mostly_cjk(["", ""])
    assert not mostly_cjk(["hello world 好"])


GOOD = ["great", "wonderful", "excellent", "lovely", "superb", "brilliant"]
BAD = ["awful", "terrible", "horrible", "dreadful", "boring", "poor"]


def _english_toy() -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    train = [f"a {w} film" for w in GOOD] + [f"a {w} film" for w in BAD]
    train += [f"truly {w} acting" for w in GOOD] + [f"truly {w} acting" for w in BAD]
    y_train = np.array(([1] * 6 + [0] * 6) * 2)
    test = ["what a great movie", "superb and lovely", "boring and awful", "terrible plot"]
    return train, y_train, test, np.array([1, 1, 0, 0])


def test_tfidf_lr_learns_english_toy_set() -> None:
    train, y_train, test, y_test = _english_toy()
    proba = tfidf_lr_baseline(train, y_train, test, n_labels=2)
    assert proba.shape == (4, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (proba.argmax(axis=1) == y_test).all()


def test_tfidf_lr_learns_chinese_toy_set_with_char_ngrams() -> None:
    good = ["很好", "喜欢", "推荐", "满意", "精彩", "不错"]
    bad = ["很差", "失望", "糟糕", "难看", "浪费", "垃圾"]
    train = [f"这本书{w}" for w in good] + [f"这本书{w}" for w in bad]
    train += [f"电影{w}极了" for w in good] + [f"电影{w}极了" for w in bad]
    y_train = np.array(([1] * 6 + [0] * 6) * 2)
    test = ["我很喜欢", "非常满意", "太失望了", "真糟糕"]  # no spaces: word n-grams would fail
    assert mostly_cjk(train)
    proba = tfidf_lr_baseline(train, y_train, test, n_labels=2)
    assert (proba.argmax(axis=1) == np.array([1, 1, 0, 0])).all()


def test_tfidf_lr_with_label_missing_from_training() -> None:
    train, y_train, test, _ = _english_toy()
    proba = tfidf_lr_baseline(train, y_train * 2, test, n_labels=3)  # labels 0 and 2 only
    assert proba.shape == (4, 3)
    np.testing.assert_allclose(proba[:, 1], 0.0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


@pytest.mark.parametrize(
    "labels", [["pos", "neg"], ["positive", "neutral", "negative"], ["a", "b"]]
)
def test_snownlp_baseline_needs_positive_and_negative(labels: list[str]) -> None:
    with pytest.raises(RecipeError) as info:
        snownlp_baseline(["很好"], labels)
    assert "positive" in str(info.value)
    assert "snownlp" in str(info.value)


@pytest.mark.parametrize("labels", [["negative", "positive"], ["positive", "negative"]])
def test_snownlp_baseline_probabilities(labels: list[str]) -> None:
    texts = ["这本书非常好，我很喜欢", "太差了，非常失望，不推荐"]
    proba = snownlp_baseline(texts, labels)
    assert proba.shape == (2, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert ((proba >= 0) & (proba <= 1)).all()
    pos = labels.index("positive")
    assert proba[0, pos] > 0.5  # leans positive
    assert proba[1, pos] < 0.5


def _prepared() -> PreparedData:
    train, y_train, test, y_test = _english_toy()
    names = ["negative", "positive"]
    return PreparedData(
        train=pd.DataFrame({"text": train, "label": [names[i] for i in y_train]}),
        validation=pd.DataFrame({"text": test[:2], "label": ["positive", "positive"]}),
        test=pd.DataFrame({"text": test, "label": [names[i] for i in y_test]}),
        labels=names,
    )


def test_score_baselines() -> None:
    data = _prepared()
    results = score_baselines(data, ["majority", "tfidf_lr"])
    assert list(results) == ["majority", "tfidf_lr"]
    assert results["majority"]["accuracy"] == pytest.approx(0.5)  # train is balanced: picks one
    assert results["majority"]["n"] == 4
    assert results["tfidf_lr"]["accuracy"] == 1.0
    assert results["tfidf_lr"]["macro_f1"] == 1.0
    for metrics in results.values():
        assert {"accuracy", "macro_f1", "loss", "per_class", "confusion_matrix", "ece"} <= set(
            metrics
        )
        assert "roc_auc" in metrics
    assert score_baselines(data, []) == {}


def test_score_baselines_snownlp() -> None:
    data = _prepared()
    zh = PreparedData(
        train=data.train,
        validation=data.validation,
        test=pd.DataFrame(
            {
                "text": ["这本书非常好，我很喜欢", "太差了，非常失望"],
                "label": ["positive", "negative"],
            }
        ),
        labels=["negative", "positive"],
    )
    results = score_baselines(zh, ["snownlp"])
    assert results["snownlp"]["accuracy"] == 1.0
    bad = PreparedData(data.train, data.validation, data.test, ["negative", "positive", "x"])
    with pytest.raises(RecipeError):
        score_baselines(bad, ["snownlp"])


# --- plots -------------------------------------------------------------------------------------


def test_plot_confusion_matrix(tmp_path: Path) -> None:
    path = tmp_path / "cm.png"
    plot_confusion_matrix([[5, 1, 0], [2, 7, 1], [0, 0, 9]], ["a", "b", "c"], path)
    assert path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG


def test_plot_confusion_matrix_all_zero(tmp_path: Path) -> None:
    path = tmp_path / "cm.png"
    plot_confusion_matrix([[0, 0], [0, 0]], ["a", "b"], path)
    assert path.read_bytes()[:8] == PNG


def test_plot_training_curve(tmp_path: Path) -> None:
    history = [
        {
            "step": s,
            "train_loss": 1 / s,
            "val_loss": 1.2 / s,
            "val_accuracy": 0.5 + s / 100,
            "val_macro_f1": 0.4 + s / 100,
        }
        for s in (10, 20, 30)
    ]
    path = tmp_path / "curve.png"
    plot_training_curve(history, path)
    assert path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG


def test_float32_probabilities_score_as_their_logits_do_without_a_warning() -> None:
    # A confident classifier: a float32 softmax rounds many positives' P(positive) to exactly
    # 1.0 (ties the float64 softmax keeps apart) and its rows miss 1 by float32 rounding, which
    # made scikit-learn warn "The y_prob values do not sum to one" and moved ROC-AUC.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    logits = np.stack([np.zeros(400), rng.normal(12 * (2 * y - 1) + 3, 6)], axis=1)
    z = np.exp((logits - logits.max(axis=1, keepdims=True)).astype(np.float32))
    proba32 = z / z.sum(axis=1, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_proba = classification_metrics(y, proba32, ["neg", "pos"], from_logits=False)
        from_logits = classification_metrics(y, logits, ["neg", "pos"])
    assert from_proba["accuracy"] == from_logits["accuracy"]
    assert from_proba["loss"] == pytest.approx(from_logits["loss"], rel=1e-5)
    rows = probabilities(proba32, from_logits=False)
    assert rows.dtype == np.float64 and np.abs(rows.sum(axis=1) - 1).max() < 1e-12
