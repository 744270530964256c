"""Simple baselines trained and scored on the same split as the model.

A fine-tuned transformer is only worth its cost if it beats these: the majority class, and
TF-IDF + logistic regression (word n-grams for spaced languages, character n-grams for Chinese).
For Chinese sentiment the ``snownlp`` package's own classifier is a third reference; for
English sentiment (negative/positive, or negative/neutral/positive) the two lexicons of
:mod:`lmforge.data.lexicons` (``lexicon_lm`` Loughran–McDonald, ``lexicon_vader`` VADER) score
the test texts with no training at all.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from lmforge.data.lexicons import (
    LEXICONS,
    SENTIMENT_LABELS,
    LexiconName,
    lexicon_scores,
    to_classes,
)
from lmforge.errors import RecipeError

#: baseline name → lexicon
LEXICON_BASELINES: dict[str, LexiconName] = {"lexicon_lm": "lm", "lexicon_vader": "vader"}

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def mostly_cjk(texts: Sequence[str]) -> bool:
    sample = "".join(texts[:500])
    return len(_CJK.findall(sample)) > 0.3 * max(1, len(sample.replace(" ", "")))


def majority_baseline(y_train: np.ndarray, n_test: int, n_labels: int) -> np.ndarray:
    """Probabilities that always favour the most frequent training label."""
    counts = np.bincount(y_train, minlength=n_labels).astype(np.float64)
    proba = np.zeros((n_test, n_labels))
    proba[:, int(counts.argmax())] = 1.0
    return proba


def tfidf_lr_baseline(
    train_texts: Sequence[str], y_train: np.ndarray, test_texts: Sequence[str], n_labels: int
) -> np.ndarray:
    if mostly_cjk(train_texts):
        vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)
    else:
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    pipeline = make_pipeline(vectorizer, LogisticRegression(C=4.0, max_iter=2000))
    pipeline.fit(list(train_texts), y_train)
    proba = np.zeros((len(test_texts), n_labels))
    proba[:, pipeline.classes_] = pipeline.predict_proba(list(test_texts))
    return proba


def check_baselines(names: Sequence[str], labels: Sequence[str]) -> None:
    """Fail before any training if a requested baseline cannot score these labels."""
    if "snownlp" in names and sorted(labels) != ["negative", "positive"]:
        raise RecipeError(
            "the snownlp baseline needs the labels 'positive' and 'negative'",
            "remove 'snownlp' from evaluation.baselines",
        )
    lexicons = [n for n in names if n in LEXICON_BASELINES]
    if lexicons and sorted(labels) not in (["negative", "positive"], list(SENTIMENT_LABELS)):
        raise RecipeError(
            f"the {lexicons[0]} baseline needs the labels negative/positive or "
            f"negative/neutral/positive (these are {', '.join(labels)})",
            f"remove '{lexicons[0]}' from evaluation.baselines",
        )


def snownlp_baseline(test_texts: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """The snownlp package's pretrained Chinese sentiment model (P(positive) per text)."""
    check_baselines(["snownlp"], labels)
    from snownlp import SnowNLP

    positive = np.array([SnowNLP(t).sentiments for t in test_texts])
    proba = np.zeros((len(test_texts), 2))
    pos, neg = list(labels).index("positive"), list(labels).index("negative")
    proba[:, pos], proba[:, neg] = positive, 1.0 - positive
    return proba


def lexicon_baseline(name: str, test_texts: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """A lexicon's one-hot class per text: three classes cut at the lexicon's thresholds, or,
    for a negative/positive task, the sign of its polarity (zero counts as positive)."""
    check_baselines([name], labels)
    lexicon = LEXICONS[LEXICON_BASELINES[name]]
    scores = lexicon_scores(lexicon.name, list(test_texts))
    if len(labels) == 2:
        names = np.where(scores < 0, "negative", "positive")
    else:
        names = np.array(SENTIMENT_LABELS)[to_classes(scores, lexicon)]
    proba = np.zeros((len(test_texts), len(labels)))
    proba[np.arange(len(names)), [list(labels).index(str(n)) for n in names]] = 1.0
    return proba
