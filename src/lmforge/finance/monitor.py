"""The finance monitor, end to end: headlines in, scored, stored, judged by the surge rule, and
the timeline out — the one library code behind ``lmforge app finance-monitor`` and the server's
``/v1/finance/...`` routes.

:class:`FinanceMonitor` holds the stores (headlines, alerts: the registry's database), the surge
rule and its engine; it does not score (the CLI scores with a :class:`~lmforge.finance.scoring.
Scorer`, the server through its model pool). :func:`run_stream` feeds it day by day — a replay
of a built-in source, a file or stdin — scoring each day's headlines in batches, then judging
the day's end, at most as fast as ``speed`` (wall seconds per simulated day) allows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TextIO

from sqlalchemy.engine import Engine

from lmforge.errors import LmforgeError
from lmforge.finance.aggregate import by_entity, daily, hourly
from lmforge.finance.ingest import Headline, day_end, parse_speed, read_headlines, replay_days
from lmforge.finance.scoring import Scorer
from lmforge.finance.store import HeadlineStore, ScoredHeadline
from lmforge.finance.surge import (
    SURGE_RULE,
    ExplainHeadline,
    SurgeConfig,
    SurgeEngine,
    figures_provider,
    surge_rule,
)
from lmforge.finance.timeline import Timeline
from lmforge.finance.why import HeadlineExplainer
from lmforge.monitor.alert_loop import Transitions
from lmforge.monitor.alert_store import Alert, AlertStore
from lmforge.monitor.alerts import Cache, evaluate_rules
from lmforge.progress import ProgressReporter, SilentProgress
from lmforge.registry import Registry
from lmforge.registry.db import as_utc
from lmforge.settings import Settings, get_settings

__all__ = [
    "FinanceMonitor",
    "HeadlineScorer",
    "StreamResult",
    "by_day",
    "monitor_headlines",
    "run_stream",
]


class HeadlineScorer(Protocol):
    """What scores a stream: a :class:`~lmforge.finance.scoring.Scorer`, or anything with its
    ``ref`` and ``score``."""

    @property
    def ref(self) -> str: ...

    def score(self, headlines: Sequence[Headline]) -> list[ScoredHeadline]: ...


class FinanceMonitor:
    """One model's headlines, surge rule and alerts, over one database."""

    def __init__(
        self,
        model: str,
        engine: Engine,
        config: SurgeConfig | None = None,
        explain: ExplainHeadline | None = None,
    ) -> None:
        self.model = model
        self.config = config or SurgeConfig()
        self.headlines = HeadlineStore(engine)
        self.alerts = AlertStore(engine)
        self.rule = surge_rule(self.config, model=model)
        self.engine = SurgeEngine(
            self.alerts,
            self.headlines,
            self.config.top_headlines,
            explain if self.config.explain else None,
        )
        self.figures = figures_provider(self.headlines)
        self._cache: Cache = {}
        self._horizon: datetime | None = None  # the latest moment judged

    def store(self, scored: Sequence[ScoredHeadline]) -> int:
        """Store scored headlines; how many were new."""
        return self.headlines.add(scored)

    def judge(self, now: datetime) -> Transitions:
        """The surge rule at ``now``: the alerts that fired or resolved. Time only moves forward:
        a moment at or before this rule's latest recorded event (a replay of days already
        judged) is not judged again, so it cannot resolve or re-fire what was recorded later."""
        if self._horizon is None:
            events = [t for a in self.alert_list() for t in (a.fired_at, a.resolved_at) if t]
            self._horizon = max(events, default=datetime.min.replace(tzinfo=UTC))
        if now <= self._horizon:
            return Transitions()
        evaluations = evaluate_rules(
            [self.rule], self.figures, [self.model], now, cache=self._cache, settle=_NO_SETTLE
        )
        self._horizon = now
        return self.engine.step(evaluations)

    def alert_list(
        self, since: datetime | None = None, until: datetime | None = None, limit: int | None = None
    ) -> list[Alert]:
        """The surge alerts of this model fired in ``[since, until)``, oldest first."""
        until = as_utc(until) if until is not None else None  # a naive time is UTC
        found = self.alerts.list(rule=SURGE_RULE, model=self.model, since=since, limit=limit)
        return sorted((a for a in found if until is None or a.fired_at < until),
                      key=lambda a: a.fired_at)  # fmt: skip

    def timeline(
        self, since: datetime | None = None, until: datetime | None = None, entities: int = 20
    ) -> tuple[Timeline, list[ScoredHeadline]]:
        """The timeline of ``[since, until)`` (default: all stored), and its headlines."""
        rows = self.headlines.headlines(self.model, since, until)
        found = Timeline(
            model=self.model,
            days=daily(rows, self.headlines, self.rule),
            hours=hourly(rows),
            entities=by_entity(rows, entities),
            alerts=self.alert_list(since, until),
        )
        return found, rows


_NO_SETTLE = timedelta(0)  # a stream's windows are complete when judged


@dataclass
class StreamResult:
    """What a stream did: headlines read and newly stored, alerts fired during it, the time
    spent scoring, storing and judging (waits for ``speed`` excluded), and the timeline."""

    model: str
    source: str
    headlines: int
    stored: int
    seconds: float
    fired: list[Alert]
    timeline: Timeline
    rows: list[ScoredHeadline] = field(default_factory=list, repr=False)

    @property
    def headlines_per_second(self) -> float:
        return self.headlines / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document (docs/finance.md)."""
        return {
            "model": self.model,
            "source": self.source,
            "headlines": self.headlines,
            "stored": self.stored,
            "seconds": self.seconds,
            "headlines_per_second": self.headlines_per_second,
            "fired": [a.to_json() for a in self.fired],
            **{k: v for k, v in self.timeline.to_json().items() if k != "model"},
        }


def by_day(headlines: Sequence[Headline]) -> list[tuple[date, list[Headline]]]:
    """Headlines grouped by their UTC day, days and headlines in time order."""
    days: dict[date, list[Headline]] = {}
    for h in sorted(headlines, key=lambda h: h.time):
        days.setdefault(h.time.date(), []).append(h)
    return sorted(days.items())


def run_stream(
    monitor: FinanceMonitor,
    scorer: HeadlineScorer,
    days: Sequence[tuple[date, list[Headline]]],
    source: str,
    *,
    speed: float = 0.0,
    sleep: Callable[[float], None] = time.sleep,
    progress: ProgressReporter | None = None,
) -> StreamResult:
    """Score, store and judge ``days`` in order; each day takes at least ``speed`` seconds."""
    progress = progress or SilentProgress()
    progress.start("monitoring headlines", sum(len(rows) for _, rows in days))
    busy, stored, fired = 0.0, 0, []
    try:
        for day, rows in days:
            started = time.perf_counter()
            stored += monitor.store(scorer.score(rows))
            fired += monitor.judge(day_end(day)).fired
            spent = time.perf_counter() - started
            busy += spent
            progress.advance(len(rows))
            if speed > spent:
                sleep(speed - spent)
    finally:
        progress.stop()
    # the timeline of the stream's days: what it ingested, with what was stored before in them
    since = day_end(days[0][0]) - timedelta(days=1) if days else None
    until = day_end(days[-1][0]) if days else None
    found, kept = monitor.timeline(since, until)
    return StreamResult(
        model=scorer.ref,
        source=source,
        headlines=sum(len(rows) for _, rows in days),
        stored=stored,
        seconds=busy,
        fired=fired,
        timeline=found,
        rows=kept,
    )


def monitor_headlines(
    model: str,
    *,
    replay: str | None = None,
    file: Path | None = None,
    stdin: TextIO | None = None,
    speed: str = "max",
    settings: Settings | None = None,
    backend: str | None = None,
    config: SurgeConfig | None = None,
    progress: ProgressReporter | None = None,
) -> StreamResult:
    """``lmforge app finance-monitor``: one source — a ``replay`` of a built-in source, a
    ``file``, or ``stdin`` — read and checked whole before the model loads, then scored, stored
    and judged day by day into the registry's database."""
    if (replay is not None) + (file is not None) + (stdin is not None) != 1:
        raise LmforgeError(
            "give exactly one source of headlines", "use --replay SOURCE, --file FILE or -"
        )
    wait = parse_speed(speed)
    if replay is not None:
        days, source = replay_days(replay), f"replay:{replay}"
    else:
        days, source = by_day(read_headlines(file, stdin)), str(file) if file else "stdin"
    settings = settings or get_settings()
    scorer = Scorer(model, settings, backend=backend)
    explain = HeadlineExplainer(settings)
    monitor = FinanceMonitor(scorer.model, Registry(settings).engine, config, explain)
    return run_stream(monitor, scorer, days, source, speed=wait, progress=progress)
