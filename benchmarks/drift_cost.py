"""What a drift rule costs per monitor round (docs/monitoring.md, docs/benchmarks.md).

A server's monitor round computes, per model, the figures of the trailing window
(`lmforge.monitor.report.summarize_window`); only when a rule reads a ``drift.`` figure does it
embed the window's retained texts with the served model and run the permutation tests. This
times one window both ways, side by side on the same rows — without drift (two SQL queries) and
with it — alternating the two so that a busy neighbour slows both alike, and reports the medians
and their ratio. The model's reference (its validation split's embeddings) is cached before the
first timed round, as it is in a running server after its first round.

The home needs a registered classifier and prediction-log rows with their texts, e.g. a copy
of benchmarks/feedback_loop.py's home after its stream:

    LMFORGE_HOME=/tmp/fl-copy PYTHONPATH=src .venv/bin/python benchmarks/drift_cost.py \\
        --model sentiment-multi --texts 200 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import timedelta

from sqlalchemy import select

from lmforge.monitor.report import summarize_window
from lmforge.monitor.tables import PredictionLogRow
from lmforge.monitor.windows import log_engine
from lmforge.settings import get_settings


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sentiment-multi")
    parser.add_argument("--texts", type=int, default=200, help="logged texts in the window")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not os.environ.get("LMFORGE_HOME"):
        raise SystemExit("set LMFORGE_HOME to a home with logged predictions")
    settings = get_settings()
    log = PredictionLogRow
    query = (
        select(log.created_at)
        .where(log.model == args.model, log.text.is_not(None))
        .order_by(log.created_at)
        .limit(args.texts)
    )
    with log_engine(settings).connect() as conn:
        times = [row[0] for row in conn.execute(query)]
    if len(times) < args.texts:
        raise SystemExit(f"{args.model} has {len(times)} logged texts, fewer than {args.texts}")
    start, end = times[0], times[-1] + timedelta(microseconds=1)

    def round_seconds(with_drift: bool) -> tuple[float, float]:
        """Wall and CPU seconds of one round: on a shared machine the wall time grows with
        the neighbours' load, the CPU time (this process, all its threads) much less."""
        tick, cpu = time.perf_counter(), time.process_time()
        window = summarize_window(
            args.model, start=start, end=end, settings=settings, with_drift=with_drift
        )
        seconds = time.perf_counter() - tick, time.process_time() - cpu
        assert window.volume == args.texts and (window.drift is not None) == with_drift
        return seconds

    round_seconds(True)  # builds (or reads) the reference and loads the model, as round 1 does
    plain: list[tuple[float, float]] = []
    drift: list[tuple[float, float]] = []
    for _ in range(args.repeats):
        plain.append(round_seconds(False))
        drift.append(round_seconds(True))

    def median(rounds: list[tuple[float, float]], i: int) -> float:
        return statistics.median(r[i] for r in rounds)

    result = {
        "model": args.model,
        "window_texts": args.texts,
        "repeats": args.repeats,
        "without_drift_s": round(median(plain, 0), 4),
        "with_drift_s": round(median(drift, 0), 3),
        "ratio": round(median(drift, 0) / median(plain, 0), 1),
        "without_drift_cpu_s": round(median(plain, 1), 4),
        "with_drift_cpu_s": round(median(drift, 1), 3),
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "load_average": [round(x, 1) for x in os.getloadavg()],
    }
    print(json.dumps(result, indent=1))
    print(f"drift on {args.texts} texts: {result['with_drift_s']} s a round", file=sys.stderr)


if __name__ == "__main__":
    main()
