"""Recommendation on MovieLens: every method side by side, the issue's goals checked, fit times,
the item index's memory, and POST /v1/recommend latency at 1 and 16 clients beside the scoring
alone.

One split (leave-last-out, ratings ≥ 4 positive, a seeded 10 % of items cold), one embedding
of the items by the encoder, then each method fitted and ranked over every unrated item
(docs/recommend.md says how the cold-start and light-user slices are scored). The hybrid is
then registered in a temporary home, served on a loopback port (auth off, no rate limit) and
asked for known users' lists.

    LMFORGE_HOME=/work/h-recommend/home nice -n 10 .venv/bin/python benchmarks/recommend.py \
        --json /work/h-recommend/recommend.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from lmforge.assistant.assistant import resolve_encoder
from lmforge.data.movielens import load_movielens, split_ratings
from lmforge.models.meta import RecommendationMeta, write_model_meta
from lmforge.recipe.recommendation import RecommendationSection
from lmforge.registry import Registry
from lmforge.runtime.recommend_service import open_recommender
from lmforge.serve import ServeConfig, create_app
from lmforge.settings import Settings, get_settings
from lmforge.tasks.recommendation import (
    embed_items,
    evaluate_cold,
    evaluate_recommender,
    fit_recommender,
    genre_scorer,
)

METHODS = ("popularity", "itemknn", "als", "bpr", "text", "hybrid")
ARRAYS = ("vectors", "item_factors", "user_factors", "neighbours", "neighbour_weights")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def latency(url: str, users: list[int], clients: int, requests: int) -> dict[str, float]:
    """p50/p99 (ms) of POST /v1/recommend by ``clients`` threads, ``requests`` in all."""
    times: list[float] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        with httpx.Client(timeout=60) as http:
            for i in range(n, requests, clients):
                start = time.perf_counter()
                reply = http.post(url, json={"user_id": users[i % len(users)], "k": 10})
                elapsed = (time.perf_counter() - start) * 1000
                reply.raise_for_status()
                with lock:
                    times.append(elapsed)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {
        "p50_ms": round(percentile(times, 50), 2),
        "p99_ms": round(percentile(times, 99), 2),
        "requests_per_s": round(len(times) / wall, 1),
    }


def serve_latency(model: Any, settings: Settings, requests: int) -> dict[str, Any]:
    import uvicorn

    home = Path(tempfile.mkdtemp(prefix="lmforge-recommend-"))
    served = Settings(home=home, database_url=None)
    registry = Registry(served)
    staging = registry.new_staging_dir()
    model.save(staging)
    meta = RecommendationMeta(
        task="recommendation",
        base_model=model.encoder["source"],
        method=model.method,
        items=model.n_items,
        users=len(model.user_ids),
    )
    write_model_meta(staging, meta)
    version = registry.register(
        "movielens-bench",
        staging,
        task="recommendation",
        base_model=meta.base_model,
        labels=[],
        metrics={},
        baselines={},
    )
    users = [int(u) for u in model.user_ids]
    service = open_recommender(version.ref, served)

    def scoring_alone() -> dict[str, float]:
        alone: list[float] = []
        for i in range(requests):
            start = time.perf_counter()
            service.recommend(user_id=users[i % len(users)], k=10)
            alone.append((time.perf_counter() - start) * 1000)
        return {
            "p50_ms": round(percentile(alone, 50), 2),
            "p99_ms": round(percentile(alone, 99), 2),
        }

    scoring_alone()  # warm-up, as the server gets
    config = ServeConfig.model_validate(
        {
            "auth": {"enabled": False},
            "limits": {"rate_per_second": None},
            "access_log": {"enabled": False},
        }
    )
    app = create_app(config, served)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1/recommend"
    try:
        latency(url, users, 1, 20)  # warm-up: the recommender is opened on the first request
        # alternated, so that a noisy neighbour on the shared cores hits each alike
        figures = {
            "http_1_client": latency(url, users, 1, requests),
            "scoring_alone": scoring_alone(),
            "http_16_clients": latency(url, users, 16, requests),
        }
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    return figures


def ann_recall(model: Any, ef: int) -> dict[str, Any]:
    """recall@10 of an hnswlib index (M 16, ef_construction 200, query ef ``ef``) against the
    exact scan, for every known user: over the text vectors (cosine, with the user's text
    profile) and over the ALS item factors (inner product, with the user's factors). Raw top
    10, nothing excluded. hnswlib is optional: ``pip install hnswlib``."""
    import hnswlib

    out: dict[str, Any] = {}
    spaces = {"text (cosine)": ("cosine", model.vectors), "als (inner product)": ("ip", None)}
    for name, (space, items) in spaces.items():
        items = model.item_factors if items is None else items
        queries = []
        for user in model.user_ids:
            row, _, liked = model.user_history(int(user))
            queries.append(
                model.profile_vector(liked) if space == "cosine" else model.user_factors[row]
            )
        q = np.asarray(queries, dtype=np.float32)
        data = np.asarray(items, dtype=np.float32)
        start = time.perf_counter()
        index = hnswlib.Index(space=space, dim=data.shape[1])
        index.init_index(max_elements=len(data), M=16, ef_construction=200, random_seed=1)
        index.add_items(data, np.arange(len(data)), num_threads=1)
        build_s = time.perf_counter() - start
        index.set_ef(ef)
        start = time.perf_counter()
        found, _ = index.knn_query(q, k=10, num_threads=1)
        query_ms = (time.perf_counter() - start) * 1000 / len(q)
        start = time.perf_counter()
        exact = np.argsort(-(q @ data.T), axis=1, kind="stable")[:, :10]
        exact_ms = (time.perf_counter() - start) * 1000 / len(q)
        hits = [
            len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(found, exact, strict=True)
        ]
        out[name] = {
            "recall@10": round(float(np.mean(hits)), 4),
            "build_s": round(build_s, 2),
            "ann_query_ms": round(query_ms, 3),
            "exact_query_ms": round(exact_ms, 3),
            "ef": ef,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--encoder", default="minilm-l6")
    parser.add_argument("--max-users", type=int, default=None)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument(
        "--ann-only", action="store_true", help="only the ANN index's recall (needs hnswlib)"
    )
    args = parser.parse_args(argv)
    settings = get_settings()
    section = RecommendationSection(max_users=args.max_users)
    data = load_movielens(args.max_users)
    split = split_ratings(data.ratings, seed=section.seed)
    encoder = resolve_encoder(args.encoder, settings.cache_dir, Registry(settings))
    start = time.perf_counter()
    vectors = embed_items(data.items, encoder, settings.cache_dir / "recommend-items")
    embed_s = time.perf_counter() - start
    print(f"embedded {len(vectors)} items in {embed_s:.1f} s (0 when cached)", flush=True)
    if args.ann_only:
        hybrid = fit_recommender("hybrid", data, split, vectors, section, encoder)
        ann = {f"ef={ef}": ann_recall(hybrid, ef) for ef in (10, 50)}
        print(json.dumps(ann), flush=True)
        if args.json:
            args.json.write_text(json.dumps(ann, indent=1))
        return 0
    rows: dict[str, Any] = {}
    models: dict[str, Any] = {}
    for method in METHODS:
        start = time.perf_counter()
        model = fit_recommender(method, data, split, vectors, section, encoder)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        figures = evaluate_recommender(model, split, data.items)
        memory = sum(getattr(model, a).nbytes for a in ARRAYS if getattr(model, a) is not None)
        rows[method] = {
            **figures,
            "fit_s": round(fit_s, 2),
            "evaluate_s": round(time.perf_counter() - start, 2),
            "index_mb": round(memory / 2**20, 2),
            "blend": model.blend if method == "hybrid" else None,
        }
        models[method] = model
        print(method, json.dumps(rows[method]), flush=True)
    genre = evaluate_cold(genre_scorer(data, split, models["hybrid"]), models["hybrid"], split)
    goals = {
        "hybrid_hr10_vs_popularity": round(
            rows["hybrid"]["hr@10"] / rows["popularity"]["hr@10"], 3
        ),
        "hybrid_ge_als": rows["hybrid"]["hr@10"] >= rows["als"]["hr@10"],
        "cold_text_vs_genre_popularity": round(rows["text"]["cold"]["hr@10"] / genre["hr@10"], 3),
        "cold_hybrid_vs_genre_popularity": round(
            rows["hybrid"]["cold"]["hr@10"] / genre["hr@10"], 3
        ),
    }
    result = {
        "cores": os.cpu_count(),
        "items": len(data.items),
        "ratings": len(data.ratings),
        "encoder": encoder.ref,
        "embed_s": round(embed_s, 1),
        "methods": rows,
        "genre_popularity_cold": genre,
        "goals": goals,
    }
    print(json.dumps(goals), flush=True)
    result["latency"] = serve_latency(models["hybrid"], settings, args.requests)
    print(json.dumps(result["latency"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
