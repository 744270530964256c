"""Reading a period of the prediction log (with the feedback on it) in one pass, and the drift
report of one window of it against the answering version's reference — the parts of
:mod:`lmforge.monitor.report` that touch the database and the models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import inspect, select
from sqlalchemy.engine import Engine

from lmforge.errors import LmforgeError
from lmforge.monitor.drift import ALPHA, DriftReport, Window, drift_report
from lmforge.monitor.reference import (
    ReferenceData,
    classifier_meta,
    encoder_version,
    load_reference,
    unknown_token_counter,
    version_embedder,
)
from lmforge.monitor.tables import FeedbackRow, PredictionLogRow, create_tables
from lmforge.registry import Registry
from lmforge.registry.db import ModelVersionRow, as_utc, make_engine
from lmforge.settings import Settings

#: Fewer predictions in a window than this and drift is not tested (``drift_skipped`` says so).
MIN_DRIFT_ROWS = 30
#: At most this many retained texts of a window are embedded for the input-drift tests (drawn
#: with a fixed seed): the domain classifier uses at most 1,000 rows per side anyway.
MAX_TEXT_ROWS = 1000


@dataclass(frozen=True)
class LoggedRows:
    """A period's logged predictions (column arrays, time order) and the feedback on them."""

    times: np.ndarray  # seconds since the epoch
    versions: np.ndarray
    labels: list[str]
    scores: np.ndarray
    latencies: np.ndarray
    texts: list[str | None]
    # feedback: the logged time of its prediction, predicted, correct label (or None), correct
    fb_times: np.ndarray
    fb_predicted: list[str]
    fb_labels: list[str | None]
    fb_correct: np.ndarray

    def between(self, start: datetime, end: datetime) -> LoggedRows:
        lo, hi = start.timestamp(), end.timestamp()
        keep = np.flatnonzero((self.times >= lo) & (self.times < hi))
        fb = np.flatnonzero((self.fb_times >= lo) & (self.fb_times < hi))
        return LoggedRows(
            self.times[keep],
            self.versions[keep],
            [self.labels[i] for i in keep],
            self.scores[keep],
            self.latencies[keep],
            [self.texts[i] for i in keep],
            self.fb_times[fb],
            [self.fb_predicted[i] for i in fb],
            [self.fb_labels[i] for i in fb],
            self.fb_correct[fb],
        )


_ENGINES: dict[str, Engine] = {}


def log_engine(settings: Settings) -> Engine:
    """One engine per database for the process, its tables checked once: scheduled summaries
    then cost their two queries and nothing more."""
    url = settings.resolved_database_url
    engine = _ENGINES.get(url)
    if engine is None:
        engine = make_engine(url)
        create_tables(engine)
        engine = _ENGINES.setdefault(url, engine)
    return engine


def registered_labels(settings: Settings, model: str) -> dict[int, list[str]]:
    """Each registered version of ``model`` and its labels, read through :func:`log_engine` (a
    scheduled summary builds no registry engine); none for a name the registry lacks (e.g. the
    assistant) and none where the database is a log alone, without the registry's table."""
    row = ModelVersionRow
    with log_engine(settings).connect() as conn:
        if not inspect(conn).has_table(row.__tablename__):
            return {}
        query = select(row.version, row.labels).where(row.name == model)
        return {int(version): list(labels) for version, labels in conn.execute(query)}


def read_rows(
    settings: Settings,
    model: str,
    start: datetime,
    end: datetime,
    version: int | None,
    with_text: bool,
) -> LoggedRows:
    log = PredictionLogRow
    columns = [log.created_at, log.version, log.label, log.score, log.latency_ms]
    query = select(*columns, log.text) if with_text else select(*columns)
    feedback = (
        select(log.created_at, FeedbackRow.predicted, FeedbackRow.label, FeedbackRow.correct)
        .join(FeedbackRow, FeedbackRow.prediction_id == log.prediction_id)
        .where(FeedbackRow.kind.in_(("label", "correct")))
    )
    where = [log.model == model, log.created_at >= start, log.created_at < end]
    if version is not None:
        where.append(log.version == version)
    with log_engine(settings).connect() as conn:
        rows: list[Any] = list(conn.execute(query.where(*where).order_by(log.id)).all())
        fb_rows = conn.execute(feedback.where(*where)).all()
    return LoggedRows(
        times=np.array([as_utc(r[0]).timestamp() for r in rows], dtype=np.float64),
        versions=np.array([r[1] for r in rows], dtype=np.int64),
        labels=[r[2] for r in rows],
        scores=np.array([r[3] for r in rows], dtype=np.float64),
        latencies=np.array([r[4] for r in rows], dtype=np.float64),
        texts=[r[5] for r in rows] if with_text else [None] * len(rows),
        fb_times=np.array([as_utc(r[0]).timestamp() for r in fb_rows], dtype=np.float64),
        fb_predicted=[r[1] or "" for r in fb_rows],
        fb_labels=[r[2] for r in fb_rows],
        fb_correct=np.array([bool(r[3]) for r in fb_rows], dtype=bool),
    )


class References:
    """The references of the versions a report compares with, each built (or read from the
    cache) once; a version whose reference cannot be built is remembered with the reason."""

    def __init__(self, model: str, settings: Settings, given: ReferenceData | None = None):
        self.model = model
        self.settings = settings
        self.registry: Registry | None = None
        self.found: dict[int, ReferenceData | str] = {}
        if given is not None:
            self.found[given.version] = given

    def get(self, version: int) -> ReferenceData | str:
        if version not in self.found:
            try:
                self.registry = self.registry or Registry(self.settings)
                found = self.registry.get(f"{self.model}:v{version}")
                self.found[version] = load_reference(found, self.settings, self.registry)
            except LmforgeError as exc:
                self.found[version] = f"no reference for {self.model}:v{version}: {exc.message}"
        return self.found[version]


def window_drift(
    rows: LoggedRows, references: References, versions: dict[int, int]
) -> tuple[DriftReport | None, str | None, int | None]:
    """The window's drift report against the reference of the version that answered most of
    it (its rows only: another version's labels are not comparable), and what did not run."""
    if not versions:
        return None, "no predictions in the window", None
    chosen = max(versions, key=lambda v: (versions[v], v))
    found = references.get(chosen)
    if isinstance(found, str):
        return None, found, chosen
    mine = np.flatnonzero(rows.versions == chosen)
    if len(mine) < MIN_DRIFT_ROWS:
        return None, f"{len(mine)} predictions, fewer than the {MIN_DRIFT_ROWS} drift needs", chosen
    notes = []
    if len(versions) > 1:
        notes.append(f"drift compares only the {len(mine)} rows of v{chosen}")
    labels = [rows.labels[i] for i in mine]
    current = Window(labels=labels, confidences=rows.scores[mine])
    texts = [t for t in (rows.texts[i] for i in mine) if t is not None]
    if len(texts) < MIN_DRIFT_ROWS:
        why = (
            "no texts retained (prediction_log.include_text is off)"
            if not texts
            else (f"{len(texts)} texts retained, fewer than {MIN_DRIFT_ROWS}")
        )
        notes.append(f"input drift not tested: {why}; prediction drift only")
        try:
            report = drift_report(found.prediction_window(), current, seed=0)
        except LmforgeError as exc:
            return None, exc.message, chosen
        return report, "; ".join(notes), chosen
    if len(texts) > MAX_TEXT_ROWS:
        keep = np.sort(np.random.default_rng(0).choice(len(texts), MAX_TEXT_ROWS, False))
        texts = [texts[i] for i in keep]
    try:
        report = both_reports(found, current, texts, references)
    except LmforgeError as exc:
        return None, exc.message, chosen
    return report, "; ".join(notes) or None, chosen


def both_reports(
    reference: ReferenceData, current: Window, texts: Sequence[str], references: References
) -> DriftReport:
    """Prediction drift on every row and input drift on the retained texts, as one report whose
    false-alarm rate is ALPHA: each detector of both is tested at ALPHA / (all detectors)."""
    embeddings = None
    registry = references.registry or Registry(references.settings)
    found = registry.get(reference.ref)
    if reference.embeddings is not None:
        encoder = encoder_version(found, registry)
        if encoder is not None:
            meta = classifier_meta(found)
            embeddings = version_embedder(encoder.path, meta).embed(texts)
    unknown = unknown_token_counter(found.path)
    text_window = Window(texts=list(texts), embeddings=embeddings)
    ref_text = Window(
        texts=reference.texts, embeddings=reference.embeddings if embeddings is not None else None
    )
    n_text = 2 + (embeddings is not None) + (unknown is not None)  # length, script (+ ...)
    total = 2 + n_text  # labels, confidence
    predictions = drift_report(
        reference.prediction_window(), current, alpha=ALPHA * 2 / total, seed=0
    )
    inputs = drift_report(
        ref_text,
        text_window,
        alpha=ALPHA * n_text / total,
        seed=0,
        encode=unknown[0] if unknown else None,
        unknown_id=unknown[1] if unknown else None,
    )
    detectors = [*predictions.detectors, *inputs.detectors]
    return DriftReport(
        drifted=any(d.drifted for d in detectors),
        alpha=ALPHA,
        alpha_per_detector=ALPHA / total,
        reference_rows=predictions.reference_rows,
        current_rows=predictions.current_rows,
        seed=0,
        detectors=detectors,
    )
