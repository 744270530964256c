"""The server's monitor: the config's ``monitor:`` section turned into a
:class:`~lmforge.monitor.alert_loop.MonitorLoop` wired to the server's metrics and models.

Every ``monitor.interval``, for each model the server serves (its names, as ``/v1/predict``
takes them), the figures over the last ``monitor.window`` become the
``lmforge_monitor_figure{model, figure}`` gauges, the rules are evaluated, and firing or
resolved alerts are counted and POSTed to ``monitor.webhook_url``. The figures come from a
:data:`~lmforge.monitor.alerts.FiguresProvider` handed to :func:`~lmforge.serve.create_app`,
by default the monitor report's (``summarize_window(...).figures()``, with drift only when a rule
reads a ``drift.`` figure).

:func:`build_finance_monitor` is the finance monitor's loop (``--finance MODEL``): the surge
rule on the same :class:`MonitorLoop`, over the stored headlines' figures.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.engine import Engine

from lmforge.finance import FinanceMonitor, HeadlineExplainer, check_sentiment_model
from lmforge.monitor.alert_loop import MonitorLoop
from lmforge.monitor.alert_store import Alert, AlertStore
from lmforge.monitor.alerts import FiguresProvider
from lmforge.monitor.report import figures_provider
from lmforge.monitor.webhook import WebhookSender
from lmforge.serve.config import FinanceConfig, MonitorConfig
from lmforge.serve.metrics import ServeMetrics
from lmforge.serve.models import ModelPool
from lmforge.settings import Settings


def build_monitor(
    config: MonitorConfig | None,
    figures: FiguresProvider | None,
    store: AlertStore,
    pool: ModelPool,
    metrics: ServeMetrics,
    settings: Settings,
) -> MonitorLoop | None:
    """The monitor the config asks for (None without a ``monitor:`` section)."""
    if config is None:
        return None
    if figures is None:
        # Drift needs the version's reference (built once, then cached): only when a rule reads it.
        drift = any(rule.metric.startswith("drift.") for rule in config.rules)
        figures = figures_provider(settings, with_drift=drift)
    return MonitorLoop(
        rules=config.rules,
        figures=figures,
        models=lambda: list(pool.aliases),
        store=store,
        interval=config.interval,
        window=config.window,
        webhook=_webhook(config, metrics),
        on_figures=metrics.set_figures,
        on_alert=_alert_counter(metrics),
        on_round=lambda ok: metrics.monitor_rounds.labels("ok" if ok else "failed").inc(),
    )


def build_finance_monitor(
    config: FinanceConfig | None,
    monitor_config: MonitorConfig | None,
    store: AlertStore,
    metrics: ServeMetrics,
    settings: Settings,
    engine: Engine,
) -> tuple[FinanceMonitor, MonitorLoop] | None:
    """The finance monitor ``--finance MODEL`` asks for (None without it): its stores, and a
    :class:`MonitorLoop` judging the surge rule every ``finance.interval`` with the monitor's
    engine swapped for the one that explains surge alerts. Alerts are counted, logged and sent
    to the ``monitor:`` section's webhook where there is one. The model is checked at start:
    anything but a negative/neutral/positive classifier is refused by name."""
    if config is None:
        return None
    version = check_sentiment_model(config.model, settings)
    finance = FinanceMonitor(version.name, engine, config.surge, HeadlineExplainer(settings))
    loop = MonitorLoop(
        rules=[finance.rule],
        figures=finance.figures,
        models=lambda: [finance.model],
        store=store,
        interval=config.interval,
        window=config.surge.window,
        webhook=_webhook(monitor_config, metrics),
        on_alert=_alert_counter(metrics),
    )
    loop.engine = finance.engine  # surge alerts carry their window, figures and headlines
    return finance, loop


def _webhook(config: MonitorConfig | None, metrics: ServeMetrics) -> WebhookSender | None:
    """The ``monitor:`` section's webhook, its deliveries counted (None without a URL)."""
    if config is None or config.webhook_url is None:
        return None
    return WebhookSender(
        config.webhook_url,
        timeout_s=config.webhook_timeout,
        retries=config.webhook_retries,
        on_outcome=lambda outcome: metrics.alert_webhook.labels(outcome).inc(),
    )


def _alert_counter(metrics: ServeMetrics) -> Callable[[str, Alert], None]:
    """Counts each firing or resolved alert by its rule."""

    def counted(event: str, alert: Alert) -> None:
        counter = metrics.alerts_fired if event == "firing" else metrics.alerts_resolved
        counter.labels(alert.rule).inc()

    return counted
