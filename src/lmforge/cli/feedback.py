"""``lmforge feedback import``, ``list`` and ``export``: feedback for analysts who label in bulk."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lmforge.cli.output import out, print_json
from lmforge.errors import LmforgeError


def feedback_import(
    file: Annotated[Path, typer.Argument(help="CSV or JSONL: text,label or prediction_id,label.")],
    model: Annotated[str, typer.Option("--model", help="The registered model the labels are for.")],
) -> None:
    """Import labelled rows for a model, all or nothing (a bad row names its row and column)."""
    from lmforge.monitor import import_feedback

    count = import_feedback(file, model)
    out.print(f"imported {count} feedback rows for '{model}' from {file}", highlight=False)


def feedback_list(
    model: Annotated[str | None, typer.Option("--model", help="Only this model's rows.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only rows updated since (ISO 8601, UTC).")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List stored feedback, oldest first."""
    from lmforge.monitor import list_feedback

    rows = list_feedback(model=model, since=_when(since) if since else None)
    if json_output:
        print_json([r.to_json() for r in rows])
        return
    table = Table(title=f"feedback ({len(rows)} rows)")
    for column in ("id", "kind", "model", "predicted", "label", "text / prediction", "updated"):
        table.add_column(column)
    for r in rows:
        ref = f"{r.model}:v{r.version}" if r.model and r.version is not None else r.model or ""
        subject = r.text or r.prediction_id or f"{r.user_id} {r.event} {r.item_id}"
        table.add_row(
            str(r.id),
            r.kind,
            ref,
            r.predicted or "",
            r.label or ("wrong" if r.correct is False else ""),
            subject[:60],
            f"{r.updated_at:%Y-%m-%d %H:%M}",
        )
    out.print(table)


def feedback_export(
    file: Annotated[Path, typer.Argument(help="Where to write: .csv, else JSON lines.")],
) -> None:
    """Write every feedback row to a file (replaced whole, never half-written)."""
    from lmforge.monitor import export_feedback

    count = export_feedback(file)
    out.print(f"exported {count} feedback rows to {file}", highlight=False)


def _when(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise LmforgeError(
            f"--since '{text}' is not a date", "give ISO 8601, e.g. 2026-12-01 or 2026-12-01T09:00"
        ) from None
