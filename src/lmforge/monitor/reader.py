"""Reading the prediction log back: what a batch job (drift, feedback, retraining) starts from.

Plain SQLAlchemy on the registry's database, so a job reads what every server replica logged
without importing the HTTP layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from lmforge.errors import LmforgeError
from lmforge.monitor.predlog import LoggedPrediction
from lmforge.monitor.tables import PredictionLogRow, create_tables
from lmforge.registry.db import as_utc, make_engine
from lmforge.settings import Settings, get_settings


@dataclass(frozen=True, kw_only=True)
class PredictionRecord(LoggedPrediction):
    """One logged prediction: what the server handed to the log, with the row's id and time.
    ``text`` is None unless the server ran with ``prediction_log.include_text``; ``key_name``
    is None when auth was off."""

    id: int
    created_at: datetime  # UTC

    @property
    def ref(self) -> str:
        """The version that answered, ``NAME:vN``."""
        return f"{self.model}:v{self.version}"


def read_predictions(
    settings: Settings | None = None,
    *,
    model: str | None = None,
    version: int | None = None,
    since: datetime | None = None,
    limit: int = 10_000,
) -> list[PredictionRecord]:
    """The latest ``limit`` logged predictions, oldest first.

    ``model`` keeps one registered name (``version`` one of its versions); ``since`` keeps rows
    logged at or after that time (a naive datetime is taken as UTC, as the log is written).
    """
    if limit < 1:
        raise LmforgeError(f"limit must be at least 1, not {limit}", "ask for 1 row or more")
    if version is not None and model is None:
        raise LmforgeError("a version needs a model name", "pass model= with version=")
    settings = settings or get_settings()
    query = select(PredictionLogRow)
    if model is not None:
        query = query.where(PredictionLogRow.model == model)
    if version is not None:
        query = query.where(PredictionLogRow.version == version)
    if since is not None:
        query = query.where(PredictionLogRow.created_at >= as_utc(since).astimezone(UTC))
    # Newest first to keep the latest `limit`, then turned round: a job reads in log order.
    query = query.order_by(PredictionLogRow.id.desc()).limit(limit)
    engine = make_engine(settings.resolved_database_url)
    try:
        create_tables(engine)  # a database no server has logged to yet: no rows, not an error
        with Session(engine) as session:
            rows = list(session.scalars(query))
    finally:
        engine.dispose()
    return [_record(row) for row in reversed(rows)]


def _record(row: PredictionLogRow) -> PredictionRecord:
    return PredictionRecord(
        id=row.id,
        created_at=as_utc(row.created_at),
        model=row.model,
        version=row.version,
        label=row.label,
        score=row.score,
        latency_ms=row.latency_ms,
        key_name=row.key_name,
        text=row.text,
        prediction_id=row.prediction_id,
        scores=row.scores,
        kind=row.kind,
    )
