"""Start-up: from process start to the first prediction, per runtime backend, side by side.

Each trial is a fresh ``lmforge predict MODEL TEXT --backend B --json`` process (the CLI a user
runs: argument parsing, registry lookup, model load, tokenising, one forward pass, JSON out),
timed from ``subprocess`` launch to exit. Backends alternate trial by trial so a noisy neighbour
hits all of them alike; the median of each is reported, and its ratio to torch-fp32.

    .venv/bin/python benchmarks/startup.py sentiment-en:v2 --trials 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

TEXT = "A gripping, beautifully acted film."


def first_prediction_seconds(model: str, backend: str) -> float:
    command = [sys.executable, "-m", "lmforge.cli", "predict", model, TEXT, "--json"]
    start = time.perf_counter()
    done = subprocess.run([*command, "--backend", backend], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{backend}: {done.stderr.strip()}")
    json.loads(done.stdout)  # a real answer came back
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("model", help="a registered NAME:VERSION that has ONNX files")
    parser.add_argument("--backends", default="onnx-int8,torch-fp32")
    parser.add_argument("--trials", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    backends = args.backends.split(",")
    first_prediction_seconds(args.model, backends[0])  # warm the page cache, untimed
    times: dict[str, list[float]] = {b: [] for b in backends}
    for _ in range(args.trials):
        for backend in backends:
            times[backend].append(first_prediction_seconds(args.model, backend))
    medians = {b: statistics.median(t) for b, t in times.items()}
    reference = medians.get("torch-fp32")
    print("| backend | start → first prediction, median s | min s | × faster than torch-fp32 |")
    print("|---|---:|---:|---:|")
    for backend in backends:
        ratio = f"{reference / medians[backend]:.2f}" if reference else "–"
        print(f"| {backend} | {medians[backend]:.2f} | {min(times[backend]):.2f} | {ratio} |")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "seconds": times}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
