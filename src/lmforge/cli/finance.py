"""``lmforge app finance-monitor``: the finance monitor on a replay, a file or stdin — scored,
stored, judged by the surge rule — printed as a table of days and alerts, ``--json``, a PNG
chart and an HTML page (docs/finance.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lmforge.cli.output import RichProgress, out, print_json


def finance_monitor(
    model: Annotated[str, typer.Argument(help="A registered negative/neutral/positive model.")],
    source: Annotated[
        str | None, typer.Argument(help="'-' to read JSONL or CSV headlines from stdin.")
    ] = None,
    replay: Annotated[
        str | None,
        typer.Option("--replay", help="Replay a built-in source by date: guardian_headlines."),
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="A JSONL or CSV file with text and time.")
    ] = None,
    speed: Annotated[
        str, typer.Option("--speed", help="Simulated time per wall time, e.g. 1day=1s; max.")
    ] = "max",
    backend: Annotated[str | None, typer.Option("--backend", help="Runtime backend.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the JSON document.")] = False,
    png: Annotated[
        Path | None, typer.Option("--png", help="Write the timeline chart here.")
    ] = None,
    html_file: Annotated[
        Path | None, typer.Option("--html", help="Write the HTML page (headlines per day) here.")
    ] = None,
) -> None:
    """Score headlines, store them, and alert on surges of negative news."""
    from lmforge.errors import LmforgeError
    from lmforge.finance import monitor_headlines, render_html, render_png
    from lmforge.finance.timeline import write_whole

    if source not in (None, "-"):
        raise LmforgeError(f"unexpected argument '{source}'", "give '-' for stdin, or --file FILE")
    result = monitor_headlines(
        model,
        replay=replay,
        file=file,
        stdin=sys.stdin if source == "-" else None,
        speed=speed,
        backend=backend,
        progress=None if json_output else RichProgress(),
    )
    if png is not None:
        write_whole(png, render_png(result.timeline))
    if html_file is not None:
        write_whole(html_file, render_html(result.timeline, result.rows))
    if json_output:
        print_json(result.to_json())
        return
    out.print(
        f"{result.model}: {result.headlines} headlines from {result.source} "
        f"({result.stored} new), {result.headlines_per_second:.1f} headlines/s",
        highlight=False,
    )
    table = Table(title="surge alerts")
    for column in ("fired", "window", "negative share", "baseline", "threshold", "headlines"):
        table.add_column(column)
    for alert in result.timeline.alerts:
        d = alert.details
        table.add_row(
            alert.fired_at.date().isoformat(),
            f"{str(d.get('window_start', ''))[:10]} – {str(d.get('window_end', ''))[:10]}",
            f"{alert.value:.3f}",
            f"{float(d.get('baseline_mean') or 0):.3f}",
            f"{alert.threshold:.3f}",
            str(d.get("volume", "")),
        )
    out.print(table)
    for path in (png, html_file):
        if path is not None:
            out.print(f"wrote {path}", highlight=False)
