"""What the command line prints: the two consoles, JSON documents, tables (a run's report, a
classifier's metrics beside baselines, the compression trade-off) and the progress bar that
draws the library's progress on stderr."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from lmforge.progress import BarProgress
from lmforge.registry.card import percent

if TYPE_CHECKING:  # the tasks import torch: loaded only when a recipe runs
    from lmforge.tasks import Report

# Tables are wide; when piped (no terminal to size them by) do not squeeze them into 80 columns.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


class RichProgress(BarProgress):
    """Library progress as a rich bar on the CLI's stderr console, notes dimmed."""

    def __init__(self) -> None:
        super().__init__(err)

    def note(self, message: str) -> None:
        (self._bar.console if self._bar is not None else err).print(f"[dim]{message}[/dim]")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def metrics_table(metrics: dict[str, Any], baselines: dict[str, Any], title: str) -> Table:
    """A classifier's test metrics, then each baseline's."""
    table = Table(title=title)
    for column in ("model", "accuracy", "macro-F1", "ROC-AUC"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, m in [("this model", metrics), *baselines.items()]:
        scores = (m["accuracy"], m["macro_f1"], m.get("roc_auc"))
        table.add_row(name, *(percent(v) for v in scores))
    return table


def print_table(
    title: str, columns: list[str], rows: list[list[str]], text_columns: int = 1
) -> None:
    """A table of figures: the first `text_columns` columns name things (left-aligned), the
    rest are numbers (right-aligned)."""
    table = Table(title=title)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i < text_columns else "right")
    for row in rows:
        table.add_row(*row)
    out.print(table)


def print_report(report: Report) -> None:
    """A run's report, whatever its task: its tables, then its lines."""
    for table in report.tables:
        print_table(table.title, table.columns, table.rows, table.text_columns)
    for line in report.lines:
        out.print(line.text, highlight=line.highlight)


def print_compress(result: Any) -> None:
    """The compression trade-off (a ``CompressResult``, typed loosely so that this module does
    not import the compress stage): one row per variant, the chosen one starred."""
    table = Table(title=f"{result.source.ref}: compression trade-off")
    columns = ("variant", "size MB", "p50 ms", "seq/s", "× ref", "accuracy", "Δ pt", "budget")
    for column in columns:
        left = column == "variant"
        table.add_column(column, justify="left" if left else "right", no_wrap=left)
    for v in result.variants:
        name = f"[bold]{v.name}[/bold] ★" if v is result.chosen else v.name
        if v.error is not None:
            table.add_row(name, *(["–"] * 6), f"[red]{v.error[:60]}[/red]")
            continue
        table.add_row(
            name,
            f"{v.size_mb:.1f}",
            f"{v.p50_ms:.2f}",
            f"{v.sequences_per_second:.1f}",
            f"{v.speedup:.2f}",
            percent(v.accuracy),
            f"{v.delta_points:+.2f}",
            "yes" if v.within_budget else "no",
        )
    out.print(table)
    for note in result.notes:
        out.print(f"[dim]{note}[/dim]")
    if result.version is not None:
        v = result.version
        out.print(
            f"registered [bold]{v.ref}[/bold] ({result.chosen.name}, parent {v.parent}) at {v.path}"
        )
    out.print(f"trade-off table and chart: {result.run_dir}/tradeoff.md, tradeoff.png")
