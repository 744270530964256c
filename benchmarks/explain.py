"""Explanations measured on held-out Rotten Tomatoes texts with a registered classifier.

Three steps, each its own command, so that the 500 texts can be measured in parts (a shared
machine may not give one run the time) and merged afterwards:

``faithfulness``
    ERASER-style comprehensiveness and sufficiency as AOPC over removing (keeping) the top 1,
    5, 10, 20 and 50 % of words, for integrated gradients (default steps), attention (last
    layer's [CLS] row, and rollout), occlusion and a random ranking (the floor), every variant
    scored by the served backend, on the version's recipe's test split (never trained on).
    One JSON line per text is appended to ``--out`` as soon as it is measured; a run resumes
    where the file ends (texts already in it are skipped), stops after ``--minutes`` and takes
    the texts ``--start`` to ``--stop`` of the split's first ``--texts``.
``timing``
    time per explanation (batch 1, default settings) beside one prediction, alternated text by
    text over the first ``--timed`` texts, as medians and ratios; and integrated gradients'
    completeness error (|sum of attributions - logit difference|, also relative to the logit
    difference) for 16, 32 and 64 steps on the first ``--completeness`` texts.
``summary``
    merges the faithfulness files (a text measured twice counts once) and the timing file:
    per method the mean (ERASER's figure) and the median AOPC over texts, each with a 95 %
    bootstrap interval over texts, and the paired ratio / differences the issue's goal reads.

    PYTHONPATH=src .venv/bin/python benchmarks/explain.py faithfulness sentiment-en \\
        --out explain-faith.jsonl --minutes 25            # again, until 500 texts are in it
    PYTHONPATH=src .venv/bin/python benchmarks/explain.py timing sentiment-en --out timing.json
    PYTHONPATH=src .venv/bin/python benchmarks/explain.py summary explain-faith.jsonl \\
        --timing timing.json
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.explain.faithfulness import FRACTIONS, faithfulness

METHODS = ("ig", "attention-last", "attention-rollout", "occlusion", "random")
#: Bootstrap resamples for the intervals (seeded: the summary is reproducible).
RESAMPLES = 2000


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load(model: str, count: int) -> tuple[Any, Any, list[str]]:
    """The version, its explainer (warmed) and the first ``count`` texts of its test split."""
    from lmforge.data import prepare_data
    from lmforge.explain import load_explainer
    from lmforge.recipe import load_recipe
    from lmforge.registry import Registry

    version = Registry().get(model)
    recipe = load_recipe(version.path / "recipe.yaml")
    texts = [str(t) for t in prepare_data(recipe.data).test["text"].tolist()[:count]]
    explainer = load_explainer(version.ref)
    explainer.explain(texts[0], "ig")  # loads the torch weights and warms both models
    explainer.explain(texts[0], "occlusion")
    return version, explainer, texts


def rankings(
    explainer: Any, text: str, rng: random.Random
) -> tuple[list[str], dict[str, list[int]], int, dict[str, float]]:
    """The words of ``text``, each method's ranking of them (most important first), the
    predicted label's index (the target every method explains), and the milliseconds one
    prediction and each method's explanation took on this text (batch 1, default settings)."""
    from lmforge.explain import last_layer_attention, word_scores

    ms: dict[str, float] = {}

    def timed(name: str, call: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        value = call()
        ms[name] = (time.perf_counter() - start) * 1000
        return value

    timed("predict", lambda: explainer.predictor.predict([text]))
    ig = timed("ig", lambda: explainer.explain(text, "ig"))
    occ = timed("occlusion", lambda: explainer.explain(text, "occlusion"))
    attention = timed("attention", lambda: explainer.explain(text, "attention"))
    words = ig.words
    target = explainer.labels.index(ig.target)
    _, token_word = explainer.token_map(ig.text)
    last = word_scores(last_layer_attention(attention.attention["layers"]), token_word, len(words))

    def order(scores: Any) -> list[int]:
        return sorted(range(len(words)), key=lambda i: (-float(scores[i]), i))

    shuffled = list(range(len(words)))
    rng.shuffle(shuffled)
    return (
        [w.word for w in words],
        {
            "ig": ig.ranking(),
            "attention-last": order(last),
            "attention-rollout": attention.ranking(),  # the attention method's words: rollout
            "occlusion": occ.ranking(),
            "random": shuffled,
        },
        target,
        ms,
    )


def done_indices(path: Path) -> set[int]:
    """The texts a faithfulness file already holds (a torn last line, from a killed run, is
    ignored: that text is measured again)."""
    if not path.exists():
        return set()
    done = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            done.add(int(json.loads(line)["index"]))
        except (ValueError, KeyError, TypeError):
            continue
    return done


def measure_faithfulness(args: argparse.Namespace) -> None:
    out = Path(args.out)
    done = done_indices(out)
    stop = min(args.stop if args.stop is not None else args.texts, args.texts)
    todo = [i for i in range(args.start, stop) if i not in done]
    if not todo:
        print(f"{out}: texts {args.start}–{stop - 1} all measured", file=sys.stderr)
        return
    version, explainer, texts = load(args.model, args.texts)
    deadline = time.monotonic() + args.minutes * 60
    measured = 0
    with out.open("a", encoding="utf-8") as f:
        if out.stat().st_size and not out.read_bytes().endswith(b"\n"):
            f.write("\n")  # a killed run's torn line stays alone on its line
        for index in todo:
            if time.monotonic() > deadline or index >= len(texts):
                break
            # Seeded per text: the random ranking does not depend on how the run was split.
            words, ranked, target, ms = rankings(explainer, texts[index], random.Random(index))
            scores = faithfulness(explainer.predictor, words, ranked, target)
            record = {
                "index": index,
                "model": version.ref,
                "words": len(words),
                "ms": ms,
                "comprehensiveness": {m: s.comprehensiveness for m, s in scores.items()},
                "sufficiency": {m: s.sufficiency for m, s in scores.items()},
            }
            f.write(json.dumps(record) + "\n")
            f.flush()
            measured += 1
            if measured % 10 == 0:
                print(f"faithfulness: {measured} texts this run", file=sys.stderr, flush=True)
    left = len(todo) - measured
    print(f"{out}: {measured} texts measured, {left} left", file=sys.stderr)


def measure_timing(args: argparse.Namespace) -> None:
    from lmforge.explain import DEFAULT_STEPS

    version, explainer, texts = load(args.model, max(args.timed, args.completeness))
    predictor = explainer.predictor
    times: dict[str, list[float]] = {"predict": [], "ig": [], "attention": [], "occlusion": []}
    for text in texts[: args.timed]:
        for name in times:
            start = time.perf_counter()
            if name == "predict":
                predictor.predict([text])
            else:
                explainer.explain(text, name)
            times[name].append((time.perf_counter() - start) * 1000)
    timing = {name: statistics.median(ms) for name, ms in times.items()}
    print(f"timed: {timing}", file=sys.stderr, flush=True)

    completeness: dict[int, dict[str, float]] = {}
    for steps in (16, 32, 64):
        absolute: list[float] = []
        relative: list[float] = []
        for text in texts[: args.completeness]:
            e = explainer.explain(text, "ig", steps=steps)
            error, difference = e.completeness_error or 0.0, e.logit_difference or 0.0
            absolute.append(error)
            relative.append(error / max(abs(difference), 1e-6))
        print(f"completeness at {steps} steps done", file=sys.stderr, flush=True)
        completeness[steps] = {
            "median_abs": float(np.median(absolute)),
            "p90_abs": float(np.percentile(absolute, 90)),
            "max_abs": float(np.max(absolute)),
            "median_rel": float(np.median(relative)),
            "p90_rel": float(np.percentile(relative, 90)),
            "max_rel": float(np.max(relative)),
        }
    result = {
        "model": version.ref,
        "backend": predictor.backend.name,
        "cpu": cpu_name(),
        "ms_median": timing,
        "ratio_to_predict": {m: timing[m] / timing["predict"] for m in timing},
        "timed_texts": min(args.timed, len(texts)),
        "default_steps": DEFAULT_STEPS,
        "completeness_texts": min(args.completeness, len(texts)),
        "completeness": completeness,
    }
    emit(result, args.out)


def bootstrap(
    values: np.ndarray, statistic: Callable[[np.ndarray], float], rng: np.random.Generator
) -> list[float]:
    """A 95 % percentile-bootstrap interval of ``statistic`` over the rows of ``values``."""
    n = len(values)
    draws = [statistic(values[rng.integers(0, n, n)]) for _ in range(RESAMPLES)]
    return [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per method: mean and median AOPC over texts with bootstrap intervals, the mean
    comprehensiveness at each fraction, and the paired comparisons the issue's goal names."""
    rng = np.random.default_rng(0)
    comp = {m: np.array([np.mean(r["comprehensiveness"][m]) for r in records]) for m in METHODS}
    suff = {m: np.array([np.mean(r["sufficiency"][m]) for r in records]) for m in METHODS}

    def mean(v: np.ndarray) -> float:
        return float(np.mean(v))

    def median(v: np.ndarray) -> float:
        return float(np.median(v))

    def described(v: np.ndarray) -> dict[str, Any]:
        return {
            "mean": mean(v),
            "mean_ci95": bootstrap(v, mean, rng),
            "median": median(v),
            "median_ci95": bootstrap(v, median, rng),
        }

    # Paired over texts: resample texts once, compute both methods' means on the same draw.
    pair = np.stack([comp["ig"], comp["random"]], axis=1)

    def ratio(v: np.ndarray) -> float:
        return float(np.mean(v[:, 0]) / max(np.mean(v[:, 1]), 1e-12))

    versus = {}
    for other in ("attention-last", "attention-rollout", "occlusion"):
        difference = comp["ig"] - comp[other]
        versus[other] = {
            "mean_difference": mean(difference),
            "mean_difference_ci95": bootstrap(difference, mean, rng),
            "ig_higher_share": float(np.mean(difference > 0)),
        }
    timed = [r["ms"] for r in records if "ms" in r]
    timing: dict[str, Any] = {"texts": len(timed)}
    if timed:
        # The ratio per text, then its median: each text's explanation against its own
        # prediction, taken moments apart, so a load that changes during the run cancels out.
        for name in ("predict", "ig", "attention", "occlusion"):
            timing[name] = {
                "median_ms": median(np.array([t[name] for t in timed])),
                "times_predict_median": median(np.array([t[name] / t["predict"] for t in timed])),
            }
    return {
        "texts": len(records),
        "timing": timing,
        "models": sorted({str(r["model"]) for r in records}),
        "fractions": list(FRACTIONS),
        "comprehensiveness": {m: described(v) for m, v in comp.items()},
        "sufficiency": {m: described(v) for m, v in suff.items()},
        "comprehensiveness_by_fraction": {
            m: [float(x) for x in np.mean([r["comprehensiveness"][m] for r in records], axis=0)]
            for m in METHODS
        },
        "ig_over_random": {"ratio": ratio(pair), "ratio_ci95": bootstrap(pair, ratio, rng)},
        "ig_minus": versus,
    }


def merge(paths: Sequence[str]) -> list[dict[str, Any]]:
    """Every text's record from the faithfulness files, in text order, each text once."""
    records: dict[int, dict[str, Any]] = {}
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a killed run's torn last line
            records.setdefault(int(record["index"]), record)
    return [records[i] for i in sorted(records)]


def make_summary(args: argparse.Namespace) -> None:
    records = merge(args.files)
    if not records:
        raise SystemExit("no faithfulness records in the files given")
    result: dict[str, Any] = {"faithfulness": summarize(records), "cpu": cpu_name()}
    if args.timing:
        result["timing"] = json.loads(Path(args.timing).read_text(encoding="utf-8"))
    emit(result, args.out)


def emit(result: dict[str, Any], out: str | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    faith = commands.add_parser("faithfulness", help="append per-text faithfulness records")
    faith.add_argument("model", nargs="?", default="sentiment-en")
    faith.add_argument("--out", required=True, help="JSON-lines file, appended to (resumable)")
    faith.add_argument("--texts", type=int, default=500, help="held-out texts at most")
    faith.add_argument("--start", type=int, default=0, help="first text of this part")
    faith.add_argument("--stop", type=int, default=None, help="end (exclusive) of this part")
    faith.add_argument("--minutes", type=float, default=25.0, help="this run's budget")
    faith.set_defaults(run=measure_faithfulness)

    timing = commands.add_parser("timing", help="time per explanation and completeness")
    timing.add_argument("model", nargs="?", default="sentiment-en")
    timing.add_argument("--timed", type=int, default=30)
    timing.add_argument("--completeness", type=int, default=40)
    timing.add_argument("--out", default=None, help="also write the JSON here")
    timing.set_defaults(run=measure_timing)

    summary = commands.add_parser("summary", help="merge faithfulness files into figures")
    summary.add_argument("files", nargs="+", help="faithfulness JSON-lines files")
    summary.add_argument("--timing", default=None, help="a timing JSON file to include")
    summary.add_argument("--out", default=None, help="also write the JSON here")
    summary.set_defaults(run=make_summary)

    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
