"""Alerts over time: :class:`AlertEngine` turns evaluations into firing and resolved alerts, and
:class:`MonitorLoop` runs a round on a schedule (figures for the gauges, rules, store, webhook).

The state machine, per rule and model: a ``match`` starts the ``for`` clock (pending); once the
condition has held that long — and the ``cooldown`` since the last resolution has passed — the
alert fires: it is recorded (one open alert per rule and model, in the store), and reported
once. While it keeps matching nothing new happens, so a sustained condition fires once. A
``clear`` resolves it (and stops a pending clock); ``no_data`` and ``error`` change nothing: too
little traffic neither proves nor disproves a condition. The open alerts live in the database,
so a restarted server resolves what an earlier one fired.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from lmforge.errors import first_line
from lmforge.monitor.alert_store import Alert, AlertStore
from lmforge.monitor.alerts import AlertRule, Cache, Evaluation, FiguresProvider, evaluate_rules
from lmforge.monitor.webhook import WebhookSender

logger = logging.getLogger("lmforge.monitor")


@dataclass
class Transitions:
    """What one round changed: alerts that fired, alerts that resolved, and the evaluations
    (``error`` ones among them) it was decided from."""

    fired: list[Alert] = field(default_factory=list)
    resolved: list[Alert] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)


class AlertEngine:
    """Firing → resolved transitions over an :class:`AlertStore` (see the module docstring)."""

    def __init__(self, store: AlertStore) -> None:
        self.store = store
        self._pending: dict[tuple[str, str], datetime] = {}  # (rule, model) -> matching since

    def step(self, evaluations: Sequence[Evaluation]) -> Transitions:
        """Apply one round's evaluations; what fired and what resolved."""
        out = Transitions(evaluations=list(evaluations))
        firing = self.store.firing()
        for ev in evaluations:
            pair = (ev.rule.name, ev.model)
            if ev.state == "clear":
                self._pending.pop(pair, None)
                if pair in firing and firing[pair].id is not None:
                    done = self.store.resolve(firing[pair].id, ev.at)  # type: ignore[arg-type]
                    if done is not None:
                        out.resolved.append(done)
            elif ev.state == "match" and pair not in firing:
                since = self._pending.setdefault(pair, ev.at)
                if ev.at - since < ev.rule.for_ or self._cooling(ev):
                    continue
                stored = self.store.record(_alert(ev))
                self._pending.pop(pair, None)
                if stored is not None:  # None: another replica recorded it first
                    out.fired.append(stored)
        return out

    def _cooling(self, ev: Evaluation) -> bool:
        if ev.rule.cooldown <= timedelta(0):
            return False
        last = self.store.last_resolved_at(ev.rule.name, ev.model)
        return last is not None and ev.at - last < ev.rule.cooldown


def _alert(ev: Evaluation) -> Alert:
    assert ev.value is not None and ev.threshold is not None  # a match has both
    return Alert(
        rule=ev.rule.name,
        model=ev.model,
        metric=ev.rule.metric,
        comparison=ev.rule.comparison,
        value=ev.value,
        threshold=ev.threshold,
        window_s=ev.rule.window.total_seconds(),
        severity=ev.rule.severity,
        fired_at=ev.at,
        details={"kind": ev.rule.kind, **ev.details},
    )


# every served model's figures over the gauges' window ({} for a model whose figures failed)
OnFigures = Callable[[Mapping[str, Mapping[str, float]]], None]
OnAlert = Callable[[str, Alert], None]  # ("firing" | "resolved", alert)
OnRound = Callable[[bool], None]  # whether the round succeeded


class MonitorLoop:
    """Every ``interval``: the figures of each model over the last ``window`` (all handed to
    ``on_figures`` at once, for the gauges), the rules evaluated and applied, each firing or
    resolved alert logged, handed to ``on_alert`` and queued for the webhook. A round that fails is
    logged (``on_round(False)``) and the next one runs. ``models`` says which models are served
    now (read every round: the server's models change)."""

    def __init__(
        self,
        *,
        rules: Sequence[AlertRule],
        figures: FiguresProvider,
        models: Callable[[], Iterable[str]],
        store: AlertStore,
        interval: timedelta,
        window: timedelta,
        webhook: WebhookSender | None = None,
        on_figures: OnFigures | None = None,
        on_alert: OnAlert | None = None,
        on_round: OnRound | None = None,
    ) -> None:
        self.rules = list(rules)
        self.figures = figures
        self.models = models
        self.engine = AlertEngine(store)
        self.interval = interval
        self.window = window
        self.webhook = webhook
        self.on_figures = on_figures
        self.on_alert = on_alert
        self.on_round = on_round
        self.rounds = 0
        self.failed_rounds = 0
        self._cache: Cache = {}
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.webhook is not None:
            self.webhook.start()
        self._task = asyncio.get_running_loop().create_task(self._run_forever())

    async def close(self) -> None:
        """Stop after the round in progress; deliver the queued webhook bodies."""
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self.webhook is not None:
            await self.webhook.close()

    async def run_once(self, now: datetime | None = None) -> Transitions:
        """One round (its failure raised); the alerts that fired and resolved."""
        now = (now or datetime.now(UTC)).astimezone(UTC)
        served = sorted(set(self.models()))
        gauges, out = await asyncio.to_thread(self._compute, served, now)
        if self.on_figures is not None:
            self.on_figures({model: gauges.get(model, {}) for model in served})
        for ev in out.evaluations:
            if ev.state == "error":
                logger.warning("alert rule %s on %s: %s", ev.rule.name, ev.model, ev.details)
        for event, alerts in (("firing", out.fired), ("resolved", out.resolved)):
            for alert in alerts:
                self._report(event, alert)
        return out

    def _compute(
        self, served: list[str], now: datetime
    ) -> tuple[dict[str, Mapping[str, float]], Transitions]:
        """The blocking part of a round (database reads and writes), run in a thread."""
        gauges: dict[str, Mapping[str, float]] = {}
        for model in served:
            try:
                gauges[model] = self.figures(model, now - self.window, now)
            except Exception as exc:  # one model's figures failing leaves the others shown
                logger.warning("monitor: no figures for %s: %s", model, first_line(exc))

        def figures(model: str, start: datetime, end: datetime) -> Mapping[str, float]:
            if end == now and start == now - self.window and model in gauges:
                return gauges[model]  # the gauges' window: computed just above
            return self.figures(model, start, end)

        evaluations = evaluate_rules(self.rules, figures, served, now, cache=self._cache)
        self._forget_old(now)
        return gauges, self.engine.step(evaluations)

    def _forget_old(self, now: datetime) -> None:
        """Drop cached baseline windows no rule reaches back to any more."""
        reach = max([r.window + (r.baseline or timedelta(0)) for r in self.rules] or [timedelta(0)])
        # twice the reach: the grid puts the oldest baseline window up to a window further back
        for key in [k for k in self._cache if k[1] < now - 2 * reach]:
            del self._cache[key]

    def _report(self, event: str, alert: Alert) -> None:
        level = logging.WARNING if event == "firing" else logging.INFO
        logger.log(
            level,
            "alert %s: %s on %s — %s %s %g (threshold %g)",
            event,
            alert.rule,
            alert.model,
            alert.metric,
            alert.comparison,
            alert.value,
            alert.threshold,
        )
        if self.on_alert is not None:
            self.on_alert(event, alert)
        if self.webhook is not None:
            self.webhook.send({"event": event, "alert": alert.to_json()})

    async def _run_forever(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                await self.run_once()
                ok = True
            except Exception as exc:  # the database away, a bug in a provider: next round
                logger.error("monitor round failed: %s", first_line(exc), exc_info=exc)
                ok = False
            self.rounds += 1
            self.failed_rounds += not ok
            if self.on_round is not None:
                self.on_round(ok)
            wait = max(0.0, self.interval.total_seconds() - (time.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), wait)
