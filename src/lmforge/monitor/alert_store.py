"""Fired alerts in the registry's database: the ``alerts`` table and :class:`AlertStore`.

An alert is firing from ``fired_at`` until ``resolved_at`` is set. While it fires, its
``open_key`` (rule and model) is set and unique, so that at most one alert of a rule on a model
is open at a time — also when several server replicas evaluate the same rules against one
database: the second insert fails and that replica knows the alert is already recorded.
Its own declarative base, as the monitor's other tables (:mod:`lmforge.monitor.tables`), so
reading alerts needs neither the server nor the HTTP layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import JSON, DateTime, Float, Integer, String, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from lmforge.errors import LmforgeError
from lmforge.registry.db import as_utc

AlertState = Literal["firing", "resolved", "all"]
STATES = ("firing", "resolved", "all")


class AlertBase(DeclarativeBase):
    pass


class AlertRow(AlertBase):
    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rule: Mapped[str] = mapped_column(String(64), index=True)
    model: Mapped[str] = mapped_column(String(64), index=True)
    metric: Mapped[str] = mapped_column(String(128))
    comparison: Mapped[str] = mapped_column(String(8))
    value: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    window_s: Mapped[float] = mapped_column(Float)
    severity: Mapped[str] = mapped_column(String(16))
    fired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    # "rule\x1fmodel" while firing, NULL once resolved: one open alert per rule and model
    open_key: Mapped[str | None] = mapped_column(String(160), nullable=True, unique=True)


def create_tables(engine: Engine) -> None:
    """Create the alerts table where it is missing."""
    AlertBase.metadata.create_all(engine)


@dataclass(frozen=True)
class Alert:
    """One alert: a rule that fired on a model. ``value`` is the figure when it fired and
    ``threshold`` the value at which it fires (a baseline rule's: from its baseline, whose
    figures are in ``details``); ``window_s`` the window in seconds."""

    rule: str
    model: str
    metric: str
    comparison: str
    value: float
    threshold: float
    window_s: float
    severity: str
    fired_at: datetime
    details: dict[str, Any] = field(default_factory=dict)
    resolved_at: datetime | None = None
    id: int | None = None  # None until stored

    @property
    def state(self) -> str:
        return "firing" if self.resolved_at is None else "resolved"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule": self.rule,
            "model": self.model,
            "state": self.state,
            "metric": self.metric,
            "comparison": self.comparison,
            "value": self.value,
            "threshold": self.threshold,
            "window_s": self.window_s,
            "severity": self.severity,
            "fired_at": self.fired_at.isoformat(),
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
            "details": self.details,
        }


def _open_key(rule: str, model: str) -> str:
    return f"{rule}\x1f{model}"


class AlertStore:
    """Alerts in the registry's database. Every write is one committed transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_tables(engine)

    def record(self, alert: Alert) -> Alert | None:
        """Store a firing alert; None when this rule already has an open alert on this model
        (recorded by another replica, or earlier by this one)."""
        row = AlertRow(
            rule=alert.rule,
            model=alert.model,
            metric=alert.metric,
            comparison=alert.comparison,
            value=alert.value,
            threshold=alert.threshold,
            window_s=alert.window_s,
            severity=alert.severity,
            fired_at=alert.fired_at,
            details=alert.details,
            open_key=_open_key(alert.rule, alert.model),
        )
        try:
            with Session(self.engine) as session, session.begin():
                session.add(row)
                session.flush()
                return _alert(row)
        except IntegrityError:
            return None

    def resolve(self, alert_id: int, at: datetime | None = None) -> Alert | None:
        """Mark a firing alert resolved; None when it is unknown or already resolved."""
        at = at or datetime.now(UTC)
        with Session(self.engine) as session, session.begin():
            # a conditional update, so that of two replicas resolving it one reports it
            done = session.connection().execute(
                update(AlertRow)
                .where(AlertRow.id == alert_id, AlertRow.resolved_at.is_(None))
                .values(resolved_at=at, open_key=None)
            )
            if not done.rowcount:
                return None
            row = session.get(AlertRow, alert_id)
            return _alert(row) if row is not None else None

    def firing(self) -> dict[tuple[str, str], Alert]:
        """The open alerts by (rule, model)."""
        return {(a.rule, a.model): a for a in self.list(state="firing", limit=None)}

    def last_resolved_at(self, rule: str, model: str) -> datetime | None:
        """When this rule's latest alert on this model was resolved (None: never)."""
        query = (
            select(AlertRow.resolved_at)
            .where(AlertRow.rule == rule, AlertRow.model == model)
            .where(AlertRow.resolved_at.is_not(None))
            .order_by(AlertRow.resolved_at.desc())
            .limit(1)
        )
        with Session(self.engine) as session:
            found = session.scalar(query)
        return as_utc(found) if found is not None else None

    def list(
        self,
        *,
        state: AlertState = "all",
        model: str | None = None,
        rule: str | None = None,
        since: datetime | None = None,
        limit: int | None = 100,
    ) -> list[Alert]:
        """Alerts newest first: ``state`` firing, resolved or all; ``since`` keeps those fired
        at or after it (a naive time is UTC); ``limit`` None for all of them."""
        if state not in STATES:
            raise LmforgeError(f"unknown alert state '{state}'", "use firing, resolved or all")
        if limit is not None and limit < 1:
            raise LmforgeError(f"limit must be at least 1, not {limit}", "ask for 1 or more")
        query = select(AlertRow)
        if state == "firing":
            query = query.where(AlertRow.resolved_at.is_(None))
        elif state == "resolved":
            query = query.where(AlertRow.resolved_at.is_not(None))
        if model is not None:
            query = query.where(AlertRow.model == model)
        if rule is not None:
            query = query.where(AlertRow.rule == rule)
        if since is not None:
            query = query.where(AlertRow.fired_at >= as_utc(since).astimezone(UTC))
        query = query.order_by(AlertRow.fired_at.desc(), AlertRow.id.desc())
        if limit is not None:
            query = query.limit(limit)
        with Session(self.engine) as session:
            return [_alert(row) for row in session.scalars(query)]


def _alert(row: AlertRow) -> Alert:
    return Alert(
        id=row.id,
        rule=row.rule,
        model=row.model,
        metric=row.metric,
        comparison=row.comparison,
        value=row.value,
        threshold=row.threshold,
        window_s=row.window_s,
        severity=row.severity,
        fired_at=as_utc(row.fired_at),
        resolved_at=as_utc(row.resolved_at) if row.resolved_at is not None else None,
        details=dict(row.details or {}),
    )
