"""``lmforge monitor --html``: the report as one self-contained page — charts (matplotlib, as
inline SVG: no file beside it, no script, nothing fetched from a network) of the label shares
over time, each drift detector's p-value against the level it is tested at, live accuracy with
its interval, and volume and latency; then the table of windows.

Every string that comes from data (model and label names, detector details, reasons) is
HTML-escaped, in the page and in the charts' SVG text alike.
"""

from __future__ import annotations

import html
import io
import math
import re
from datetime import datetime

import matplotlib

matplotlib.use("Agg")
import numpy as np
from matplotlib.axes import Axes
from matplotlib.dates import date2num
from matplotlib.figure import Figure

from lmforge.monitor.report import MonitorReport, WindowSummary

_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)
_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;width:100%}
td,th{border-bottom:1px solid #ddd;padding:3px 6px;text-align:right}
td:first-child,th:first-child{text-align:left}
.fired{color:#b00020;font-weight:600} .note{color:#666;font-size:.9em}
figure{margin:0} svg{max-width:100%;height:auto}
"""


def render_html(report: MonitorReport) -> str:
    """The report as an HTML page (a string; the caller writes it)."""
    e = html.escape
    windows = report.windows
    title = f"lmforge monitor: {report.model}" + (
        f":v{report.version}" if report.version is not None else ""
    )
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; img-src data:\">",
        f"<title>{e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p>{_when(report.since)} to {_when(report.until)}, {len(windows)} windows of "
        f"{e(str(report.window))}; generated {_when(report.generated_at)}.</p>",
    ]
    for ref in report.references:
        parts.append(
            f"<p class='note'>Drift reference: {e(str(ref['model']))}:v{ref['version']} "
            f"validation split, {ref['rows']} rows"
            + (f", embeddings by {e(str(ref['encoder']))}" if ref.get("encoder") else "")
            + ".</p>"
        )
    if report.reference_skipped:
        parts.append(f"<p class='note'>{e(report.reference_skipped)}</p>")
    if windows:
        parts += [
            "<h2>Volume and latency</h2>",
            _svg(_volume_chart(windows)),
            "<h2>Predicted label shares</h2>",
            _svg(_shares_chart(windows)),
            "<h2>Drift: p-value of each detector against its level</h2>",
            _svg(_drift_chart(windows)),
            "<h2>Live accuracy from feedback (Wilson 95 % interval)</h2>",
            _svg(_accuracy_chart(windows)),
        ]
    parts += ["<h2>Windows</h2>", _table(windows), "</body></html>"]
    return "\n".join(parts)


def _table(windows: list[WindowSummary]) -> str:
    e = html.escape
    head = (
        "start", "volume", "p50 ms", "p99 ms", "labels", "mean conf", "low conf",
        "feedback", "accuracy", "macro-F1", "drift",
    )  # fmt: skip
    rows = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for w in windows:
        shares = ", ".join(f"{e(k)} {v:.0%}" for k, v in w.label_shares.items())
        if w.drift is not None and w.drift.drifted:
            drift = "<span class='fired'>fired: " + e(", ".join(w.drift.fired)) + "</span>"
        elif w.drift is not None:
            drift = "no drift"
        else:
            drift = ""
        if w.drift_skipped:
            drift += f" <span class='note'>{e(w.drift_skipped)}</span>"
        accuracy = _pct(w.live_accuracy)
        if w.live_accuracy_interval is not None:
            lo, hi = w.live_accuracy_interval
            accuracy += f" ({lo:.0%}–{hi:.0%})"
        cells = (
            _when(w.start), str(w.volume), _num(w.latency_p50_ms), _num(w.latency_p99_ms),
            shares, _pct(w.mean_confidence), _pct(w.low_confidence_share),
            str(w.feedback_count), accuracy, _num(w.live_macro_f1, 3), drift,
        )  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "\n".join([*rows, "</table>"])


def _volume_chart(windows: list[WindowSummary]) -> Figure:
    fig = Figure(figsize=(10, 2.8), dpi=100)
    ax = fig.subplots()
    x = _x(windows)
    width = (windows[0].end - windows[0].start).total_seconds() / 86400 * 0.8
    ax.bar(x, [w.volume for w in windows], width=width, align="edge", color="#9ecae1")
    ax.set_ylabel("predictions")
    right = ax.twinx()
    for name, style in (("latency_p50_ms", "-"), ("latency_p99_ms", "--")):
        right.plot(x, [_nan(getattr(w, name)) for w in windows], style, color="#d62728",
                   label=name.replace("latency_", "").replace("_ms", ""))  # fmt: skip
    right.set_ylabel("latency (ms)")
    right.legend(loc="upper left", fontsize=8)
    _dates(ax, fig)
    return fig


def _shares_chart(windows: list[WindowSummary]) -> Figure:
    fig = Figure(figsize=(10, 2.8), dpi=100)
    ax = fig.subplots()
    labels = sorted({label for w in windows for label in w.label_shares})
    x = _x(windows)
    if labels:
        series = [[w.label_shares.get(label, 0.0) for w in windows] for label in labels]
        ax.stackplot(x, series, labels=labels, step="post")
        ax.legend(loc="upper left", fontsize=8, ncol=min(len(labels), 6))
    ax.set_ylim(0, 1)
    ax.set_ylabel("share")
    _dates(ax, fig)
    return fig


def _drift_chart(windows: list[WindowSummary]) -> Figure:
    """-log10 p of every detector per window, and the level (alpha per detector) it must pass:
    a point above the dashed line is a detector that was significant."""
    fig = Figure(figsize=(10, 2.8), dpi=100)
    ax = fig.subplots()
    names = sorted({d.name for w in windows if w.drift for d in w.drift.detectors})
    for name in names:
        ys = []
        for w in windows:
            found = w.drift.detector(name) if w.drift else None
            ys.append(-math.log10(max(found.p_value, 1e-300)) if found else math.nan)
        ax.plot(_x(windows), ys, "o-", label=name, markersize=3)
    levels = [w.drift.alpha_per_detector if w.drift else math.nan for w in windows]
    ax.plot(
        _x(windows),
        [-math.log10(a) if a == a else math.nan for a in levels],
        "k--",
        label="level (α / detectors)",
    )
    ax.set_ylabel("−log10 p")
    if names:
        ax.legend(loc="upper left", fontsize=8, ncol=min(len(names) + 1, 6))
    else:
        ax.text(0.5, 0.5, "drift was not tested", ha="center", transform=ax.transAxes)
    _dates(ax, fig)
    return fig


def _accuracy_chart(windows: list[WindowSummary]) -> Figure:
    fig = Figure(figsize=(10, 2.8), dpi=100)
    ax = fig.subplots()
    rated = [w for w in windows if w.live_accuracy is not None]
    if rated:
        acc = [w.live_accuracy or 0.0 for w in rated]
        lows = [a - w.live_accuracy_interval[0] for a, w in zip(acc, rated, strict=True)
                if w.live_accuracy_interval]  # fmt: skip
        highs = [w.live_accuracy_interval[1] - a for a, w in zip(acc, rated, strict=True)
                 if w.live_accuracy_interval]  # fmt: skip
        ax.errorbar(_x(rated), acc, yerr=[lows, highs], fmt="o", capsize=3)
    else:
        ax.text(0.5, 0.5, "no feedback in these windows", ha="center", transform=ax.transAxes)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy")
    _dates(ax, fig)
    return fig


def _x(windows: list[WindowSummary]) -> np.ndarray:
    """The windows' starts as matplotlib's date numbers."""
    starts = [w.start for w in windows]
    return np.asarray(date2num(starts), dtype=np.float64)  # type: ignore[no-untyped-call]


def _dates(ax: Axes, fig: Figure) -> None:
    ax.xaxis_date()
    fig.autofmt_xdate()


def _svg(fig: Figure) -> str:
    """The figure as inline SVG. Matplotlib escapes the text it writes into the SVG (labels
    are data), and the XML prologue is dropped so the element sits inside the page."""
    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    svg = _METADATA.sub("", svg[svg.index("<svg") :])  # the RDF block: nothing to show
    return "<figure>" + svg + "</figure>"


def _when(when: datetime) -> str:
    return html.escape(when.strftime("%Y-%m-%d %H:%M UTC"))


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"
