"""The monitor's tables, in the registry's database (SQLAlchemy 2): the prediction log (a
compact record of every answered prediction) and the feedback on them.

Their own declarative base, so that reading or writing them needs neither the server's tables
(API keys) nor the HTTP layer. The prediction log's ``prediction_id`` and ``scores`` columns
and ``kind``
columns came later: :func:`create_tables` adds them to a table an older server created.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, Integer, String, Text, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class MonitorBase(DeclarativeBase):
    pass


def _now() -> datetime:
    return datetime.now(UTC)


class PredictionLogRow(MonitorBase):
    __tablename__ = "prediction_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now, index=True)
    model: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(128))
    score: Mapped[float] = mapped_column(Float)
    latency_ms: Mapped[float] = mapped_column(Float)
    key_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    # None only in rows an older server wrote; unique, so feedback finds its prediction
    prediction_id: Mapped[str | None] = mapped_column(
        String(32), nullable=True, unique=True, index=True
    )
    scores: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # what answered: None for a classifier, "assistant" for an FAQ answer (its label is the
    # cited entry, so feedback on it is only right or wrong)
    kind: Mapped[str | None] = mapped_column(String(16), nullable=True)


class FeedbackRow(MonitorBase):
    """One feedback event. ``kind``: ``label`` (the correct label of a prediction), ``correct``
    (right or wrong, without a label when wrong), ``example`` (a new labelled text) or
    ``interaction`` (a click or rating). A prediction has at most one row (updated in place)."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now, index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    kind: Mapped[str] = mapped_column(String(16))
    prediction_id: Mapped[str | None] = mapped_column(String(32), nullable=True, unique=True)
    model: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    predicted: Mapped[str | None] = mapped_column(String(128), nullable=True)
    label: Mapped[str | None] = mapped_column(String(128), nullable=True)
    correct: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    user_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    item_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    event: Mapped[str | None] = mapped_column(String(16), nullable=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    key_name: Mapped[str | None] = mapped_column(String(64), nullable=True)


_ADDED_COLUMNS = {  # prediction_log columns newer than the table: name -> DDL type
    "prediction_id": "VARCHAR(32)",
    "scores": "JSON",
    "kind": "VARCHAR(16)",
}


def create_tables(engine: Engine) -> None:
    """Create the tables where they are missing, and add the prediction log's newer columns to
    a table an older server created (its rows keep None there)."""
    MonitorBase.metadata.create_all(engine)
    present = {c["name"] for c in inspect(engine).get_columns("prediction_log")}
    for name, kind in _ADDED_COLUMNS.items():
        if name in present:
            continue
        # Another replica may add it at the same moment: its error is our success.
        try:
            with engine.begin() as conn:
                conn.execute(text(f"ALTER TABLE prediction_log ADD COLUMN {name} {kind}"))
                if name == "prediction_id":
                    conn.execute(
                        text(
                            "CREATE UNIQUE INDEX IF NOT EXISTS ix_prediction_log_prediction_id "
                            "ON prediction_log (prediction_id)"
                        )
                    )
        except (OperationalError, ProgrammingError):
            if name not in {c["name"] for c in inspect(engine).get_columns("prediction_log")}:
                raise
