"""Dense length buckets: rows per second of 32-text requests for several padding limits.

A request of 32 real texts (Rotten Tomatoes snippets, 7 to 64 tokens) is sorted by length and cut
into calls (``lmforge.runtime.predictor.length_buckets``). One call of 32 rows padded to its
longest pays for about twice the tokens it holds; a padding limit cuts a call where the next row
would make its padding exceed that share of its real tokens. Every limit, and one call per text
(batch 1), run through the same ``Predictor`` in turn over ``--rounds`` rounds (medians).

    .venv/bin/python benchmarks/length_buckets.py sentiment-en:v2 --backend onnx-int8
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

LIMITS = (0.1, 0.25, 0.5, None)  # None: the batch size alone cuts (before issue 26)
REQUEST = 32


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("model", help="a registered classifier NAME[:VERSION]")
    parser.add_argument("--backend", default=None, help="default: the version's own")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--texts", type=int, default=1600, help="texts per subject per round")
    args = parser.parse_args(argv)

    from lmforge.data.sources import load_builtin
    from lmforge.hardware import cpu_name
    from lmforge.registry import Registry
    from lmforge.runtime import predictor as predictor_module
    from lmforge.runtime.backends import cpu_threads

    texts = [str(t) for t in load_builtin("rotten_tomatoes")["text"]]
    random.Random(0).shuffle(texts)
    predictor = predictor_module.Predictor(
        Registry().get(args.model).path, backend=args.backend, batch_size=REQUEST
    )
    predictor.predict(texts[:64])  # warm-up
    default = predictor_module.length_buckets
    subjects: dict[str, tuple[Callable[..., Any], int]] = {
        ("no limit" if limit is None else f"padding ≤ {limit:.0%}"): (
            partial(default, max_padding=1e9 if limit is None else limit),
            REQUEST,
        )
        for limit in LIMITS
    }
    subjects["batch 1"] = (default, 1)
    rates: dict[str, list[float]] = {name: [] for name in subjects}
    try:
        for r in range(args.rounds):
            for name, (buckets, size) in subjects.items():
                predictor_module.length_buckets = buckets
                offset = r * args.texts
                start = time.perf_counter()
                for s in range(0, args.texts, size):
                    predictor.predict(texts[offset + s : offset + s + size])
                rates[name].append(args.texts / (time.perf_counter() - start))
    finally:
        predictor_module.length_buckets = default
    print(f"{cpu_name()}, {cpu_threads()} threads; {args.model} ({predictor.backend.name})\n")
    print("| calls | rows/s | × no limit |")
    print("|---|---:|---:|")
    base = statistics.median(rates["no limit"])
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"| {name} | {rate:.1f} | {rate / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
