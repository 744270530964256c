"""``lmforge compress`` and ``lmforge bench``: a registered classifier made smaller and faster,
and every backend of a version timed side by side."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from lmforge.cli.output import RichProgress, out, print_compress, print_json

if TYPE_CHECKING:  # the bench imports torch: loaded only when a bench runs
    from lmforge.runtime.bench_report import BenchReport


def compress(
    model: Annotated[str, typer.Argument(help="NAME[:VERSION] of a registered classifier.")],
    recipe: Annotated[
        Path | None,
        typer.Option(help="A recipe whose `compress` section to use (default: the version's)."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Build, evaluate and time compressed variants; register the fastest within budget."""
    from lmforge.recipe import load_recipe

    config = load_recipe(recipe).compress if recipe is not None else None
    from lmforge.compress.stage import compress_version

    result = compress_version(model, config, progress=RichProgress())
    if json_output:
        print_json(result.to_json())
        return
    print_compress(result)


def bench(
    model: Annotated[str, typer.Argument(help="NAME[:VERSION] of a registered model.")],
    backend: Annotated[
        list[str] | None,
        typer.Option("--backend", help="Only this backend (repeatable); default: all available."),
    ] = None,
    length: Annotated[
        list[int] | None,
        typer.Option("--length", help="Throughput token length (repeatable); default 64, 128."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Batch size of the throughput.")] = 32,
    runs: Annotated[int, typer.Option(help="Batch-1 requests timed for the latency.")] = 50,
    min_seconds: Annotated[
        float, typer.Option(help="Shortest time each throughput is measured for.")
    ] = 1.0,
    baselines: Annotated[
        bool, typer.Option(help="Also measure torch fp32 eager and transformers' pipeline.")
    ] = True,
    rounds: Annotated[
        int, typer.Option(help="Measure everything this many times in turn; report medians.")
    ] = 1,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Measure every backend of a version side by side, beside torch eager, transformers'
    pipeline and the machine's own matmul peaks, in one process and one run."""
    from lmforge.runtime.versions import bench_version

    report = bench_version(
        model,
        backends=backend,
        lengths=tuple(length or (64, 128)),
        batch_size=batch_size,
        latency_runs=runs,
        min_seconds=min_seconds,
        baselines=baselines,
        rounds=rounds,
        progress=RichProgress(),
    )
    if json_output:
        print_json(report.to_json())
        return
    _print_bench(report)


def _num(value: float | None, spec: str, suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def _print_bench(report: BenchReport) -> None:
    """One row per backend: size, latency, and per length throughput, speed-up and share of the
    machine's peak; then the machine and every backend's error."""
    rounds = f", median of {report.rounds} rounds" if report.rounds > 1 else ""
    table = Table(
        title=f"{report.model}: batch 1 latency, batch {report.batch_size} throughput{rounds}"
    )
    columns = ["backend", "MB", "p50 ms", "p99 ms", "p50 ×eager"]
    for n in report.lengths:
        columns += [f"seq/s @{n}", f"×eager @{n}", f"% peak @{n}", f"row cost ÷b1 @{n}"]
    for column in columns:
        table.add_column(column, justify="left" if column == "backend" else "right")
    for r in report.results:
        lat = r.latency
        cells = [
            r.backend + (" [red](failed)[/red]" if r.error else ""),
            _num(r.size_mb, ".1f"),
            _num(lat.p50_ms if lat else None, ".2f"),
            _num(lat.p99_ms if lat else None, ".2f"),
            _num(report.latency_speedup(r), ".1f", "×"),
        ]
        for n in report.lengths:
            run = r.throughput.get(n)
            share = report.share_of_peak(r, n)
            cells += [
                _num(run.sequences_per_second if run else None, ".1f"),
                _num(report.speedup(r, n), ".1f", "×"),
                _num(None if share is None else 100 * share, ".1f", f"% {r.peak}"),
                _num(report.row_cost_vs_batch1(r, n), ".2f"),
            ]
        table.add_row(*cells)
    out.print(table)
    m = report.machine
    out.print(
        f"{m.cpu}, {m.threads} threads; peaks fp32 {m.peaks.fp32_gflops:.0f} GFLOP/s, "
        f"int8 {m.peaks.int8_gops:.0f} GOP/s; texts: {report.texts_source}",
        highlight=False,
    )
    for r in report.results:
        if r.error:
            out.print(f"[red]{r.backend}[/red]: {r.error}", highlight=False, soft_wrap=True)
