"""The closed loop (`lmforge loop`): check the triggers, retrain, gate, promote — once, or every
interval as a long-running job.

A round (:func:`run_round`) retrains when at least ``min_new_feedback`` labelled feedback rows
(a recommender's: interactions) arrived since the last round (the newest feedback the last
retraining used, from its registry record), or when the drift check fired over the traffic
since then; otherwise it does nothing.
Drift is a callable handed in (``drift_check(model, start, end) -> bool``; :func:`report_drift`
is the monitor report's), so the loop runs with any detector, or with none (feedback trigger
only). :func:`run_loop` repeats rounds on a
fixed cadence: a failed round is logged and reported, and the next one runs on time; SIGINT or
SIGTERM ends the job after the round in progress (a second signal interrupts it). Servers pick
a promotion up by themselves: each re-reads its production versions every
``refresh_seconds`` and hot-swaps (docs/serving.md, "Hot swap").
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from lmforge.errors import LmforgeError, describe_exception
from lmforge.monitor import FeedbackStore, summarize_window
from lmforge.progress import ProgressArg, resolve_progress
from lmforge.recipe import Recipe, load_recipe
from lmforge.registry import ModelVersion, Registry
from lmforge.settings import Settings, get_settings
from lmforge.tasks.retrain import production_recipe, retrain
from lmforge.tasks.retrain_record import RECORD, RetrainResult, WarmStart

log = logging.getLogger("lmforge.loop")

#: ``(model name, window start, window end) -> whether drift fired`` over that window
DriftCheck = Callable[[str, datetime, datetime], bool]


def report_drift(settings: Settings | None = None) -> DriftCheck:
    """The monitor report's drift test (:func:`~lmforge.monitor.report.summarize_window`) as a
    drift check: the window's logged traffic against the answering version's validation split.
    A window the report could not test (too few rows, no reference) has not drifted."""

    def drifted(model: str, start: datetime, end: datetime) -> bool:
        summary = summarize_window(model, start=start, end=end, settings=settings)
        if summary.drift is None:
            log.info("drift not tested for %s: %s", model, summary.drift_skipped)
            return False
        return summary.drift.drifted

    return drifted


@dataclass
class RoundResult:
    """One round of the loop: which triggers fired, and the retraining they started (None when
    none fired, or when the round failed: ``error`` then says why)."""

    model: str
    started_at: datetime
    new_feedback: int  # labelled feedback rows since the last round
    min_new_feedback: int
    drifted: bool | None  # None: drift not checked
    triggers: list[str] = field(default_factory=list)  # "feedback", "drift"
    retrain: RetrainResult | None = None
    error: str | None = None
    wall_seconds: float = 0.0

    @property
    def promoted(self) -> bool:
        return self.retrain is not None and self.retrain.promoted

    def to_json(self) -> dict[str, Any]:
        """The ``lmforge loop --json`` line of a round (docs/cli.md)."""
        return {
            "model": self.model,
            "started_at": self.started_at.isoformat(),
            "new_feedback": self.new_feedback,
            "min_new_feedback": self.min_new_feedback,
            "drifted": self.drifted,
            "triggers": self.triggers,
            "retrain": self.retrain.to_json() if self.retrain is not None else None,
            "error": self.error,
            "wall_seconds": round(self.wall_seconds, 1),
        }


def last_round(registry: Registry, name: str) -> dict[str, Any] | None:
    """The retraining record of ``name``'s newest retrained version (None before the first)."""
    for version in reversed(registry.list(name)):
        record = version.metrics.get(RECORD)
        if isinstance(record, dict):
            return record
    return None


def run_round(
    model: str,
    *,
    min_new_feedback: int | None = None,
    drift_check: DriftCheck | None = None,
    recipe: Recipe | Path | None = None,
    warm_start: WarmStart | None = None,
    gate: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
    progress: ProgressArg = None,
) -> RoundResult:
    """Check the triggers for ``model`` and, when one fires, :func:`retrain` it (the gate
    decides the promotion). ``min_new_feedback`` defaults to the recipe's
    ``feedback.min_new_feedback``; errors are raised (:func:`run_loop` records them)."""
    tick, started = time.perf_counter(), datetime.now(UTC)
    settings = settings or get_settings()
    registry = Registry(settings)
    champion, own_recipe = production_recipe(registry, model)
    if min_new_feedback is None:
        given = load_recipe(recipe) if isinstance(recipe, Path) else recipe
        min_new_feedback = (given or own_recipe).feedback.min_new_feedback
    if min_new_feedback < 1:
        raise LmforgeError(
            f"min_new_feedback must be at least 1, not {min_new_feedback}", "give 1 or more"
        )
    previous = last_round(registry, champion.name)
    since = _feedback_since(previous)
    interactions = champion.task == "recommendation"
    fresh = _labelled_since(FeedbackStore(registry), champion.name, since, interactions)
    result = RoundResult(champion.name, started, fresh, min_new_feedback, None)
    if fresh >= min_new_feedback:
        result.triggers.append("feedback")
    if drift_check is not None:
        start = _window_start(previous, champion)
        result.drifted = bool(drift_check(champion.name, start, started))
        if result.drifted:
            result.triggers.append("drift")
    if result.triggers:
        result.retrain = retrain(
            champion.name,
            recipe=recipe,
            warm_start=warm_start,
            gate=gate,
            settings=settings,
            progress=progress,
        )
    result.wall_seconds = time.perf_counter() - tick
    return result


def _feedback_since(previous: dict[str, Any] | None) -> datetime | None:
    if previous is None:
        return None
    value = (previous.get("feedback") or {}).get("latest_feedback_at")
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _window_start(previous: dict[str, Any] | None, champion: ModelVersion) -> datetime:
    """Drift is checked over the traffic since the last round (else since production was
    registered)."""
    if previous is not None and isinstance(previous.get("started_at"), str):
        return datetime.fromisoformat(previous["started_at"])
    return champion.created_at


def _labelled_since(
    store: FeedbackStore, name: str, since: datetime | None, interactions: bool
) -> int:
    """Feedback rows of ``name`` carrying a label (a recommender's: interactions), changed
    after ``since`` (all when None)."""
    rows = store.list(name, since)
    return sum(
        1
        for r in rows
        if (r.kind == "interaction" if interactions else r.label is not None)
        and (since is None or r.updated_at > since)
    )


def run_loop(
    model: str,
    *,
    every: float,
    min_new_feedback: int | None = None,
    drift_check: DriftCheck | None = None,
    recipe: Recipe | Path | None = None,
    warm_start: WarmStart | None = None,
    gate: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
    progress: ProgressArg = None,
    on_round: Callable[[RoundResult], None] | None = None,
    stop: threading.Event | None = None,
    max_rounds: int | None = None,
) -> int:
    """Run a round every ``every`` seconds (from the start of one to the start of the next)
    until ``stop`` is set — by default by SIGINT or SIGTERM, once the round in progress ends —
    or ``max_rounds`` have run; the number of rounds run. A round that fails is logged and
    handed to ``on_round`` with its ``error``; the next one runs on time."""
    if every <= 0:
        raise LmforgeError(f"the interval must be positive, not {every:g} s", "give e.g. 1h")
    progress = resolve_progress(progress)
    rounds = 0
    with _stop_on_signals(stop) as stopping:
        while not stopping.is_set() and (max_rounds is None or rounds < max_rounds):
            tick, started = time.monotonic(), datetime.now(UTC)
            try:
                result = run_round(
                    model,
                    min_new_feedback=min_new_feedback,
                    drift_check=drift_check,
                    recipe=recipe,
                    warm_start=warm_start,
                    gate=gate,
                    settings=settings,
                    progress=progress,
                )
            except Exception as exc:  # the job outlives a round: any failure is reported
                message = exc.message if isinstance(exc, LmforgeError) else describe_exception(exc)
                log.error("loop round for %s failed: %s", model, message)
                result = RoundResult(model, started, 0, min_new_feedback or 0, None, error=message)
                result.wall_seconds = time.monotonic() - tick
            rounds += 1
            if on_round is not None:
                on_round(result)
            if max_rounds is not None and rounds >= max_rounds:
                break
            stopping.wait(max(0.0, every - (time.monotonic() - tick)))
    return rounds


@contextmanager
def _stop_on_signals(stop: threading.Event | None) -> Iterator[threading.Event]:
    """``stop``, or an event SIGINT/SIGTERM set (in the main thread) while the loop runs; the
    first signal asks for a clean stop, and the previous handlers come back at once, so a
    second signal interrupts as usual."""
    if stop is not None:
        yield stop
        return
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handle(signum: int, _: FrameType | None) -> None:
        log.warning("signal %s: the loop stops after the round in progress", signum)
        event.set()
        for s, handler in previous.items():
            signal.signal(s, handler)

    for s in previous:
        signal.signal(s, handle)
    try:
        yield event
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


_INTERVAL = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_interval(text: str) -> float:
    """Seconds in an interval such as ``90s``, ``15m``, ``1h``, ``1h30m`` or ``2d``."""
    value = text.strip().lower()
    parts = _INTERVAL.findall(value)
    seconds = sum(float(n) * _UNIT[u] for n, u in parts)
    if not parts or "".join(n + u for n, u in parts) != value or seconds <= 0:
        raise LmforgeError(
            f"'{text}' is not an interval", "give a number with s, m, h or d, e.g. 30m or 1h"
        )
    return seconds
