"""Explanations measured on held-out Rotten Tomatoes texts with a registered classifier.

One run, in this process, on the version's recipe's test split (never trained on):

1. faithfulness, ERASER-style: comprehensiveness and sufficiency as AOPC over removing (keeping)
   the top 1, 5, 10, 20 and 50 % of words, for integrated gradients (default steps), attention
   (last layer's [CLS] row, and rollout), occlusion and a random ranking (the floor), every
   variant scored by the served backend; texts are taken in order until ``--minutes`` is spent
   (the count is reported);
2. time per explanation (batch 1, default settings) beside one prediction, alternated text by
   text over the first ``--timed`` texts, reported as medians and ratios;
3. integrated gradients' completeness error (|sum of attributions - logit difference|, also
   relative to the logit difference) for 16, 32 and 64 steps on the first ``--completeness``
   texts.

    PYTHONPATH=src .venv/bin/python benchmarks/explain.py sentiment-en --minutes 12
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from typing import Any

import numpy as np

from lmforge.data import prepare_data
from lmforge.explain import (
    DEFAULT_STEPS,
    attention_rollout,
    last_layer_attention,
    load_explainer,
    word_scores,
)
from lmforge.explain.faithfulness import FRACTIONS, faithfulness
from lmforge.recipe import load_recipe
from lmforge.registry import Registry

METHODS = ("ig", "attention-last", "attention-rollout", "occlusion", "random")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def rankings(
    explainer: Any, text: str, rng: random.Random
) -> tuple[Any, dict[str, list[int]], int]:
    """The words of ``text``, each method's ranking of them (most important first), and the
    predicted label's index (the target every method explains)."""
    ig = explainer.explain(text, "ig")
    words = ig.words
    target = explainer.labels.index(ig.target)
    occ = explainer.explain(text, "occlusion")
    ids, token_word = explainer.token_map(ig.text)
    maps, _ = explainer.attention_maps(ids, target)
    last = word_scores(last_layer_attention(maps), token_word, len(words))
    roll = word_scores(attention_rollout(maps)[0], token_word, len(words))

    def order(scores: Any) -> list[int]:
        return sorted(range(len(words)), key=lambda i: (-float(scores[i]), i))

    shuffled = list(range(len(words)))
    rng.shuffle(shuffled)
    return (
        [w.word for w in words],
        {
            "ig": ig.ranking(),
            "attention-last": order(last),
            "attention-rollout": order(roll),
            "occlusion": occ.ranking(),
            "random": shuffled,
        },
        target,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="sentiment-en")
    parser.add_argument("--texts", type=int, default=500, help="held-out texts at most")
    parser.add_argument("--minutes", type=float, default=12.0, help="budget for faithfulness")
    parser.add_argument("--timed", type=int, default=30)
    parser.add_argument("--completeness", type=int, default=40)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()

    version = Registry().get(args.model)
    recipe = load_recipe(version.path / "recipe.yaml")
    texts = prepare_data(recipe.data).test["text"].tolist()[: args.texts]
    explainer = load_explainer(version.ref)
    predictor = explainer.predictor
    explainer.explain(texts[0], "ig")  # loads the torch weights and warms both models
    explainer.explain(texts[0], "occlusion")

    # 2. time per explanation beside one prediction, alternated text by text
    times: dict[str, list[float]] = {"predict": [], "ig": [], "attention": [], "occlusion": []}
    for text in texts[: args.timed]:
        for name in times:
            start = time.perf_counter()
            if name == "predict":
                predictor.predict([text])
            else:
                explainer.explain(text, name)  # type: ignore[arg-type]
            times[name].append((time.perf_counter() - start) * 1000)
    timing = {name: statistics.median(ms) for name, ms in times.items()}
    print(f"timed: {timing}", file=sys.stderr, flush=True)

    # 3. completeness error by steps
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

    # 1. faithfulness, until the budget is spent
    rng = random.Random(0)
    comp: dict[str, list[float]] = {m: [] for m in METHODS}
    suff: dict[str, list[float]] = {m: [] for m in METHODS}
    per_fraction: dict[str, list[list[float]]] = {m: [] for m in METHODS}
    deadline = time.monotonic() + args.minutes * 60
    done = 0
    for text in texts:
        if time.monotonic() > deadline:
            break
        words, ranked, target = rankings(explainer, text, rng)
        for name, f in faithfulness(predictor, words, ranked, target).items():
            comp[name].append(f.aopc_comprehensiveness)
            suff[name].append(f.aopc_sufficiency)
            per_fraction[name].append(f.comprehensiveness)
        done += 1
        if done % 10 == 0:
            print(f"faithfulness: {done} texts", file=sys.stderr, flush=True)

    result = {
        "model": version.ref,
        "backend": predictor.backend.name,
        "cpu": cpu_name(),
        "texts_faithfulness": done,
        "fractions": list(FRACTIONS),
        "aopc_comprehensiveness": {m: float(np.mean(v)) for m, v in comp.items()},
        "aopc_sufficiency": {m: float(np.mean(v)) for m, v in suff.items()},
        "comprehensiveness_by_fraction": {
            m: [float(x) for x in np.mean(v, axis=0)] for m, v in per_fraction.items()
        },
        "ms_median": timing,
        "ratio_to_predict": {m: timing[m] / timing["predict"] for m in timing},
        "timed_texts": min(args.timed, len(texts)),
        "default_steps": DEFAULT_STEPS,
        "completeness_texts": min(args.completeness, len(texts)),
        "completeness": completeness,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            out.write(text + "\n")


if __name__ == "__main__":
    main()
