"""Monitoring: the prediction log (its table, the server's background writer, and a reader for
batch jobs), feedback on predictions (``FeedbackStore``, ``record_feedback``, bulk import and
export), drift detection (``drift_report``: a window of traffic against a reference), and the
monitoring report (``monitor_model``, ``summarize_window``: volume, latency, label shares,
confidence, live accuracy and drift per window; ``lmforge monitor``).

This package sits below the HTTP layer: it imports no FastAPI or Starlette, so a batch job can
read what the servers logged without loading a server. The feedback loop builds here next.
"""

from __future__ import annotations

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
    "DetectorResult",
    "DriftReport",
    "Feedback",
    "FeedbackError",
    "FeedbackEvent",
    "FeedbackRow",
    "FeedbackStore",
    "LogSettings",
    "LoggedPrediction",
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
    "export_feedback",
    "import_feedback",
    "list_feedback",
    "monitor_model",
    "read_predictions",
    "record_feedback",
    "summarize_window",
]
