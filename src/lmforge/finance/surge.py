"""The surge alert: a ``baseline`` rule of the alert engine over the negative share.

The rule and its thresholds were fixed from first principles before any replay was run (see
docs/finance.md, "The surge rule", for the reasoning): the share of negative headlines over a
trailing **3-day** window is compared with its pooled share over the **21 days** before it (seven
3-day windows), by the binomial standard error of the current window's volume
(``test: proportion``); it fires when it is at least **z = 3** standard errors **and** at least
**10 points** above, with at least **30 headlines** in the window and three baseline windows
with that volume. After an alert resolves, the rule is quiet for **7 days** (``cooldown``): a
surge that dips and returns within a week is the same episode.

:class:`SurgeEngine` is the engine's :class:`~lmforge.monitor.alert_loop.AlertEngine` with one
addition: a matching evaluation of the surge rule is given its window, its figures and the most
negative headlines of the window — each with the words that made it negative, where an
explainer is given (:mod:`lmforge.finance.why`) — before it is recorded, so an alert says what
drove it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lmforge.finance.store import HeadlineStore, ScoredHeadline
from lmforge.monitor.alert_loop import AlertEngine, Transitions
from lmforge.monitor.alert_store import AlertStore
from lmforge.monitor.alerts import AlertRule, Duration, Evaluation, FiguresProvider

__all__ = ["SURGE_RULE", "SurgeConfig", "SurgeEngine", "figures_provider", "surge_rule"]

SURGE_RULE = "finance-surge"


class SurgeConfig(BaseModel):
    """The surge rule's settings (the server config's ``finance.surge``); the defaults are the
    thresholds fixed before the 2020 replay."""

    model_config = ConfigDict(extra="forbid")

    window: Duration = Field(timedelta(days=3), description="the trailing window judged")
    baseline: Duration = Field(timedelta(days=21), description="the span before it compared with")
    z: float = Field(3.0, gt=0, description="binomial standard errors above the baseline")
    min_change: float = Field(0.10, ge=0, le=1, description="the least rise of the share")
    min_volume: int = Field(30, ge=1, description="headlines a window needs for a verdict")
    cooldown: Duration = Field(timedelta(days=7), description="quiet time after a resolution")
    top_headlines: int = Field(5, ge=0, le=50, description="headlines kept with an alert")
    explain: bool = Field(
        True, description="explain each kept headline (the words that made it negative)"
    )


def surge_rule(config: SurgeConfig | None = None, model: str = "*") -> AlertRule:
    """The surge rule as an alert-engine rule."""
    c = config or SurgeConfig()
    return AlertRule.model_validate(
        {
            "name": SURGE_RULE,
            "kind": "baseline",
            "model": model,
            "metric": "label_share.negative",
            "comparison": "above",
            "window": c.window,
            "baseline": c.baseline,
            "test": "proportion",
            "z": c.z,
            "min_change": c.min_change,
            "min_volume": c.min_volume,
            "min_baseline_windows": 3,
            "cooldown": c.cooldown,
            "severity": "warning",
        }
    )


def figures_provider(store: HeadlineStore) -> FiguresProvider:
    """The alert engine's figures for a model's stored headlines published in a window."""
    return lambda model, start, end: store.window(model, start, end).figures()


#: Why a headline was scored negative (:class:`~lmforge.finance.why.HeadlineExplainer`).
ExplainHeadline = Callable[[ScoredHeadline], dict[str, Any] | None]


class SurgeEngine(AlertEngine):
    """An :class:`AlertEngine` whose surge alerts carry their window, figures and headlines
    (each with ``why`` it was negative, when ``explain`` is given)."""

    def __init__(
        self,
        store: AlertStore,
        headlines: HeadlineStore,
        top: int = 5,
        explain: ExplainHeadline | None = None,
    ) -> None:
        super().__init__(store)
        self.headlines = headlines
        self.top = top
        self.explain = explain

    def step(self, evaluations: Sequence[Evaluation]) -> Transitions:
        return super().step([self._explained(ev) for ev in evaluations])

    def _explained(self, ev: Evaluation) -> Evaluation:
        if ev.state != "match" or ev.rule.name != SURGE_RULE:
            return ev
        start = ev.at - ev.rule.window
        counts = self.headlines.window(ev.model, start, ev.at)
        top = self.headlines.headlines(ev.model, start, ev.at, most_negative=True, limit=self.top)
        details = {
            **ev.details,
            "window_start": start.isoformat(),
            "window_end": ev.at.isoformat(),
            "volume": counts.volume,
            "negative": counts.negative,
            "negative_share": counts.negative / counts.volume if counts.volume else None,
            "top_headlines": [
                {
                    "id": h.id,
                    "time": h.time.isoformat(),
                    "text": h.text,
                    "label": h.label,
                    "negative": h.scores["negative"],
                    "entities": [e["name"] for e in h.entities],
                    **({"why": self.explain(h)} if self.explain is not None else {}),
                }
                for h in top
            ],
        }
        return replace(ev, details=details)
