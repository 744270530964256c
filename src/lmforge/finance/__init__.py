"""The financial news monitor (issue 20's application): headlines ingested from a replay, a
file or the server, scored by a three-class sentiment model, stored, aggregated per day, hour
and entity, judged by a surge rule on the alert engine, and drawn as a timeline.

Modules: ``ingest`` (sources and their checks), ``store`` (the ``finance_headlines`` table),
``scoring`` (the model, checked and batched), ``entities`` (the gazetteer and its measured
accuracy), ``aggregate`` (per day, hour, entity), ``surge`` (the rule and the engine that
records its alerts), ``why`` (what made an alert's headlines negative), ``timeline`` (JSON, PNG,
HTML) and ``monitor`` (all of it, end to end).
"""

from lmforge.finance.ingest import Headline, parse_speed, read_headlines, replay_days
from lmforge.finance.monitor import (
    FinanceMonitor,
    StreamResult,
    by_day,
    monitor_headlines,
    run_stream,
)
from lmforge.finance.scoring import SENTIMENT_LABELS, Scorer, check_sentiment_model
from lmforge.finance.store import HeadlineStore, ScoredHeadline
from lmforge.finance.surge import SURGE_RULE, SurgeConfig, surge_rule
from lmforge.finance.timeline import Timeline, render_html, render_png
from lmforge.finance.why import HeadlineExplainer

__all__ = [
    "SENTIMENT_LABELS",
    "SURGE_RULE",
    "FinanceMonitor",
    "Headline",
    "HeadlineExplainer",
    "HeadlineStore",
    "ScoredHeadline",
    "Scorer",
    "StreamResult",
    "SurgeConfig",
    "Timeline",
    "by_day",
    "check_sentiment_model",
    "monitor_headlines",
    "parse_speed",
    "read_headlines",
    "render_html",
    "render_png",
    "replay_days",
    "run_stream",
    "surge_rule",
]
