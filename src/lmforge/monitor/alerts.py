"""Alert rules and their evaluation: the one alert engine (server gauges, the finance monitor's
surge alerts and any operator rule are rules here).

A rule watches one figure of one model (or of every served model, ``model: "*"``) over a
trailing window and matches in one of two ways:

- ``kind: threshold`` — the window's value is above (or below) a fixed ``threshold``;
- ``kind: baseline`` — the value is significantly above (or below) the same figure over the
  preceding ``baseline`` span, cut into windows of the same length: ``test: zscore`` compares it
  with the mean and standard deviation of those windows' values; ``test: proportion`` (for a
  share, e.g. ``label_share.negative``) with the baseline's pooled share and the binomial
  standard error of the current window's volume. ``min_change`` adds a minimum effect, so that
  a very flat baseline does not fire on a negligible change.

Both have ``min_volume`` (fewer predictions in a window: no verdict), ``for`` (the condition must
hold this long before it fires) and ``cooldown`` (after a resolution, no new alert of the same
rule and model before this long). :func:`evaluate_rules` is pure: figures in, one
:class:`Evaluation` per rule and model out; the state (firing → resolved) is kept by
:class:`~lmforge.monitor.alert_loop.AlertEngine` over
:class:`~lmforge.monitor.alert_store.AlertStore`.

Figures come from a :data:`FiguresProvider` — ``(model, start, end) -> {name: value}`` — so the
engine depends on no particular report.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from lmforge.errors import first_line
from lmforge.recipe.loader import validate_config

FiguresProvider = Callable[[str, datetime, datetime], Mapping[str, float]]
"""``(model, window start, window end)`` → the window's figures by name (``volume`` among them)."""

# Figures a rule may watch; ``label_share.<label>`` and ``drift.<...>`` are families.
FIGURES = (
    "volume",
    "latency_p50_ms",
    "latency_p99_ms",
    "mean_confidence",
    "low_confidence_share",
    "feedback_count",
    "live_accuracy",
    "live_macro_f1",
)
FIGURE_FAMILIES = ("label_share.", "drift.")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration(value: Any) -> Any:
    """``"90s"``, ``"15m"``, ``"1h"``, ``"7d"``, ``"2w"`` → a timedelta; a number is seconds;
    anything else is left to pydantic (ISO 8601 ``PT1H`` also works)."""
    if isinstance(value, str):
        found = _DURATION.match(value)
        if found is None and not value.strip().upper().startswith("P"):
            raise ValueError(f"'{value}' is not a duration — write e.g. 30s, 15m, 1h, 7d")
        if found is not None:
            return timedelta(seconds=float(found.group(1)) * _UNITS[found.group(2)])
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class AlertRule(BaseModel):
    """One alert rule (the server's ``monitor.rules`` entries; see docs/monitoring.md)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="unique; letters, digits, '_', '.', '-' (a Prometheus label value)",
    )
    kind: Literal["threshold", "baseline"] = Field(
        "threshold", description="a fixed threshold, or significance against a rolling baseline"
    )
    model: str = Field("*", min_length=1, max_length=64, description="a model name, or * for all")
    metric: str = Field(description="a figure: volume, latency_p99_ms, label_share.LABEL, ...")
    comparison: Literal["above", "below"] = Field("above", description="the direction that fires")
    threshold: float | None = Field(
        None, allow_inf_nan=False, description="threshold rules: the value that fires"
    )
    window: Duration = Field(timedelta(hours=1), description="the trailing window the value is of")
    min_volume: int = Field(0, ge=0, description="fewer predictions in a window: no verdict")
    for_: Duration = Field(
        timedelta(0), alias="for", description="the condition must hold this long to fire"
    )
    cooldown: Duration = Field(
        timedelta(0), description="after a resolution, no new alert of this rule before this"
    )
    severity: Literal["info", "warning", "critical"] = "warning"
    # baseline rules
    baseline: Duration | None = Field(
        None, description="baseline rules: the span before the window the value is compared to"
    )
    test: Literal["zscore", "proportion"] = Field(
        "zscore", description="baseline rules: how significance is measured"
    )
    z: float = Field(3.0, gt=0, description="baseline rules: standard errors needed to fire")
    min_change: float = Field(0.0, ge=0, description="baseline rules: the least absolute change")
    min_baseline_windows: int = Field(
        3, ge=2, description="baseline rules: baseline windows with enough volume needed"
    )

    @field_validator("metric")
    @classmethod
    def _known_figure(cls, metric: str) -> str:
        if not (metric in FIGURES or metric.startswith(FIGURE_FAMILIES)):
            raise ValueError(
                f"'{metric}' is not a figure: use one of {', '.join(FIGURES)}, "
                "label_share.LABEL or drift.DETECTOR.statistic|p_value"
            )
        return metric

    @field_validator("window", "baseline")
    @classmethod
    def _positive(cls, span: timedelta | None) -> timedelta | None:
        if span is not None and span <= timedelta(0):
            raise ValueError("must be a positive duration, e.g. 15m")
        return span

    @field_validator("for_", "cooldown")
    @classmethod
    def _not_negative(cls, span: timedelta) -> timedelta:
        if span < timedelta(0):
            raise ValueError("must not be negative")
        return span

    @model_validator(mode="after")
    def _consistent(self) -> AlertRule:
        if self.kind == "threshold":
            if self.threshold is None:
                raise ValueError(f"rule '{self.name}': a threshold rule needs 'threshold'")
            if self.baseline is not None:
                raise ValueError(f"rule '{self.name}': 'baseline' needs kind: baseline")
            return self
        if self.threshold is not None:
            raise ValueError(
                f"rule '{self.name}': a baseline rule takes 'z' (and 'min_change'), not 'threshold'"
            )
        if self.baseline is None:
            raise ValueError(f"rule '{self.name}': a baseline rule needs 'baseline' (e.g. 7d)")
        if self.baseline < self.window * self.min_baseline_windows:
            raise ValueError(
                f"rule '{self.name}': baseline must span at least min_baseline_windows "
                f"({self.min_baseline_windows}) windows of {self.window.total_seconds():g}s"
            )
        if self.test == "proportion" and not _is_share(self.metric):
            raise ValueError(
                f"rule '{self.name}': test proportion is for a share of predictions "
                "(label_share.LABEL or low_confidence_share); use test: zscore"
            )
        return self

    def models(self, served: Iterable[str]) -> list[str]:
        """The models this rule watches among the served ones (a named model: that one)."""
        return sorted(set(served)) if self.model == "*" else [self.model]


def _is_share(metric: str) -> bool:
    return metric.startswith("label_share.") or metric == "low_confidence_share"


def parse_rule(raw: Any, source: str = "alert rule") -> AlertRule:
    """A rule from a mapping; a bad one is a one-line ``RecipeError`` naming the field."""
    return validate_config(AlertRule, raw, source, "name, metric, threshold, ...")


@dataclass(frozen=True)
class Evaluation:
    """One rule on one model at one moment. ``state``: ``match`` (the condition holds),
    ``clear`` (it does not), ``no_data`` (too little volume, or the figure is absent) or
    ``error`` (the figures could not be computed; ``details["error"]`` says why).
    ``threshold`` is the value at which it fires (a baseline rule's: the baseline's)."""

    rule: AlertRule
    model: str
    state: Literal["match", "clear", "no_data", "error"]
    at: datetime
    value: float | None = None
    threshold: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


Cache = MutableMapping[tuple[str, datetime, datetime], Mapping[str, float]]


class _Figures:
    """Figures by (model, start, end): computed once per evaluation; windows that ended before
    ``closed_before`` are also kept in ``cache`` across evaluations (their rows are written)."""

    def __init__(self, provider: FiguresProvider, cache: Cache | None, closed_before: datetime):
        self.provider = provider
        self.cache = cache
        self.closed_before = closed_before
        self.memo: dict[tuple[str, datetime, datetime], Mapping[str, float]] = {}

    def __call__(self, model: str, start: datetime, end: datetime) -> Mapping[str, float]:
        key = (model, start, end)
        found = self.memo.get(key)
        if found is None and self.cache is not None:
            found = self.cache.get(key)
        if found is None:
            found = self.provider(model, start, end)
            if self.cache is not None and end <= self.closed_before:
                self.cache[key] = found
        self.memo[key] = found
        return found


def evaluate_rules(
    rules: Sequence[AlertRule],
    figures: FiguresProvider,
    models: Iterable[str],
    now: datetime | None = None,
    *,
    cache: Cache | None = None,
    settle: timedelta = timedelta(minutes=1),
) -> list[Evaluation]:
    """Every rule on every model it watches (``models``: the served ones, for ``*`` rules).

    A provider that raises gives that rule and model an ``error`` evaluation, not an exception:
    one model's broken figures do not silence the others. ``cache`` keeps baseline windows'
    figures across calls (those windows lie on a fixed grid, so they repeat); only windows that
    ended ``settle`` before ``now`` are kept, once the prediction log has written their rows.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    fetch = _Figures(figures, cache, now - settle)
    served = list(models)
    return [_evaluate(rule, model, fetch, now) for rule in rules for model in rule.models(served)]


def _evaluate(rule: AlertRule, model: str, fetch: _Figures, now: datetime) -> Evaluation:
    def verdict(state: Any, **kw: Any) -> Evaluation:
        return Evaluation(rule=rule, model=model, state=state, at=now, **kw)

    try:
        current = fetch(model, now - rule.window, now)
        value, short = _value(rule, current)
        if value is None:
            return verdict("no_data", details={"reason": short})
        if rule.kind == "threshold":
            limit = rule.threshold
            assert limit is not None  # checked by the rule's validator
            return verdict(_side(rule, value, limit), value=value, threshold=limit)
        past = [fetch(model, start, end) for start, end in baseline_windows(rule, now)]
    except Exception as exc:  # the provider's failure, whatever it is: this pair has no verdict
        return verdict("error", details={"error": first_line(exc)})
    kept = [(v, f.get("volume", 0.0)) for f in past if (v := _value(rule, f)[0]) is not None]
    if len(kept) < rule.min_baseline_windows:
        reason = f"{len(kept)} baseline windows with data, {rule.min_baseline_windows} needed"
        return verdict("no_data", value=value, details={"reason": reason})
    values = [v for v, _ in kept]
    if rule.test == "proportion":
        total = sum(n for _, n in kept)
        mean = sum(v * n for v, n in kept) / total if total > 0 else statistics.fmean(values)
        volume = current.get("volume", 0.0)
        sigma = math.sqrt(mean * (1 - mean) / volume) if volume > 0 else math.inf
    else:
        mean, sigma = statistics.fmean(values), statistics.stdev(values)
    margin = max(rule.z * sigma, rule.min_change)
    threshold = mean + margin if rule.comparison == "above" else mean - margin
    details = {
        "test": rule.test,
        "baseline_mean": mean,
        "baseline_sigma": sigma if math.isfinite(sigma) else None,  # JSON has no infinity
        "baseline_windows": len(kept),
        "z": (value - mean) / sigma if 0 < sigma < math.inf else None,
    }
    return verdict(_side(rule, value, threshold), value=value, threshold=threshold, details=details)


def baseline_windows(rule: AlertRule, now: datetime) -> list[tuple[datetime, datetime]]:
    """A baseline rule's windows, newest first: ``baseline / window`` windows of the rule's
    length tiling the span before the current window, aligned to a fixed grid (multiples of the
    window since the epoch) so that they repeat from one evaluation to the next."""
    if rule.baseline is None:
        return []
    step = rule.window.total_seconds()
    grid = math.floor((now - rule.window).timestamp() / step) * step
    edge = datetime.fromtimestamp(grid, UTC)
    count = int(rule.baseline.total_seconds() // step)
    return [(edge - rule.window * (i + 1), edge - rule.window * i) for i in range(count)]


def _value(rule: AlertRule, figures: Mapping[str, float]) -> tuple[float | None, str]:
    """The rule's figure in a window, or None and why (too little volume, absent, not finite)."""
    volume = figures.get("volume")
    if rule.min_volume and (volume is None or volume < rule.min_volume):
        return None, f"volume {volume or 0:g} below min_volume {rule.min_volume}"
    value = figures.get(rule.metric)
    if value is None or not math.isfinite(value):
        return None, f"no finite {rule.metric} in the window"
    return float(value), ""


def _side(rule: AlertRule, value: float, threshold: float) -> Literal["match", "clear"]:
    over = value > threshold if rule.comparison == "above" else value < threshold
    return "match" if over else "clear"
