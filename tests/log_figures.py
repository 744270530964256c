"""Alert tests' figures: rows written to the real prediction log, and a figures provider that
reads them back (volume, latency, mean confidence, label shares) — a small stand-in for the
monitor report's ``summarize_window(...).figures()``, computed from the same table."""

from __future__ import annotations

import functools
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from lmforge.monitor import FiguresProvider, PredictionLogRow
from lmforge.monitor.predlog import new_prediction_id
from lmforge.monitor.tables import create_tables
from lmforge.registry.db import make_engine
from lmforge.settings import Settings


@functools.cache
def _engine(url: str) -> Engine:
    engine = make_engine(url)  # one per database: the tests write and read many windows
    create_tables(engine)
    return engine


def log_rows(
    settings: Settings,
    model: str,
    at: datetime,
    labels: Sequence[str],
    latency_ms: float = 10.0,
    score: float = 0.9,
) -> None:
    """One logged prediction per label, all at ``at``."""
    rows = [
        {
            "created_at": at,
            "model": model,
            "version": 1,
            "label": label,
            "score": score,
            "latency_ms": latency_ms,
            "prediction_id": new_prediction_id(),
        }
        for label in labels
    ]
    with _engine(settings.resolved_database_url).begin() as conn:
        conn.execute(insert(PredictionLogRow), rows)


def log_figures(
    settings: Settings, labels: Sequence[str] = ("negative", "positive")
) -> FiguresProvider:
    """A figures provider over the prediction log: a model's rows in [start, end)."""
    table = PredictionLogRow

    def figures(model: str, start: datetime, end: datetime) -> Mapping[str, float]:
        query = select(table.label, table.score, table.latency_ms).where(
            table.model == model, table.created_at >= start, table.created_at < end
        )
        with _engine(settings.resolved_database_url).connect() as conn:
            rows = list(conn.execute(query))
        out = {"volume": float(len(rows))}
        if rows:
            latencies = [r.latency_ms for r in rows]
            out["latency_p50_ms"] = float(np.percentile(latencies, 50))
            out["latency_p99_ms"] = float(np.percentile(latencies, 99))
            out["mean_confidence"] = statistics.fmean(r.score for r in rows)
            counts = Counter(r.label for r in rows)
            for label in labels:
                out[f"label_share.{label}"] = counts[label] / len(rows)
        return out

    return figures
