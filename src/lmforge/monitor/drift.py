"""The drift report of one window of traffic against a reference (a version's validation split):
prediction drift (label shares, confidence), input drift (embeddings) and the text statistics
that say what moved.

The report fires when any detector fires, so the false-alarm rate is held for the report as a
whole: each of the k detectors that run is tested at ``alpha / k`` (Bonferroni), which keeps
the chance that a window of unchanged traffic fires anything at or below ``alpha`` (0.05) —
whatever the dependence between the detectors. docs/monitoring.md describes each detector.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmforge.errors import DataError
from lmforge.monitor.detectors import (
    MIN_AUC,
    MIN_PSI,
    DetectorResult,
    distribution_test,
    domain_classifier_test,
    share_test,
)
from lmforge.monitor.textstats import Encode, length_test, script_test, unknown_token_test

#: The family-wise false-alarm rate of one report on a window of unchanged traffic.
ALPHA = 0.05
#: Fewer reference rows cannot tell the noise of a window from drift.
MIN_REFERENCE = 50
#: The domain classifier uses at most this many rows of each side (drawn with the seed): a
#: thousand rows already measure an AUC to about +-0.02, and the cost grows with the rows.
MAX_ROWS = 1000


@dataclass(frozen=True)
class Window:
    """What is known of a set of predictions; every field given must have one entry per row.

    ``embeddings`` are the model's own sentence embeddings of the texts (rows, width);
    ``labels`` the predicted labels; ``confidences`` the predicted label's probability.
    """

    texts: Sequence[str] | None = None
    embeddings: np.ndarray | None = None
    labels: Sequence[str] | None = None
    confidences: np.ndarray | None = None

    def size(self, role: str) -> int:
        sizes = {
            name: len(value)
            for name, value in (
                ("texts", self.texts),
                ("embeddings", self.embeddings),
                ("labels", self.labels),
                ("confidences", self.confidences),
            )
            if value is not None
        }
        if not sizes:
            raise DataError(
                f"the {role} window holds nothing to compare",
                "give texts, embeddings, labels or confidences",
            )
        if len(set(sizes.values())) > 1:
            listed = ", ".join(f"{k} {v}" for k, v in sizes.items())
            raise DataError(
                f"the {role} window's fields differ in length ({listed})",
                "give one entry per prediction in every field",
            )
        return next(iter(sizes.values()))


@dataclass(frozen=True)
class DriftReport:
    """The verdict on one window: ``drifted`` when any detector fired."""

    drifted: bool
    alpha: float  # the report's false-alarm rate on unchanged traffic
    alpha_per_detector: float
    reference_rows: int
    current_rows: int
    seed: int
    detectors: list[DetectorResult] = field(default_factory=list)

    @property
    def fired(self) -> list[str]:
        """The names of the detectors that fired, e.g. ``["embeddings", "script"]``."""
        return [d.name for d in self.detectors if d.drifted]

    def detector(self, name: str) -> DetectorResult | None:
        return next((d for d in self.detectors if d.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "drifted": self.drifted,
            "fired": self.fired,
            "alpha": self.alpha,
            "alpha_per_detector": float(f"{self.alpha_per_detector:.6g}"),
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "seed": self.seed,
            "detectors": [d.to_dict() for d in self.detectors],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False)


def drift_report(
    reference: Window,
    current: Window,
    *,
    alpha: float = ALPHA,
    seed: int = 0,
    encode: Encode | None = None,
    unknown_id: int | None = None,
    permutations: int = 1000,
    min_psi: float = MIN_PSI,
    min_auc: float = MIN_AUC,
    min_reference: int = MIN_REFERENCE,
) -> DriftReport:
    """Compare ``current`` with ``reference`` on every field both windows have.

    ``encode`` (text -> token ids) and ``unknown_id`` add the unknown-token detector. The
    result depends only on the inputs and ``seed``.
    """
    if not 0 < alpha < 1:
        raise DataError(f"alpha must be between 0 and 1, got {alpha}", "use e.g. 0.05")
    n_ref, n_cur = reference.size("reference"), current.size("current")
    if n_cur == 0:
        raise DataError("the current window is empty", "wait for traffic, or widen the window")
    if n_ref < min_reference:
        raise DataError(
            f"the reference has {n_ref} rows, fewer than the {min_reference} a drift test needs",
            "use a version whose validation split is larger",
        )
    planned = _planned(reference, current, encode is not None and unknown_id is not None)
    if not planned:
        raise DataError(
            "the reference and current windows share no field to compare",
            "give both windows texts, embeddings, labels or confidences",
        )
    each = alpha / len(planned)
    rng = np.random.default_rng(seed)
    results: list[DetectorResult] = []
    for name in planned:
        if name == "labels":
            assert reference.labels is not None and current.labels is not None
            ref_labels, cur_labels = (
                list(map(str, reference.labels)),
                list(map(str, current.labels)),
            )
            results.append(
                share_test("labels", ref_labels, cur_labels, alpha=each, min_psi=min_psi)
            )
        elif name == "confidence":
            assert reference.confidences is not None and current.confidences is not None
            results.append(
                distribution_test(
                    "confidence", reference.confidences, current.confidences, alpha=each
                )
            )
        elif name == "embeddings":
            ref_x, cur_x = _embeddings(reference, current)
            results.append(
                domain_classifier_test(
                    _subsample(ref_x, rng),
                    _subsample(cur_x, rng),
                    alpha=each,
                    rng=rng,
                    permutations=permutations,
                    min_auc=min_auc,
                )
            )
        else:
            assert reference.texts is not None and current.texts is not None
            ref_t, cur_t = reference.texts, current.texts
            if name == "length":
                results.append(length_test(ref_t, cur_t, alpha=each))
            elif name == "script":
                results.append(script_test(ref_t, cur_t, alpha=each))
            else:
                assert encode is not None and unknown_id is not None
                results.append(
                    unknown_token_test(
                        ref_t, cur_t, encode=encode, unknown_id=unknown_id, alpha=each
                    )
                )
    return DriftReport(
        drifted=any(r.drifted for r in results),
        alpha=alpha,
        alpha_per_detector=each,
        reference_rows=n_ref,
        current_rows=n_cur,
        seed=seed,
        detectors=results,
    )


def _planned(reference: Window, current: Window, unknown: bool) -> list[str]:
    """The detectors both windows have the data for, in report order."""
    names = []
    if reference.labels is not None and current.labels is not None:
        names.append("labels")
    if reference.confidences is not None and current.confidences is not None:
        names.append("confidence")
    if reference.embeddings is not None and current.embeddings is not None:
        names.append("embeddings")
    if reference.texts is not None and current.texts is not None:
        names += ["length", "script"] + (["unknown_tokens"] if unknown else [])
    return names


def _embeddings(reference: Window, current: Window) -> tuple[np.ndarray, np.ndarray]:
    ref_x = np.asarray(reference.embeddings, dtype=np.float64)
    cur_x = np.asarray(current.embeddings, dtype=np.float64)
    for role, x in (("reference", ref_x), ("current", cur_x)):
        if x.ndim != 2:
            raise DataError(
                f"the {role} embeddings have shape {x.shape}, not (rows, width)",
                "give one embedding vector per row",
            )
        if not np.isfinite(x).all():
            raise DataError(f"the {role} embeddings hold NaN or infinite values", "re-embed them")
    if ref_x.shape[1] != cur_x.shape[1]:
        raise DataError(
            f"the reference embeddings are {ref_x.shape[1]} wide, the current ones "
            f"{cur_x.shape[1]}",
            "embed both windows with the same model",
        )
    return ref_x, cur_x


def _subsample(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if len(x) <= MAX_ROWS:
        return x
    return x[np.sort(rng.choice(len(x), MAX_ROWS, replace=False))]
