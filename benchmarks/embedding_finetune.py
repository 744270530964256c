"""Does contrastive fine-tuning beat the untuned encoder? Debian FAQ, held-out sections.

The FAQ's numbered sections are split (seeded) into a training and a held-out part. The encoder
is fine-tuned (in-batch negatives, `lmforge.train.contrastive`) on pairs from the training
sections only — a question and its entry across languages (zh→en, en→zh) and a question and its
answer within each language — and both the untuned and the tuned encoder are then measured on
the four retrieval tasks restricted to the held-out sections (their documents only), in one run.

    .venv/bin/python benchmarks/embedding_finetune.py --json /tmp/embedding_finetune.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lmforge.assistant import DenseRetriever, FaqEntry, debian_tasks, evaluate_retrieval, load_faq
from lmforge.registry.refs import resolve_base
from lmforge.runtime.embedder import Embedder
from lmforge.settings import get_settings
from lmforge.train.contrastive import fit_embeddings, save_encoder


def training_pairs(entries: list[FaqEntry]) -> list[tuple[str, str]]:
    by_key: dict[tuple[str, str], FaqEntry] = {(e.lang, e.key): e for e in entries}
    pairs = []
    for e in entries:
        other = by_key.get(("en" if e.lang == "zh" else "zh", e.key))
        if other is not None:
            pairs.append((e.question, other.passage))
        pairs.append((e.question, e.answer))
    return pairs


def measure(folder: Path, entries: list[FaqEntry]) -> dict[str, dict[str, float]]:
    embedder = Embedder(folder)
    out = {}
    for task in debian_tasks(entries):
        retriever = DenseRetriever(
            task.documents, embedder.embed, query_prefix="query: ", passage_prefix="passage: "
        )
        out[task.name] = evaluate_retrieval(retriever, task.queries, task.relevant).to_json()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--encoder", default="multilingual-e5-small")
    parser.add_argument("--held-out", type=float, default=0.4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    base = resolve_base(args.encoder, "encoder", get_settings().cache_dir).path
    entries = load_faq("debian_faq")
    keys = sorted({e.key for e in entries})
    random.Random(args.seed).shuffle(keys)
    held = set(keys[: int(len(keys) * args.held_out)])
    train = [e for e in entries if e.key not in held]
    test = [e for e in entries if e.key in held]
    pairs = training_pairs(train)
    fit = fit_embeddings(
        base, pairs, query_prefix="query: ", passage_prefix="passage: ", epochs=args.epochs,
        learning_rate=args.learning_rate, seed=args.seed,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tuned = measure(save_encoder(fit.model, base, Path(tmp) / "tuned"), test)
    untuned = measure(base, test)
    print(
        f"{len(pairs)} training pairs from {len(keys) - len(held)} sections; "
        f"{fit.steps} steps in {fit.seconds:.0f} s; loss {fit.losses[0]:.3f} → {fit.losses[-1]:.3f}"
    )
    print("| held-out task | untuned hit@1 / hit@5 / MRR | fine-tuned hit@1 / hit@5 / MRR |")
    print("|---|---|---|")
    for name in untuned:
        u, t = untuned[name], tuned[name]
        print(
            f"| {name} ({u['queries']}) | {u['hit@1']:.1%} / {u['hit@5']:.1%} / {u['mrr']:.3f} | "
            f"{t['hit@1']:.1%} / {t['hit@5']:.1%} / {t['mrr']:.3f} |"
        )
    print(f"\n{time.perf_counter() - start:.0f} s", file=sys.stderr)
    if args.json:
        result: dict[str, Any] = {
            "encoder": args.encoder,
            "pairs": len(pairs),
            "steps": fit.steps,
            "seconds": fit.seconds,
            "untuned": untuned,
            "tuned": tuned,
        }
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
