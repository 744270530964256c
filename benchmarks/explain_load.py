"""``/v1/predict`` latency with and without a stream of explanations, on one ``lmforge serve``.

One run, loopback only, with the server's ``explain`` section at its defaults (one worker
process of one thread at nice 15, four more requests queued, then 429):

1. the same closed-loop predict load (``--clients`` concurrent clients, each sending its next
   request when the last one is answered) alone, then while ``--explainers`` clients keep
   integrated-gradients requests in flight (each sends the next when one is answered, so the
   worker is never idle). The two windows alternate in ``--rounds`` rounds, so the shared
   machine's noise hits both alike; the p99 ratio is reported pooled and per round (median);
2. the queue bound: ``explain.concurrency + explain.max_queue + --burst`` explanations sent at
   once; the ones beyond the capacity must get 429 with ``Retry-After`` at once, not queue.

    PYTHONPATH=src .venv/bin/python benchmarks/explain_load.py sentiment-en --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from loadgen import PhaseResult, closed_loop, free_port, start_server, stop, wait_ready


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


async def with_explanations(
    port: int,
    headers: dict[str, str],
    predict_bodies: list[bytes],
    explain_bodies: list[bytes],
    clients: int,
    explainers: int,
    seconds: float,
) -> tuple[PhaseResult, PhaseResult]:
    """The predict load for ``seconds`` while ``explainers`` clients keep explanations going.
    The explanation clients start a second before the predictions and send their last request
    a second after them, then wait for its answer, so the stream covers the whole predict
    window and no explanation is left running into the next window."""
    host = "127.0.0.1"

    async def predictions() -> PhaseResult:
        await asyncio.sleep(1.0)
        return await closed_loop(
            host, port, headers, "/v1/predict", predict_bodies, clients, seconds, 10**9
        )

    explained, predicted = await asyncio.gather(
        closed_loop(
            host, port, headers, "/v1/explain", explain_bodies, explainers, seconds + 2, 10**9
        ),
        predictions(),
    )
    return predicted, explained


async def burst(port: int, headers: dict[str, str], body: bytes, count: int) -> list[Any]:
    """``count`` explanations sent at once; each one's (status, seconds, Retry-After)."""
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=600
    ) as client:

        async def one() -> tuple[int, float, str | None]:
            start = time.perf_counter()
            r = await client.post(
                "/v1/explain", content=body, headers={"Content-Type": "application/json"}
            )
            return r.status_code, time.perf_counter() - start, r.headers.get("retry-after")

        return list(await asyncio.gather(*(one() for _ in range(count))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("model", nargs="?", default="sentiment-en")
    parser.add_argument("--seconds", type=float, default=60, help="per condition, in all rounds")
    parser.add_argument("--rounds", type=int, default=6, help="alternations of the two windows")
    parser.add_argument("--clients", type=int, default=8, help="concurrent predict clients")
    parser.add_argument("--explainers", type=int, default=2, help="clients keeping IG going")
    parser.add_argument("--burst", type=int, default=3, help="explanations beyond capacity")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)

    from lmforge.data.sources import load_builtin
    from lmforge.registry import Registry
    from lmforge.serve import KeyStore
    from lmforge.serve.config import ExplainConfig

    registry = Registry()
    version = registry.get(args.model)
    texts = [str(t) for t in load_builtin("rotten_tomatoes")["text"].tolist()]
    random.Random(0).shuffle(texts)
    texts = texts[:2000]
    predict_bodies = [json.dumps({"model": version.ref, "inputs": [t]}).encode() for t in texts]
    explain_bodies = [
        json.dumps({"model": version.ref, "input": t, "method": "ig"}).encode() for t in texts
    ]
    defaults = ExplainConfig()
    results: dict[str, Any] = {
        "model": version.ref,
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "load_average_start": os.getloadavg(),
        "clients": args.clients,
        "explainers": args.explainers,
        "explain_config": defaults.model_dump(),
    }

    keys = KeyStore(registry.engine)
    key, secret = keys.create("explain-load-benchmark", ["predict"])
    headers = {"Authorization": f"Bearer {secret}"}
    port = free_port()
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as config:
        # Latency is what is measured, so the per-key rate limit is off; explain: the defaults.
        config.write(
            f"models: ['{version.ref}']\n"
            "limits: {rate_per_second: null}\n"
            "prediction_log: {sample_rate: 0.01}\n"
        )
    server = start_server(port, config.name, subprocess.DEVNULL)
    try:
        wait_ready(port, server, "/readyz", 180)
        run = asyncio.run
        host = "127.0.0.1"
        run(closed_loop(host, port, headers, "/v1/predict", predict_bodies, 4, 3, 400))
        # The first explanation starts the worker process and loads the torch weights.
        print("warming the explanation worker …", file=sys.stderr, flush=True)
        warm = httpx.post(
            f"http://{host}:{port}/v1/explain",
            content=explain_bodies[0],
            headers={**headers, "Content-Type": "application/json"},
            timeout=600,
        )
        if warm.status_code != 200:
            raise SystemExit(f"explain warm-up answered {warm.status_code}: {warm.text}")

        window = args.seconds / args.rounds
        alone, loaded = PhaseResult(), PhaseResult()
        ratios: list[float] = []
        p50_ratios: list[float] = []
        rate_ratios: list[float] = []
        explained = PhaseResult()
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
            a = run(
                closed_loop(
                    host, port, headers, "/v1/predict", predict_bodies, args.clients, window, 10**9
                )
            )
            b, e = run(
                with_explanations(
                    port,
                    headers,
                    predict_bodies,
                    explain_bodies[1:],
                    args.clients,
                    args.explainers,
                    window,
                )
            )
            alone.merge(a)
            loaded.merge(b)
            explained.merge(e)
            sa, sb = a.summary(), b.summary()
            if sa["p99_ms"] and sb["p99_ms"]:
                ratios.append(sb["p99_ms"] / sa["p99_ms"])
                p50_ratios.append(sb["p50_ms"] / sa["p50_ms"])
                rate_ratios.append(sb["ok_per_second"] / sa["ok_per_second"])
        s_alone, s_loaded = alone.summary(), loaded.summary()
        results["predict_alone"] = s_alone
        results["predict_with_explain_stream"] = s_loaded
        results["p99_ratio_pooled"] = s_loaded["p99_ms"] / s_alone["p99_ms"]
        results["p50_ratio_pooled"] = s_loaded["p50_ms"] / s_alone["p50_ms"]
        results["p99_ratio_per_round"] = [round(x, 3) for x in ratios]
        results["p99_ratio_median_of_rounds"] = statistics.median(ratios) if ratios else None
        results["p50_ratio_per_round"] = [round(x, 3) for x in p50_ratios]
        results["throughput_ratio_per_round"] = [round(x, 3) for x in rate_ratios]
        results["explain_stream"] = explained.summary()

        # The queue bound: the worker is idle (every explanation was answered), then a burst
        # beyond the capacity.
        capacity = defaults.concurrency + defaults.max_queue
        answers = run(burst(port, headers, explain_bodies[0], capacity + args.burst))
        rejected = [a for a in answers if a[0] == 429]
        results["burst"] = {
            "sent": len(answers),
            "capacity": capacity,
            "status_counts": {
                str(s): sum(1 for a in answers if a[0] == s)
                for s in sorted({a[0] for a in answers})
            },
            "rejected_max_ms": round(max(a[1] for a in rejected) * 1000, 1) if rejected else None,
            "answered_min_ms": round(min(a[1] for a in answers if a[0] == 200) * 1000, 1)
            if any(a[0] == 200 for a in answers)
            else None,
            "retry_after": sorted({a[2] for a in rejected if a[2]}),
        }
        results["load_average_end"] = os.getloadavg()
    finally:
        stop(server)
        keys.revoke(key.name)
        os.unlink(config.name)

    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
