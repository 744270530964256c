"""What a person looks at: the monitor's timeline as JSON, a PNG chart and an HTML page.

The chart has two panels sharing the date axis: above, the daily negative share, the surge
rule's window share, its baseline mean and the band up to its threshold, with each alert marked;
below, the daily volume. The HTML page is self-contained (the chart inline as a data: image)
with the alerts, the entities and every day's headlines; every string from the data is escaped
and a Content-Security-Policy forbids scripts. Files are written whole (a temporary file moved
into place), so a reader never sees half a chart.
"""

from __future__ import annotations

import base64
import html
import io
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from lmforge.errors import LmforgeError
from lmforge.finance.aggregate import Period
from lmforge.finance.store import ScoredHeadline
from lmforge.monitor.alert_store import Alert

__all__ = ["Timeline", "render_html", "render_png", "write_whole"]


@dataclass
class Timeline:
    """The monitor's view of a model's headlines: per day, per hour (where there is the
    volume), per entity, and the surge alerts. ``to_json`` is the ``--json`` document's and
    ``GET /v1/finance/timeline``'s shape (docs/finance.md)."""

    model: str
    days: list[Period]
    hours: list[Period] = field(default_factory=list)
    entities: list[Period] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "days": [d.to_json() for d in self.days],
            "hours": [h.to_json() for h in self.hours],
            "entities": [e.to_json() for e in self.entities],
            "alerts": [a.to_json() for a in self.alerts],
        }


def _figure(timeline: Timeline) -> Figure:
    days = [date.fromisoformat(d.key) for d in timeline.days]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 5.5), dpi=100, sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.plot(days, [d.negative_share for d in timeline.days], color="#bbb", lw=0.8,
             label="daily negative share")  # fmt: skip
    judged = [
        (x, d) for x, d in zip(days, timeline.days, strict=True) if d.window_share is not None
    ]
    if judged:
        xs = [x for x, _ in judged]
        top.plot(xs, [d.window_share for _, d in judged], color="#c0392b", lw=1.6,
                 label="window negative share")  # fmt: skip
        banded = [(x, d) for x, d in judged if d.baseline_mean is not None and d.threshold]
        if banded:
            bx = [x for x, _ in banded]
            mean = [float(d.baseline_mean or 0) for _, d in banded]
            top.plot(bx, mean, color="#2c3e50", lw=1, ls="--", label="baseline")
            top.fill_between(bx, mean, [float(d.threshold or 0) for _, d in banded],
                             color="#2c3e50", alpha=0.12, label="baseline → threshold")  # fmt: skip
    for i, alert in enumerate(timeline.alerts):
        top.axvline(alert.fired_at.date(), color="#e67e22", lw=1.4, ls=":",
                    label="alert" if i == 0 else None)  # fmt: skip
    top.set_ylim(0, 1)
    top.set_ylabel("negative share")
    top.legend(loc="upper left", fontsize=8, ncol=3)
    top.set_title(f"{timeline.model}: negative share of headlines per day")
    bottom.bar(days, [d.volume for d in timeline.days], color="#7f8c8d", width=0.8)
    bottom.set_ylabel("headlines")
    bottom.xaxis.set_major_formatter(mdates.DateFormatter("%d %b"))  # type: ignore[no-untyped-call]
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def render_png(timeline: Timeline) -> bytes:
    """The chart as PNG bytes."""
    if not timeline.days:
        raise LmforgeError("no headlines to chart", "ingest some first")
    fig = _figure(timeline)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


_STYLE = (
    "body{font:14px system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ddd;padding:2px 6px}"
    ".negative{color:#c0392b}.positive{color:#27ae60}.neutral{color:#555}"
    "details{margin:0.2em 0}img{max-width:100%}"
)


def render_html(timeline: Timeline, headlines: Sequence[ScoredHeadline]) -> str:
    """The page: chart, alerts with their headlines, entities, and every day's headlines."""
    e = html.escape
    png = base64.b64encode(render_png(timeline)).decode()
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; img-src data:\">",
        f"<title>{e(timeline.model)}: finance monitor</title><style>{_STYLE}</style></head><body>",
        f"<h1>Finance monitor: {e(timeline.model)}</h1>",
        f"<img alt='negative share per day' src='data:image/png;base64,{png}'>",
        f"<h2>Surge alerts ({len(timeline.alerts)})</h2>",
    ]
    for alert in timeline.alerts:
        d = alert.details
        parts.append(
            f"<h3>{e(alert.fired_at.date().isoformat())}: negative share {alert.value:.2f} "
            f"over {e(str(d.get('window_start', ''))[:10])} – "
            f"{e(str(d.get('window_end', ''))[:10])}"
            f" (threshold {alert.threshold:.2f}, baseline {float(d.get('baseline_mean') or 0):.2f}"
            f", {e(str(d.get('volume', '')))} headlines)</h3><ul>"
        )
        for h in d.get("top_headlines", []):
            parts.append(f"<li>{e(str(h.get('text', '')))} <small>(P(negative) "
                         f"{float(h.get('negative', 0)):.2f})</small></li>")  # fmt: skip
        parts.append("</ul>")
    parts.append("<h2>Entities</h2><table><tr><th>entity</th><th>kind</th><th>headlines</th>"
                 "<th>negative</th><th>positive</th><th>mean tone</th></tr>")  # fmt: skip
    for p in timeline.entities:
        parts.append(
            f"<tr><td>{e(p.key)}</td><td>{e(p.kind or '')}</td><td>{p.volume}</td>"
            f"<td>{p.negative_share:.2f}</td><td>{p.positive_share:.2f}</td>"
            f"<td>{p.mean_tone:+.2f}</td></tr>"
        )
    parts.append("</table><h2>Headlines per day</h2>")
    by_day: dict[str, list[ScoredHeadline]] = {}
    for h in headlines:
        by_day.setdefault(h.time.date().isoformat(), []).append(h)
    for day in timeline.days:
        rows = by_day.get(day.key, [])
        parts.append(f"<details><summary>{e(day.key)}: {day.volume} headlines, negative "
                     f"{day.negative_share:.2f}</summary><ul>")  # fmt: skip
        for h in rows:
            parts.append(f"<li class='{e(h.label)}'>[{e(h.label)}] {e(h.text)}</li>")
        parts.append("</ul></details>")
    parts.append("</body></html>")
    return "".join(parts)


def write_whole(path: Path, content: bytes | str) -> None:
    """Write ``content`` to ``path`` through a temporary file in the same folder, moved in."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise LmforgeError(f"folder {folder} does not exist", "create it, or give another path")
    data = content.encode("utf-8") if isinstance(content, str) else content
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
