"""Alert tests' figures: rows written to the real prediction log, and the monitor report's
figures provider (``summarize_window(...).figures()``) reading them back."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import insert
from sqlalchemy.engine import Engine

from lmforge.monitor import FiguresProvider, PredictionLogRow
from lmforge.monitor.predlog import new_prediction_id
from lmforge.monitor.report import figures_provider
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


def log_figures(settings: Settings) -> FiguresProvider:
    """The monitor report's figures provider over that log, without drift (no model needed)."""
    return figures_provider(settings, with_drift=False)
