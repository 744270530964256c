"""Monitoring: the prediction log (its table, the server's background writer, and a reader for
batch jobs), feedback on predictions (``FeedbackStore``, ``record_feedback``, bulk import and
export), drift detection (``drift_report``: a window of traffic against a reference), the
monitoring report (``monitor_model``, ``summarize_window``: volume, latency, label shares,
confidence, live accuracy and drift per window; ``lmforge monitor``), and the alert engine
(``AlertRule``, ``evaluate_rules``, ``AlertStore``, ``MonitorLoop``: rules on the report's
figures, on a schedule, with a webhook).

This package sits below the HTTP layer: it imports no FastAPI or Starlette, so a batch job can
read what the servers logged without loading a server. The feedback loop builds here next.
"""

from __future__ import annotations

from lmforge.monitor.alert_loop import AlertEngine, MonitorLoop
from lmforge.monitor.alert_store import Alert, AlertStore
from lmforge.monitor.alerts import (
    AlertRule,
    Evaluation,
    FiguresProvider,
    evaluate_rules,
    parse_rule,
)
from lmforge.monitor.detectors import DetectorResult
from lmforge.monitor.drift import DriftReport, Window, drift_report
from lmforge.monitor.feedback import (
    Feedback,
    FeedbackError,
    FeedbackEvent,
    FeedbackStore,
    UnknownLabelError,
    UnknownPredictionError,
    list_feedback,
    record_feedback,
)
from lmforge.monitor.feedback_files import export_feedback, import_feedback
from lmforge.monitor.predlog import LoggedPrediction, LogSettings, PredictionLog
from lmforge.monitor.reader import PredictionRecord, read_predictions
from lmforge.monitor.reference import ReferenceData
from lmforge.monitor.report import MonitorReport, WindowSummary, monitor_model, summarize_window
from lmforge.monitor.tables import FeedbackRow, PredictionLogRow

__all__ = [
    "Alert",
    "AlertEngine",
    "AlertRule",
    "AlertStore",
    "DetectorResult",
    "DriftReport",
    "Evaluation",
    "Feedback",
    "FeedbackError",
    "FeedbackEvent",
    "FeedbackRow",
    "FeedbackStore",
    "FiguresProvider",
    "LogSettings",
    "LoggedPrediction",
    "MonitorLoop",
    "MonitorReport",
    "PredictionLog",
    "PredictionLogRow",
    "PredictionRecord",
    "ReferenceData",
    "UnknownLabelError",
    "UnknownPredictionError",
    "Window",
    "WindowSummary",
    "drift_report",
    "evaluate_rules",
    "export_feedback",
    "import_feedback",
    "list_feedback",
    "monitor_model",
    "parse_rule",
    "read_predictions",
    "record_feedback",
    "summarize_window",
]
