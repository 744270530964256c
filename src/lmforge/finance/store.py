"""Scored headlines in the registry's database: the ``finance_headlines`` table and
:class:`HeadlineStore`.

One row per headline and model: its id, time, text, label, the three class probabilities,
the tone (P(positive) − P(negative), in [−1, 1]), the model and version that scored it, and the
entities it names. The same database as the registry, prediction log and alerts (SQLite by
default, PostgreSQL by URL); the table is created where it is missing, so opening a store is
idempotent. A headline id already stored for a model is skipped, not stored twice: a replayed
or re-sent batch does not inflate the counts. Every write is one committed transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    Integer,
    String,
    Text,
    UniqueConstraint,
    case,
    func,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from lmforge.registry.db import as_utc

__all__ = ["HeadlineRow", "HeadlineStore", "ScoredHeadline", "WindowFigures"]


class FinanceBase(DeclarativeBase):
    pass


class HeadlineRow(FinanceBase):
    __tablename__ = "finance_headlines"
    __table_args__ = (UniqueConstraint("model", "headline_id", name="uq_finance_model_headline"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    headline_id: Mapped[str] = mapped_column(String(128))
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    text: Mapped[str] = mapped_column(Text)
    label: Mapped[str] = mapped_column(String(16))
    score: Mapped[float] = mapped_column(Float)  # the label's probability
    negative: Mapped[float] = mapped_column(Float)
    neutral: Mapped[float] = mapped_column(Float)
    positive: Mapped[float] = mapped_column(Float)
    tone: Mapped[float] = mapped_column(Float)
    model: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    entities: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    ingested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class ScoredHeadline:
    """A headline with the model's verdict: ``scores`` by label, ``entities`` as
    ``{"name", "kind"}`` (kind: company, sector or market)."""

    id: str
    time: datetime
    text: str
    label: str
    score: float
    scores: dict[str, float]
    model: str
    version: int | None
    entities: list[dict[str, str]] = field(default_factory=list)

    @property
    def tone(self) -> float:
        return self.scores.get("positive", 0.0) - self.scores.get("negative", 0.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time.isoformat(),
            "text": self.text,
            "label": self.label,
            "score": self.score,
            "scores": self.scores,
            "tone": self.tone,
            "model": self.model,
            "version": self.version,
            "entities": self.entities,
        }


@dataclass(frozen=True)
class WindowFigures:
    """One window's counts: ``volume``, ``negative``/``positive`` counts and the mean tone."""

    volume: int
    negative: int
    positive: int
    mean_tone: float | None
    mean_confidence: float | None

    def figures(self) -> dict[str, float]:
        """The alert engine's figure names (``label_share.negative`` ...)."""
        out = {"volume": float(self.volume)}
        if self.volume:
            out["label_share.negative"] = self.negative / self.volume
            out["label_share.positive"] = self.positive / self.volume
            out["label_share.neutral"] = (self.volume - self.negative - self.positive) / self.volume
            out["mean_tone"] = self.mean_tone or 0.0
            out["mean_confidence"] = self.mean_confidence or 0.0
        return out


class HeadlineStore:
    """Scored headlines in the registry's database (see the module docstring)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        FinanceBase.metadata.create_all(engine)

    def add(self, headlines: Sequence[ScoredHeadline]) -> int:
        """Store the headlines not yet stored for their model; how many were new."""
        for _ in range(3):  # another writer inserting the same ids at once: read again, retry
            try:
                return self._add_once(headlines)
            except IntegrityError:
                continue
        return self._add_once(headlines)

    def _add_once(self, headlines: Sequence[ScoredHeadline]) -> int:
        now = datetime.now(UTC)
        added = 0
        with Session(self.engine) as session, session.begin():
            for model in sorted({h.model for h in headlines}):
                mine = [h for h in headlines if h.model == model]
                ids = sorted({h.id for h in mine})
                seen: set[str] = set()
                for start in range(0, len(ids), 500):  # bound the IN list
                    query = select(HeadlineRow.headline_id).where(
                        HeadlineRow.model == model,
                        HeadlineRow.headline_id.in_(ids[start : start + 500]),
                    )
                    seen.update(session.scalars(query))
                for h in mine:
                    if h.id in seen:
                        continue
                    seen.add(h.id)
                    session.add(_row(h, now))
                    added += 1
        return added

    def window(self, model: str, start: datetime, end: datetime) -> WindowFigures:
        """Counts of ``model``'s headlines published in ``[start, end)``, in one query."""
        query = select(
            func.count(HeadlineRow.id),
            func.sum(case((HeadlineRow.label == "negative", 1), else_=0)),
            func.sum(case((HeadlineRow.label == "positive", 1), else_=0)),
            func.avg(HeadlineRow.tone),
            func.avg(HeadlineRow.score),
        ).where(*_between(model, start, end))
        with Session(self.engine) as session:
            count, neg, pos, tone, conf = session.execute(query).one()
        return WindowFigures(
            int(count or 0),
            int(neg or 0),
            int(pos or 0),
            float(tone) if tone is not None else None,
            float(conf) if conf is not None else None,
        )

    def headlines(
        self,
        model: str,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        most_negative: bool = False,
        limit: int | None = None,
    ) -> list[ScoredHeadline]:
        """``model``'s headlines in ``[start, end)``, by time (or most negative first)."""
        query = select(HeadlineRow).where(*_between(model, start, end))
        if most_negative:
            query = query.order_by(HeadlineRow.negative.desc(), HeadlineRow.id)
        else:
            query = query.order_by(HeadlineRow.time, HeadlineRow.id)
        if limit is not None:
            query = query.limit(limit)
        with Session(self.engine) as session:
            return [_scored(row) for row in session.scalars(query)]

    def span(self, model: str) -> tuple[datetime, datetime] | None:
        """The first and last publication time of ``model``'s headlines (None: none stored)."""
        query = select(func.min(HeadlineRow.time), func.max(HeadlineRow.time)).where(
            HeadlineRow.model == model
        )
        with Session(self.engine) as session:
            first, last = session.execute(query).one()
        return None if first is None else (as_utc(first), as_utc(last))


def _between(model: str, start: datetime | None, end: datetime | None) -> list[Any]:
    where: list[Any] = [HeadlineRow.model == model]
    if start is not None:  # a naive time is UTC, as the stored ones are
        where.append(HeadlineRow.time >= as_utc(start).astimezone(UTC))
    if end is not None:
        where.append(HeadlineRow.time < as_utc(end).astimezone(UTC))
    return where


def _row(h: ScoredHeadline, now: datetime) -> HeadlineRow:
    return HeadlineRow(
        headline_id=h.id,
        time=h.time,
        text=h.text,
        label=h.label,
        score=h.score,
        negative=h.scores.get("negative", 0.0),
        neutral=h.scores.get("neutral", 0.0),
        positive=h.scores.get("positive", 0.0),
        tone=h.tone,
        model=h.model,
        version=h.version,
        entities=h.entities,
        ingested_at=now,
    )


def _scored(row: HeadlineRow) -> ScoredHeadline:
    return ScoredHeadline(
        id=row.headline_id,
        time=as_utc(row.time),
        text=row.text,
        label=row.label,
        score=row.score,
        scores={"negative": row.negative, "neutral": row.neutral, "positive": row.positive},
        model=row.model,
        version=row.version,
        entities=list(row.entities or []),
    )
