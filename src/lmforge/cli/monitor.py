"""``lmforge monitor MODEL``: a model's traffic window by window — volume, latency, label shares,
confidence, live accuracy from feedback and drift — as tables, JSON (``--json``, the contract in
docs/cli.md) or a self-contained HTML page (``--html``)."""

from __future__ import annotations

import os
import re
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from lmforge.cli.output import out
from lmforge.errors import LmforgeError

if TYPE_CHECKING:
    from lmforge.monitor.report import MonitorReport

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def monitor(
    model: Annotated[str, typer.Argument(help="The registered model (its logged traffic).")],
    version: Annotated[
        int | None, typer.Option("--version", help="Only this version's predictions.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since", help="Start: ISO 8601 (UTC unless it says) or a duration ago: 24h, 7d."
        ),
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="End (default now): ISO 8601 or a duration ago.")
    ] = None,
    window: Annotated[str, typer.Option("--window", help="Window length: 30m, 1h, 1d ...")] = "1h",
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    html_file: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML page here.")
    ] = None,
    no_drift: Annotated[
        bool, typer.Option("--no-drift", help="Skip the drift tests (no model is loaded).")
    ] = False,
) -> None:
    """Monitor a model's traffic: per window, volume, latency, label shares, confidence, live
    accuracy from feedback, and drift against its version's validation split."""
    from lmforge.monitor.report import monitor_model

    now = datetime.now(UTC)
    report = monitor_model(
        model,
        since=parse_when(since, now, "--since") if since else None,
        until=parse_when(until, now, "--until") if until else None,
        window=parse_duration(window, "--window"),
        version=version,
        with_drift=not no_drift,
    )
    if html_file is not None:
        from lmforge.monitor.report_html import render_html

        _write_whole(html_file, render_html(report))
    if json_output:
        typer.echo(report.to_json())
        return
    _print(report)
    if html_file is not None:
        out.print(f"wrote {html_file}", highlight=False)


def parse_duration(text: str, option: str) -> timedelta:
    """``90s``, ``30m``, ``1h``, ``7d``, ``2w`` as a positive timedelta."""
    match = _DURATION.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise LmforgeError(
            f"{option} '{text}' is not a duration", "give a number and a unit: 30m, 1h, 7d"
        )
    return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})


def parse_when(text: str, now: datetime, option: str) -> datetime:
    """An ISO 8601 date or time (UTC when it names no zone), or a duration before ``now``."""
    if _DURATION.match(text):
        return now - parse_duration(text, option)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise LmforgeError(
            f"{option} '{text}' is neither a date nor a duration",
            "give ISO 8601 (2026-12-01, 2026-12-01T09:00) or a duration ago (24h, 7d)",
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _write_whole(path: Path, text: str) -> None:
    """Write a temporary file beside ``path`` and rename it: never a half-written page."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise LmforgeError(f"folder {folder} does not exist", "create it, or give another --html")
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".html.tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _print(report: MonitorReport) -> None:
    title = f"{report.model}" + (f":v{report.version}" if report.version is not None else "")
    table = Table(title=f"monitor {title}: {len(report.windows)} windows of {report.window}")
    for column in (
        "window (UTC)", "volume", "p50 ms", "p99 ms", "label shares", "mean conf",
        "low conf", "feedback", "accuracy (95% CI)", "macro-F1", "drift",
    ):  # fmt: skip
        table.add_column(column, overflow="fold")
    for w in report.windows:
        shares = ", ".join(f"{k} {v:.0%}" for k, v in w.label_shares.items())
        accuracy = _pct(w.live_accuracy)
        if w.live_accuracy_interval is not None:
            accuracy += f" ({w.live_accuracy_interval[0]:.0%}–{w.live_accuracy_interval[1]:.0%})"
        if w.drift is None:
            drift = "–"
        elif w.drift.drifted:
            drift = "[bold red]fired: " + ", ".join(w.drift.fired) + "[/bold red]"
        else:
            drift = "none"
        table.add_row(
            f"{w.start:%m-%d %H:%M}",
            str(w.volume),
            _num(w.latency_p50_ms),
            _num(w.latency_p99_ms),
            _escape(shares),
            _pct(w.mean_confidence),
            _pct(w.low_confidence_share),
            str(w.feedback_count),
            accuracy,
            _num(w.live_macro_f1, 3),
            drift,
        )
    out.print(table)
    for ref in report.references:
        out.print(
            f"drift reference: {ref['model']}:v{ref['version']} validation split, "
            f"{ref['rows']} rows",
            highlight=False,
            markup=False,
        )
    skipped = sorted({w.drift_skipped for w in report.windows if w.drift_skipped})
    if report.reference_skipped:
        skipped = [report.reference_skipped]
    for reason in skipped[:5]:
        out.print(f"drift: {reason}", highlight=False, markup=False)
    fired = [w for w in report.windows if w.drift is not None and w.drift.drifted]
    for w in fired[:10]:
        details = "; ".join(d.detail for d in w.drift.detectors if d.drifted) if w.drift else ""
        out.print(f"{w.start:%m-%d %H:%M} drift: {details}", highlight=False, markup=False)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"
