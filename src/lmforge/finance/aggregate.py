"""The day's tone: stored headlines aggregated per day, per hour (where there is the volume),
and per entity, with the surge rule's window value, baseline and threshold for each day.

A period's figures: ``volume`` (headlines), ``negative_share`` and ``positive_share`` (shares of
the model's labels) and ``mean_tone`` (the mean of P(positive) − P(negative), in [−1, 1]).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from lmforge.finance.store import HeadlineStore, ScoredHeadline
from lmforge.monitor.alerts import AlertRule, evaluate_rules

__all__ = ["MIN_HOURLY_VOLUME", "Period", "by_entity", "daily", "hourly"]

# Per-hour figures only where the average hour with headlines has at least this many: below
# it an hour's share is mostly noise (at 10 headlines its binomial error is up to ±0.16).
MIN_HOURLY_VOLUME = 10


@dataclass(frozen=True)
class Period:
    """One day, hour or entity: its figures, and for days the surge rule's view of it."""

    key: str  # the day (2020-02-24), the hour (2020-02-24T09:00:00+00:00) or the entity name
    volume: int
    negative_share: float
    positive_share: float
    mean_tone: float
    kind: str | None = None  # an entity's kind
    window_share: float | None = None  # the rule's window ending with this day
    baseline_mean: float | None = None
    threshold: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _period(key: str, rows: Sequence[ScoredHeadline], kind: str | None = None) -> Period:
    n = len(rows)
    return Period(
        key=key,
        volume=n,
        negative_share=sum(r.label == "negative" for r in rows) / n,
        positive_share=sum(r.label == "positive" for r in rows) / n,
        mean_tone=sum(r.tone for r in rows) / n,
        kind=kind,
    )


def daily(
    rows: Sequence[ScoredHeadline],
    store: HeadlineStore | None = None,
    rule: AlertRule | None = None,
) -> list[Period]:
    """One period per day with headlines, oldest first; with ``store`` and ``rule``, each day
    also carries the rule's window value, baseline mean and threshold at the day's end."""
    by_day: dict[date, list[ScoredHeadline]] = {}
    for row in rows:
        by_day.setdefault(row.time.date(), []).append(row)
    out = []
    cache: dict[Any, Any] = {}
    for day in sorted(by_day):
        period = _period(day.isoformat(), by_day[day])
        if store is not None and rule is not None:
            end = datetime.combine(day, time(0), UTC) + timedelta(days=1)
            provider = lambda m, s, e: store.window(m, s, e).figures()  # noqa: E731
            (ev,) = evaluate_rules([rule], provider, [by_day[day][0].model], end, cache=cache)
            period = Period(
                **{
                    **asdict(period),
                    "window_share": ev.value,
                    "baseline_mean": ev.details.get("baseline_mean"),
                    "threshold": ev.threshold,
                }
            )
        out.append(period)
    return out


def hourly(rows: Sequence[ScoredHeadline], min_volume: int = MIN_HOURLY_VOLUME) -> list[Period]:
    """One period per hour with headlines — or none, where the headlines carry no time of day
    (all at midnight) or the average hour holds fewer than ``min_volume``."""
    by_hour: dict[datetime, list[ScoredHeadline]] = {}
    for row in rows:
        by_hour.setdefault(row.time.replace(minute=0, second=0, microsecond=0), []).append(row)
    if not by_hour or all(h.hour == 0 for h in by_hour):
        return []
    if len(rows) / len(by_hour) < min_volume:
        return []
    return [_period(hour.isoformat(), by_hour[hour]) for hour in sorted(by_hour)]


def by_entity(rows: Sequence[ScoredHeadline], top: int | None = 20) -> list[Period]:
    """One period per entity named, most named first (ties by name)."""
    named: dict[str, list[ScoredHeadline]] = {}
    kinds: dict[str, str] = {}
    for row in rows:
        for entity in row.entities:
            named.setdefault(entity["name"], []).append(row)
            kinds[entity["name"]] = entity["kind"]
    order = sorted(named, key=lambda name: (-len(named[name]), name))
    return [_period(name, named[name], kinds[name]) for name in order[:top]]
