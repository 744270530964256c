"""The monitoring report: what a model's traffic looked like, window by window — volume,
latency, predicted label shares, confidence, live accuracy from feedback, and drift against the
answering version's own validation split (:mod:`lmforge.monitor.reference`).

:func:`summarize_window` summarises one window (two SQL queries when ``with_drift=False``: the
logged predictions and the feedback on them; the alert engine calls it on a schedule and reads
:meth:`WindowSummary.figures`). :func:`monitor_model` cuts a period into windows and reads the
log once for all of them (``lmforge monitor``). Reading the log and the drift of one window are
in :mod:`lmforge.monitor.windows`, the HTML page in :mod:`lmforge.monitor.report_html`.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from scipy import stats
from sqlalchemy import select

from lmforge.errors import LmforgeError, ModelNotFoundError
from lmforge.monitor.alerts import FiguresProvider
from lmforge.monitor.drift import DriftReport
from lmforge.monitor.reference import ReferenceData
from lmforge.monitor.tables import PredictionLogRow
from lmforge.monitor.windows import (
    LoggedRows,
    References,
    log_engine,
    read_rows,
    registered_labels,
    window_drift,
)
from lmforge.registry.db import as_utc
from lmforge.settings import Settings, get_settings

#: A prediction whose probability is below this is "low confidence" (``low_confidence=``).
LOW_CONFIDENCE = 0.6
DEFAULT_WINDOW = timedelta(hours=1)
DEFAULT_PERIOD = timedelta(hours=24)
MAX_WINDOWS = 2000
_Z = 0.95  # the live accuracy's interval: Wilson, 95 %


@dataclass(frozen=True)
class WindowSummary:
    """One window of a model's traffic, ``start`` (included) to ``end`` (excluded), UTC.

    ``version`` is the version asked for, or the one version that answered every row (None
    when several did or none). Figures of an empty window are None; ``drift_skipped`` says what
    of the drift tests did not run and why (None when all ran)."""

    start: datetime
    end: datetime
    model: str
    version: int | None
    volume: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    label_shares: dict[str, float]
    mean_confidence: float | None
    low_confidence_share: float | None
    feedback_count: int
    live_accuracy: float | None
    live_accuracy_interval: tuple[float, float] | None
    live_macro_f1: float | None
    drift: DriftReport | None
    drift_skipped: str | None
    low_confidence_threshold: float = LOW_CONFIDENCE
    labelled_count: int = 0  # feedback rows that name the correct label (macro-F1's rows)
    versions: dict[int, int] = field(default_factory=dict)  # rows per answering version
    drift_version: int | None = None  # the version whose reference drift compared with
    texts_retained: int = 0  # rows of the window whose text the log kept

    def figures(self) -> dict[str, float]:
        """A flat name -> value map for alert rules and gauges; None values are left out."""
        out: dict[str, float] = {"volume": float(self.volume)}
        for name in (
            "latency_p50_ms",
            "latency_p99_ms",
            "mean_confidence",
            "low_confidence_share",
            "live_accuracy",
            "live_macro_f1",
        ):
            value = getattr(self, name)
            if value is not None:
                out[name] = float(value)
        out["feedback_count"] = float(self.feedback_count)
        for label, share in self.label_shares.items():
            out[f"label_share.{label}"] = share
        if self.drift is not None:
            out["drift.any"] = 1.0 if self.drift.drifted else 0.0
            for d in self.drift.detectors:
                for part, value in (("statistic", d.statistic), ("p_value", d.p_value)):
                    if math.isfinite(value):
                        out[f"drift.{d.name}.{part}"] = float(value)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The window in the ``lmforge monitor --json`` contract (docs/cli.md)."""
        interval = self.live_accuracy_interval
        return {
            "start": _iso(self.start),
            "end": _iso(self.end),
            "model": self.model,
            "version": self.version,
            "versions": {str(k): v for k, v in sorted(self.versions.items())},
            "volume": self.volume,
            "latency_p50_ms": _r(self.latency_p50_ms),
            "latency_p99_ms": _r(self.latency_p99_ms),
            "label_shares": {k: _r(v) for k, v in self.label_shares.items()},
            "mean_confidence": _r(self.mean_confidence),
            "low_confidence_share": _r(self.low_confidence_share),
            "low_confidence_threshold": self.low_confidence_threshold,
            "feedback_count": self.feedback_count,
            "labelled_count": self.labelled_count,
            "live_accuracy": _r(self.live_accuracy),
            "live_accuracy_interval": [_r(interval[0]), _r(interval[1])] if interval else None,
            "live_macro_f1": _r(self.live_macro_f1),
            "texts_retained": self.texts_retained,
            "drift": self.drift.to_dict() if self.drift is not None else None,
            "drift_version": self.drift_version,
            "drift_skipped": self.drift_skipped,
        }


@dataclass(frozen=True)
class MonitorReport:
    """``lmforge monitor``: a model's windows, oldest first, and the references drift used."""

    model: str
    version: int | None
    since: datetime
    until: datetime
    window: timedelta
    windows: list[WindowSummary]
    references: list[dict[str, Any]]  # ReferenceData.describe() of each version compared
    reference_skipped: str | None  # why no reference could be built (drift then skipped)
    generated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "since": _iso(self.since),
            "until": _iso(self.until),
            "window_seconds": self.window.total_seconds(),
            "generated_at": _iso(self.generated_at),
            "references": self.references,
            "reference_skipped": self.reference_skipped,
            "windows": [w.to_dict() for w in self.windows],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False, indent=1)


# --- one window -----------------------------------------------------------------------------


def summarize_window(
    model: str,
    *,
    start: datetime,
    end: datetime,
    version: int | None = None,
    settings: Settings | None = None,
    with_drift: bool = True,
    reference: ReferenceData | None = None,
    low_confidence: float = LOW_CONFIDENCE,
) -> WindowSummary:
    """Summarise ``model``'s predictions logged from ``start`` (included) to ``end`` (excluded);
    ``version`` keeps one version's. A naive datetime is UTC. With ``with_drift``, the window is
    compared with the answering version's reference (``reference``, else built or read from the
    cache); without it, this is two SQL queries and no model is loaded."""
    settings = settings or get_settings()
    start, end = _utc(start), _utc(end)
    _check_period(start, end)
    rows = read_rows(settings, model, start, end, version, with_text=with_drift)
    references = References(model, settings, reference) if with_drift else None
    labels = registered_labels(settings, model)
    return _summarize(model, start, end, version, rows, references, low_confidence, labels)


def figures_provider(
    settings: Settings | None = None, *, with_drift: bool = True
) -> FiguresProvider:
    """The alert engine's figures: ``summarize_window(...).figures()`` for a model and window."""

    def figures(model: str, start: datetime, end: datetime) -> Mapping[str, float]:
        return summarize_window(
            model, start=start, end=end, settings=settings, with_drift=with_drift
        ).figures()

    return figures


def _summarize(
    model: str,
    start: datetime,
    end: datetime,
    version: int | None,
    rows: LoggedRows,
    references: References | None,
    low_confidence: float,
    labels: Mapping[int, list[str]],
) -> WindowSummary:
    volume = len(rows.labels)
    versions = dict(Counter(int(v) for v in rows.versions))
    answering = (
        version if version is not None else (next(iter(versions)) if len(versions) == 1 else None)
    )
    counts = Counter(rows.labels)
    # A label no prediction had is a share of 0, not a missing figure: an alert on
    # label_share.negative must see the window where it fell to nothing.
    for v in versions:
        counts.update(dict.fromkeys(labels.get(v, []), 0))
    accuracy, interval, macro_f1, labelled = _live_accuracy(rows)
    drift, skipped, drift_version = None, None, None
    if references is not None:
        drift, skipped, drift_version = window_drift(rows, references, versions)
    return WindowSummary(
        start=start,
        end=end,
        model=model,
        version=answering,
        volume=volume,
        latency_p50_ms=_percentile(rows.latencies, 50),
        latency_p99_ms=_percentile(rows.latencies, 99),
        label_shares={k: counts[k] / volume for k in sorted(counts)},
        mean_confidence=float(rows.scores.mean()) if volume else None,
        low_confidence_share=float((rows.scores < low_confidence).mean()) if volume else None,
        feedback_count=len(rows.fb_correct),
        live_accuracy=accuracy,
        live_accuracy_interval=interval,
        live_macro_f1=macro_f1,
        drift=drift,
        drift_skipped=skipped,
        low_confidence_threshold=low_confidence,
        labelled_count=labelled,
        versions=versions,
        drift_version=drift_version,
        texts_retained=sum(t is not None for t in rows.texts),
    )


def _live_accuracy(
    rows: LoggedRows,
) -> tuple[float | None, tuple[float, float] | None, float | None, int]:
    """Accuracy over every feedback row (``label`` and ``correct``), with its Wilson 95 %
    interval; macro-F1 over the rows that name the correct label (a bare ``correct: false``
    says the answer was wrong, not what was right)."""
    n = len(rows.fb_correct)
    labelled = [(p, t) for p, t in zip(rows.fb_predicted, rows.fb_labels, strict=True) if t]
    if not n:
        return None, None, None, 0
    right = int(rows.fb_correct.sum())
    ci = stats.binomtest(right, n).proportion_ci(confidence_level=_Z, method="wilson")
    macro_f1 = None
    if labelled:
        from sklearn.metrics import f1_score  # here: the server need not import it at start

        predicted, truth = [p for p, _ in labelled], [t for _, t in labelled]
        classes = sorted(set(predicted) | set(truth))
        macro_f1 = float(
            f1_score(truth, predicted, labels=classes, average="macro", zero_division=0)
        )
    return right / n, (float(ci.low), float(ci.high)), macro_f1, len(labelled)


# --- a period -------------------------------------------------------------------------------


def monitor_model(
    model: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    window: timedelta = DEFAULT_WINDOW,
    version: int | None = None,
    settings: Settings | None = None,
    with_drift: bool = True,
    low_confidence: float = LOW_CONFIDENCE,
) -> MonitorReport:
    """``model``'s traffic from ``since`` (default: 24 hours before ``until``) to ``until``
    (default: now), cut into windows of ``window`` starting at ``since`` (the last one ends at
    ``until``). The log is read once for the whole period."""
    settings = settings or get_settings()
    until = _utc(until) if until is not None else datetime.now(UTC)
    since = _utc(since) if since is not None else until - DEFAULT_PERIOD
    _check_period(since, until)
    if window <= timedelta(0):
        raise LmforgeError(f"the window must be positive, not {window}", "use e.g. --window 1h")
    count = math.ceil((until - since) / window)
    if count > MAX_WINDOWS:
        raise LmforgeError(
            f"{count} windows of {window} from {_iso(since)} to {_iso(until)}, over {MAX_WINDOWS}",
            "widen --window or shorten the period",
        )
    _check_model(settings, model, version)
    rows = read_rows(settings, model, since, until, version, with_text=with_drift)
    references = References(model, settings) if with_drift else None
    labels = registered_labels(settings, model)
    windows = []
    for i in range(count):
        start = since + i * window
        end = min(start + window, until)
        windows.append(
            _summarize(
                model,
                start,
                end,
                version,
                rows.between(start, end),
                references,
                low_confidence,
                labels,
            )
        )
    described = []
    reasons = []
    if references is not None:
        for found in references.found.values():
            if isinstance(found, str):
                reasons.append(found)
            else:
                described.append(found.describe())
    return MonitorReport(
        model=model,
        version=version,
        since=since,
        until=until,
        window=window,
        windows=windows,
        references=described,
        reference_skipped="; ".join(reasons) or None,
        generated_at=datetime.now(UTC),
    )


def _check_model(settings: Settings, model: str, version: int | None) -> None:
    """Refuse a name (or version) that is neither registered nor in the log: a typo would
    otherwise read as a model without traffic."""
    registered = set(registered_labels(settings, model))
    log = PredictionLogRow
    with log_engine(settings).connect() as conn:
        logged = {
            int(v)
            for (v,) in conn.execute(select(log.version).where(log.model == model).distinct())
        }
    known = registered | logged
    if version is None and known:
        return
    if version is not None and version in known:
        return
    if known:
        raise ModelNotFoundError(
            f"{model} has no version {version}", f"see 'lmforge models show {model}'"
        )
    raise ModelNotFoundError(
        f"no model '{model}' is registered or in the prediction log",
        "see 'lmforge models list' for the names",
    )


def _check_period(start: datetime, end: datetime) -> None:
    if start >= end:
        raise LmforgeError(
            f"the period starts at {_iso(start)}, not before its end {_iso(end)}",
            "give --since before --until",
        )


def _utc(when: datetime) -> datetime:
    return as_utc(when).astimezone(UTC)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _percentile(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def _r(value: float | None) -> float | None:
    """Six significant digits (the JSON contract); None stays None."""
    return None if value is None else float(f"{value:.6g}")
