"""Drift detectors: two-sample tests of a current window against a reference, each returning a
:class:`DetectorResult`.

- :func:`share_test` — category shares (predicted labels, scripts): a chi-square test of the
  2 x k table, with rare categories pooled (Cochran's rule) and Fisher's exact test when only a
  2 x 2 table with small counts is left; the PSI is reported beside it as the size of the shift.
- :func:`distribution_test` — a numeric distribution (confidence, length): two-sample
  Kolmogorov-Smirnov.
- :func:`domain_classifier_test` — input drift on embeddings: the cross-validated ROC AUC of a
  linear classifier telling reference from current rows, with an exact permutation test.

A detector fires when its p-value is below the level it was given *and* the effect is at least
a minimum size (PSI, AUC): with thousands of rows a test finds shifts too small to matter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats
from threadpoolctl import threadpool_limits

from lmforge.errors import DataError

#: Cochran's rule: a chi-square approximation needs expected counts of at least 5.
MIN_EXPECTED = 5.0
#: PSI below 0.1 is conventionally "no significant change": a significant but smaller shift of
#: label shares does not fire.
MIN_PSI = 0.1
#: An AUC below 0.55 is a classifier that barely beats chance (Evidently's fixed threshold for
#: large windows): a significant but smaller separation does not fire.
MIN_AUC = 0.55
#: Ridge penalty of the domain classifier, as a share of the mean diagonal of the Gram matrix
#: (so it does not depend on the scale of the embeddings): a light one, the data are plenty.
RIDGE = 0.01
#: The domain classifier sees the embeddings' first 32 principal components (see
#: _principal_components).
COMPONENTS = 32


@dataclass(frozen=True)
class DetectorResult:
    """One detector's verdict on one window."""

    name: str  # what is compared: "labels", "confidence", "embeddings", "length", ...
    test: str  # how: "chi-square", "fisher-exact", "ks", "domain-classifier-auc", ...
    statistic: float  # the test statistic (chi2, odds ratio for Fisher's test, KS D, AUC)
    p_value: float
    alpha: float  # the level the p-value is compared with
    threshold: float  # the statistic's value at which this detector fires
    drifted: bool
    detail: str  # one line saying what moved, e.g. "positive 58% -> 12%"
    values: dict[str, Any] = field(default_factory=dict)  # shares, means, PSI ...

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "test": self.test,
            "statistic": _round(self.statistic),
            "p_value": _round(self.p_value),
            "alpha": _round(self.alpha),
            "threshold": _round(self.threshold),
            "drifted": self.drifted,
            "detail": self.detail,
            "values": {k: _round(v) if isinstance(v, float) else v for k, v in self.values.items()},
        }


def _round(value: float) -> float | None:
    """Six significant digits; None for NaN or infinity, which JSON cannot hold (an odds ratio
    with an empty cell is infinite)."""
    return float(f"{value:.6g}") if np.isfinite(value) else None


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index of two count vectors over the same categories; counts get
    +0.5 (Jeffreys) so a category absent from one side gives a large but finite term."""
    ref = (reference + 0.5) / (reference.sum() + 0.5 * len(reference))
    cur = (current + 0.5) / (current.sum() + 0.5 * len(current))
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def share_test(
    name: str,
    reference: Sequence[str],
    current: Sequence[str],
    *,
    alpha: float,
    min_psi: float = MIN_PSI,
) -> DetectorResult:
    """Do the shares of categories differ between two samples? (labels, scripts)"""
    if not len(reference) or not len(current):
        raise DataError(f"no {name} to compare", f"give {name} for both windows")
    categories = sorted(set(reference) | set(current))
    ref_counts = np.array([list(reference).count(c) for c in categories], dtype=float)
    cur_counts = np.array([list(current).count(c) for c in categories], dtype=float)
    table = np.vstack([ref_counts, cur_counts])
    pooled = _pool_rare(table)
    if pooled.shape[1] < 2:  # one category on both sides: nothing can have moved
        chi2, p_value, test = 0.0, 1.0, "chi-square"
    elif pooled.shape[1] == 2 and _expected(pooled).min() < MIN_EXPECTED:
        odds, p = stats.fisher_exact(pooled.astype(int))
        chi2, p_value, test = float(odds), float(p), "fisher-exact"
    else:
        res = stats.chi2_contingency(pooled, correction=False)
        chi2, p_value, test = float(res.statistic), float(res.pvalue), "chi-square"
    score = psi(ref_counts, cur_counts)
    ref_share = ref_counts / ref_counts.sum()
    cur_share = cur_counts / cur_counts.sum()
    moved = int(np.argmax(np.abs(cur_share - ref_share)))
    return DetectorResult(
        name=name,
        test=test,
        statistic=chi2,
        p_value=p_value,
        alpha=alpha,
        threshold=min_psi,
        drifted=p_value < alpha and score >= min_psi,
        detail=(
            f"{categories[moved]} {ref_share[moved]:.0%} -> {cur_share[moved]:.0%} "
            f"(PSI {score:.3f})"
        ),
        values={
            "psi": score,
            "reference_shares": _shares(categories, ref_share),
            "current_shares": _shares(categories, cur_share),
        },
    )


def _shares(categories: list[str], shares: np.ndarray) -> dict[str, float]:
    return {c: round(float(s), 4) for c, s in zip(categories, shares, strict=True)}


def _expected(table: np.ndarray) -> np.ndarray:
    expected: np.ndarray = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    return expected


def _pool_rare(table: np.ndarray) -> np.ndarray:
    """Merge the categories (columns) whose expected count is under MIN_EXPECTED in either row
    into one column, so the chi-square approximation holds (Cochran's rule)."""
    table = table[:, table.sum(axis=0) > 0]
    rare = _expected(table).min(axis=0) < MIN_EXPECTED
    if rare.sum() <= 1:
        return table
    return np.column_stack([table[:, ~rare], table[:, rare].sum(axis=1)])


def distribution_test(
    name: str, reference: np.ndarray, current: np.ndarray, *, alpha: float, unit: str = ""
) -> DetectorResult:
    """Do two samples of a number (confidence, length) come from one distribution? (KS test;
    with ties, as lengths have, it is conservative: it fires less often, never more.)"""
    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(current, dtype=float)
    if not ref.size or not cur.size:
        raise DataError(f"no {name} values to compare", f"give {name} for both windows")
    res = stats.ks_2samp(ref, cur)
    d, p_value = float(res.statistic), float(res.pvalue)
    critical = _ks_critical(len(ref), len(cur), alpha)
    return DetectorResult(
        name=name,
        test="ks",
        statistic=d,
        p_value=p_value,
        alpha=alpha,
        threshold=critical,
        drifted=p_value < alpha,
        detail=(
            f"mean {ref.mean():.3g}{unit} -> {cur.mean():.3g}{unit}, "
            f"median {np.median(ref):.3g}{unit} -> {np.median(cur):.3g}{unit}"
        ),
        values={
            "reference_mean": float(ref.mean()),
            "current_mean": float(cur.mean()),
            "reference_median": float(np.median(ref)),
            "current_median": float(np.median(cur)),
        },
    )


def _ks_critical(n: int, m: int, alpha: float) -> float:
    """The KS distance at which a test at ``alpha`` fires (asymptotic; for the report only)."""
    return float(np.sqrt(-np.log(alpha / 2) * 0.5 * (n + m) / (n * m)))


def domain_classifier_test(
    reference: np.ndarray,
    current: np.ndarray,
    *,
    alpha: float,
    rng: np.random.Generator,
    permutations: int = 1000,
    folds: int = 5,
    min_auc: float = MIN_AUC,
) -> DetectorResult:
    """Can a classifier tell current rows from reference rows? The score is the ROC AUC of the
    out-of-fold predictions of a ridge (least-squares) linear classifier on the rows' first
    principal components; its p-value is exact:
    the AUC is recomputed for ``permutations`` random relabellings of the same rows.

    Ridge rather than logistic regression because its out-of-fold predictions are a linear map
    of the labels: the folds are solved once, and every permutation costs one matrix product
    instead of ``folds`` fits, which makes 1,000 permutations cheap. The folds are drawn at
    random, independently of the labels, so the permutation test is exact at any window size.
    """
    # One BLAS thread: the matrices are small, and on a busy machine many threads made the
    # decomposition 20x slower (11.7 s against 0.5 s for the whole test, 700 x 384 rows).
    with threadpool_limits(limits=1, user_api="blas"):
        return _domain_classifier_test(
            reference, current, alpha, rng, permutations=permutations, folds=folds, min_auc=min_auc
        )


def _domain_classifier_test(
    reference: np.ndarray,
    current: np.ndarray,
    alpha: float,
    rng: np.random.Generator,
    *,
    permutations: int,
    folds: int,
    min_auc: float,
) -> DetectorResult:
    x = _principal_components(np.vstack([reference, current]).astype(np.float64))
    x = np.hstack([x, np.ones((len(x), 1))])  # intercept (lightly penalised, harmless)
    n_ref, n = len(reference), len(x)
    observed_labels = np.zeros(n)
    observed_labels[n_ref:] = 1.0
    shuffled = rng.permuted(np.tile(observed_labels, (permutations, 1)), axis=1)
    labels = np.column_stack([observed_labels, shuffled.T])  # column 0: the real split
    fold_of = rng.permutation(n) % folds
    scores = np.empty_like(labels)
    for k in range(folds):
        test, train = fold_of == k, fold_of != k
        xt = x[train]
        gram = xt.T @ xt
        gram += RIDGE * np.trace(gram) / len(gram) * np.eye(len(gram))
        weights = np.linalg.solve(gram, xt.T @ (labels[train] - 0.5))
        scores[test] = x[test] @ weights
    aucs = _auc_columns(scores, labels)
    observed, null = float(aucs[0]), aucs[1:]
    p_value = float((1 + np.sum(null >= observed)) / (permutations + 1))
    critical = float(np.quantile(null, 1 - alpha))
    threshold = max(critical, min_auc)
    return DetectorResult(
        name="embeddings",
        test="domain-classifier-auc",
        statistic=observed,
        p_value=p_value,
        alpha=alpha,
        threshold=threshold,
        drifted=p_value < alpha and observed >= min_auc,
        detail=f"a linear classifier tells current from reference at ROC AUC {observed:.3f}",
        values={
            "permutation_threshold": critical,
            "min_auc": min_auc,
            "reference_rows": n_ref,
            "current_rows": n - n_ref,
            "permutations": permutations,
        },
    )


def _principal_components(x: np.ndarray) -> np.ndarray:
    """The pooled rows' scores on their first COMPONENTS principal axes. The axes are found
    without the labels, so the permutation test stays exact; fewer columns make every fold's
    fit 10x cheaper and keep a linear classifier on a few hundred rows from overfitting."""
    centred: np.ndarray = x - x.mean(axis=0)
    if min(centred.shape) <= COMPONENTS:
        return centred
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    scores: np.ndarray = centred @ axes[:COMPONENTS].T
    return scores


def _auc_columns(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ROC AUC of every column of ``scores`` against the 0/1 column of ``labels`` beside it
    (Mann-Whitney: the mean rank of the positives, ties sharing their rank)."""
    ranks = np.asarray(stats.rankdata(scores, axis=0), dtype=np.float64)
    positives = labels.sum(axis=0)
    negatives = len(labels) - positives
    rank_sum = (ranks * labels).sum(axis=0)
    aucs = (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
    return np.asarray(aucs, dtype=np.float64)
