"""Prometheus metrics of one server, in a registry of its own (several apps may share a process).

Requests are counted by route template (never the raw path, so labels stay few) and status.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    def __init__(self) -> None:
        self._figures: dict[str, set[str]] = {}  # model -> figures shown as gauges
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "lmforge_http_requests", "HTTP requests answered", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "lmforge_http_request_duration_seconds",
            "Time from request to response",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "lmforge_batch_size",
            "Rows per inference call",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "lmforge_inference_duration_seconds",
            "Time of one batched inference call",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "lmforge_queue_depth", "Rows waiting for inference", ["model"], registry=r
        )
        self.batch_cap = Gauge(
            "lmforge_batch_cap",
            "Most rows the batcher puts in one call now (max_batch, or lower where larger "
            "batches cost more per row)",
            ["model"],
            registry=r,
        )
        self.model_info = Gauge(
            "lmforge_model_info",
            "Loaded model versions (1); alias is the name a bare request resolves through",
            ["model", "version", "kind", "backend", "alias"],
            registry=r,
        )
        self.rejected = Counter(
            "lmforge_rejected_requests", "Requests refused, by reason", ["reason"], registry=r
        )
        self.predictions_logged = Counter(
            "lmforge_predictions_logged", "Predictions written to the prediction log", registry=r
        )
        self.prediction_log_lost = Counter(
            "lmforge_prediction_log_lost_rows",
            "Prediction log rows never written, by reason: refused (by the database), "
            "non_finite, buffer_full, shutdown",
            ["reason"],
            registry=r,
        )
        self.feedback = Counter(
            "lmforge_feedback_events",
            "Feedback events stored (a repeat on one prediction counts again), by model and "
            "kind: label, correct, example, interaction",
            ["model", "kind"],
            registry=r,
        )
        self.non_finite_outputs = Counter(
            "lmforge_non_finite_outputs",
            "Requests failed because the model computed NaN or infinity",
            ["model"],
            registry=r,
        )
        # the monitor (config section monitor:): one gauge with a figure label, as the figures'
        # names come from the report (label_share.<label>, drift.<detector>.p_value, ...)
        self.monitor_figure = Gauge(
            "lmforge_monitor_figure",
            "A monitoring figure of a model over the monitor's window (monitor.window)",
            ["model", "figure"],
            registry=r,
        )
        self.monitor_rounds = Counter(
            "lmforge_monitor_rounds",
            "Monitor rounds (figures and alert rules), by outcome: ok, failed",
            ["outcome"],
            registry=r,
        )
        self.alerts_fired = Counter(
            "lmforge_alerts_fired", "Alerts fired, by rule", ["rule"], registry=r
        )
        self.alerts_resolved = Counter(
            "lmforge_alerts_resolved", "Alerts resolved, by rule", ["rule"], registry=r
        )
        self.alert_webhook = Counter(
            "lmforge_alert_webhook_deliveries",
            "Alert webhook deliveries, by outcome: sent, failed (after its retries), dropped",
            ["outcome"],
            registry=r,
        )

        self.generated_tokens = Counter(
            "lmforge_generated_tokens", "Tokens generated", ["model"], registry=r
        )
        self.prompt_tokens = Counter(
            "lmforge_prompt_tokens", "Prompt tokens read", ["model"], registry=r
        )
        self.cached_prompt_tokens = Counter(
            "lmforge_prompt_tokens_cached",
            "Prompt tokens whose keys and values came from the prefix store, not computed",
            ["model"],
            registry=r,
        )
        self.time_to_first_token = Histogram(
            "lmforge_time_to_first_token_seconds",
            "From request to its first generated token",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.sequences = Gauge(
            "lmforge_generation_sequences",
            "Sequences decoding (running) or waiting for a slot",
            ["model", "state"],
            registry=r,
        )

    def count_tokens(self, model: str, generated: int, cached: int) -> None:
        """A finished sequence's generated tokens and its prompt positions reused."""
        self.generated_tokens.labels(model).inc(generated)
        self.cached_prompt_tokens.labels(model).inc(cached)

    def count_lost_log_rows(self, reason: str, rows: int) -> None:
        """The prediction log's ``on_lost``: rows that will never be written."""
        self.prediction_log_lost.labels(reason).inc(rows)

    def set_figures(self, by_model: Mapping[str, Mapping[str, float]]) -> None:
        """The served models' latest figures as gauges. A figure no longer given (a label gone,
        a figure now NaN, a model whose figures failed or that is no longer served) is removed,
        not left at a stale value."""
        gauge = self.monitor_figure
        shown = {
            model: {k: v for k, v in figures.items() if math.isfinite(v)}
            for model, figures in by_model.items()
        }
        for model, names in self._figures.items():
            for name in names - set(shown.get(model, {})):
                with contextlib.suppress(KeyError):
                    gauge.remove(model, name)
        for model, figures in shown.items():
            for name, value in figures.items():
                gauge.labels(model, name).set(value)
        self._figures = {model: set(figures) for model, figures in shown.items()}

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request by route template and status."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._cache: dict[tuple[str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            count, latency = self._children(template, status)
            count.inc()
            latency.observe(time.perf_counter() - start)

    def _children(self, template: str, status: int) -> tuple[Any, Any]:
        """The labelled series, looked up once per (route, status): this runs per request."""
        key = (template, status)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = (
                self.metrics.requests.labels(template, str(status)),
                self.metrics.latency.labels(template),
            )
        return found
