"""The prediction log's table, in the registry's database (SQLAlchemy 2).

Its own declarative base, so that reading or writing the log needs neither the server's tables
(API keys) nor the HTTP layer; the table's name, columns and indexes are the ones the server
has always written.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime, Float, Integer, String, Text
from sqlalchemy.engine import Engine
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


def create_tables(engine: Engine) -> None:
    """Create the log's table where it is missing (an existing one is left as it is)."""
    MonitorBase.metadata.create_all(engine)
