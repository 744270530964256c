"""A pretraining corpus: unlabelled text from one or more sources, cleaned, split and mixed.

Each source (a built-in corpus or a file, its text column only) is cleaned like any recipe's
data, optionally kept to one language (by script), de-duplicated and cut into
train/validation/test with the recipe's split. The sources' splits are then joined: a held-out
text that is also in an earlier split (of any source) is dropped from the held-out side, as in
every task; the held-out texts of each downstream source named in ``exclude_test_of`` are
removed from all three splits, so a model pretrained here and fine-tuned there was never shown a
text it will be tested on. Last, each source's training rows are weighted (repeated, or a seeded
share kept). Everything removed is counted in the data card.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lmforge.data.prepare import _split, load_source, prepare_data, prepare_pairs
from lmforge.data.sources import BUILTIN_SOURCES
from lmforge.data.text import clean_text, leakage_key
from lmforge.errors import DataError
from lmforge.recipe.loader import load_recipe
from lmforge.recipe.schema import DataConfig, SourceConfig

MIN_TEXTS = 10  # fewer cannot leave a text in each held-out split
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


@dataclass
class Corpus:
    """The texts to pretrain on (training rows weighted) and the held-out texts."""

    train: list[str]
    validation: list[str]
    test: list[str]
    card: dict[str, Any]


def is_chinese(text: str) -> bool:
    """Whether a text holds Chinese characters (the ``language`` filter's zh)."""
    return _CJK.search(text) is not None


def prepare_corpus(
    data: DataConfig,
    mix: Sequence[Any] = (),
    *,
    language: str | None = None,
    exclude_test_of: Sequence[str] = (),
) -> Corpus:
    """The corpus of ``data.source`` (weight 1) and the ``mix`` sources (each a
    :class:`~lmforge.recipe.schema.MixedSource` with its ``weight``)."""
    sources: list[tuple[SourceConfig, float]] = [(data.source, 1.0)]
    sources += [(s, float(s.weight)) for s in mix]
    parts = [_source_splits(src, data, language) for src, _ in sources]

    excluded = _held_out_keys(exclude_test_of)
    seen: set[str] = set()
    removed_leak = {"leakage_validation": 0, "leakage_test": 0}
    removed_downstream = 0
    train: list[str] = []
    validation: list[str] = []
    test: list[str] = []
    per_source: list[dict[str, Any]] = []
    # train keys first, so a held-out text trained on in any source is dropped as leakage
    for part in parts:
        seen |= {leakage_key(t) for t in part["train"]}
    for i, ((_, weight), part) in enumerate(zip(sources, parts, strict=True)):
        kept_train = [t for t in part["train"] if leakage_key(t) not in excluded]
        removed_downstream += len(part["train"]) - len(kept_train)
        held: dict[str, list[str]] = {}
        for split in ("validation", "test"):
            rows = [t for t in part[split] if leakage_key(t) not in excluded]
            removed_downstream += len(part[split]) - len(rows)
            clean = [t for t in rows if leakage_key(t) not in seen]
            removed_leak[f"leakage_{split}"] += len(rows) - len(clean)
            seen |= {leakage_key(t) for t in clean}
            held[split] = clean
        weighted = _weighted(kept_train, weight, data.split.seed + i)
        train += weighted
        validation += held["validation"]
        test += held["test"]
        per_source.append(
            {
                "source": part["name"],
                "weight": weight,
                "rows_raw": part["rows_raw"],
                "texts": part["texts"],
                "train_rows": len(weighted),
                "validation_rows": len(held["validation"]),
                "test_rows": len(held["test"]),
            }
        )
    if len(train) < 2 or not validation or not test:
        raise DataError(
            f"the corpus leaves {len(train)} train / {len(validation)} validation / "
            f"{len(test)} test texts",
            "add text, or raise the weights below 1 in pretrain.mix",
        )
    removed: dict[str, int] = {}
    for part in parts:
        for reason, n in part["removed"].items():
            removed[reason] = removed.get(reason, 0) + n
    removed.update(removed_leak)
    removed["downstream_held_out"] = removed_downstream
    card = {
        "source": " + ".join(p["name"] for p in parts),
        "text_column": data.source.text_column,
        "rows_raw": sum(p["rows_raw"] for p in parts),
        "rows_used": len(train) + len(validation) + len(test),
        "removed": removed,
        "cleaning": data.cleaning.model_dump(),
        "split": data.split.model_dump(),
        "labels": [],
        "language": language,
        "exclude_test_of": list(exclude_test_of),
        "sources": per_source,
        "splits": {
            name: {
                "rows": len(rows),
                "labels": {},
                "mean_chars": round(float(np.mean([len(t) for t in rows])), 1) if rows else 0.0,
            }
            for name, rows in (("train", train), ("validation", validation), ("test", test))
        },
    }
    return Corpus(train, validation, test, card)


def corpus_card_markdown(card: dict[str, Any]) -> str:
    """The data card of a corpus, for people."""
    lines = [
        f"# Data card — pretraining corpus: {card['source']}",
        "",
        f"- rows in sources: {card['rows_raw']}; rows used: {card['rows_used']} "
        "(training rows counted with their weights)",
        f"- language filter: {card['language'] or 'none'}",
        f"- downstream held-out texts excluded: {', '.join(card['exclude_test_of']) or 'none'}",
        "",
        "| source | weight | texts | train | validation | test |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {s['source']} | {s['weight']:g} | {s['texts']} | {s['train_rows']} | "
        f"{s['validation_rows']} | {s['test_rows']} |"
        for s in card["sources"]
    ]
    lines += ["", "## Removed", "", "| reason | rows |", "|---|---|"]
    lines += [f"| {reason} | {n} |" for reason, n in card["removed"].items()]
    lines += [
        "",
        "Leakage: held-out texts whose case/punctuation-insensitive form is in an earlier "
        "split of any source are removed; so are the held-out (validation and test) texts of "
        "the downstream sources named, from every split.",
    ]
    return "\n".join(lines) + "\n"


def _source_splits(src: SourceConfig, data: DataConfig, language: str | None) -> dict[str, Any]:
    name = src.builtin or str(src.path)
    raw = load_source(src)
    if src.text_column not in raw.columns:
        raise DataError(
            f"column '{src.text_column}' not in {name} "
            f"(columns there: {', '.join(map(str, raw.columns))})",
            "set text_column of that source",
        )
    texts = [clean_text(str(t), data.cleaning) for t in raw[src.text_column].dropna()]
    removed = {"missing_text": len(raw) - len(texts)}
    lower, upper = max(data.cleaning.min_chars, 1), data.cleaning.max_chars
    kept = [t for t in texts if lower <= len(t) <= upper]
    removed["too_short_or_long"] = len(texts) - len(kept)
    if language is not None:
        in_language = [t for t in kept if is_chinese(t) == (language == "zh")]
        removed["other_language"] = len(kept) - len(in_language)
        kept = in_language
    if data.cleaning.dedupe:
        unique = list(dict.fromkeys(kept))
        removed["duplicates"] = len(kept) - len(unique)
        kept = unique
    if src.limit is not None and len(kept) > src.limit:
        rng = np.random.default_rng(data.split.seed)
        kept = [kept[i] for i in sorted(rng.choice(len(kept), src.limit, replace=False))]
    if len(kept) < MIN_TEXTS:
        raise DataError(
            f"{name} has {len(kept)} usable texts after cleaning (from {len(raw)})",
            f"give at least {MIN_TEXTS} texts, or check text_column and pretrain.language",
        )
    train, validation, test = _split(pd.DataFrame({"text": kept}), data, stratify=False)
    return {
        "name": name,
        "rows_raw": len(raw),
        "texts": len(kept),
        "removed": removed,
        "train": list(train["text"]),
        "validation": list(validation["text"]),
        "test": list(test["text"]),
    }


def _held_out_keys(names: Sequence[str]) -> set[str]:
    """The normalised validation and test texts of each downstream: a recipe file (.yaml/.yml:
    its own data, cleaning and split; a pair task's partner texts too), or a built-in source
    split as a recipe on it splits by default."""
    keys: set[str] = set()
    for name in names:
        if name.endswith((".yaml", ".yml")):
            keys |= _recipe_held_out(Path(name))
            continue
        info = BUILTIN_SOURCES.get(name)
        if info is None:
            raise DataError(
                f"pretrain.exclude_test_of: unknown built-in data source {name!r}",
                f"use one of: {', '.join(sorted(BUILTIN_SOURCES))}",
            )
        labelled = "label" in info.columns
        held = prepare_data(DataConfig(source=SourceConfig(builtin=name)), require_labels=labelled)
        for frame in (held.validation, held.test):
            keys |= {leakage_key(t) for t in frame["text"]}
    return keys


def _recipe_held_out(path: Path) -> set[str]:
    recipe = load_recipe(path)
    if recipe.task == "pretrain" or (recipe.task == "assistant"):
        raise DataError(
            f"pretrain.exclude_test_of: {path} is a {recipe.task} recipe, with no test split",
            "name a classification, similarity or generation recipe, or a built-in source",
        )
    if recipe.data.source.pair_column is not None:
        pairs = prepare_pairs(recipe.data)
        frames = [pairs.validation, pairs.test]
        texts = [t for f in frames for column in ("text", "pair") for t in f[column]]
    else:
        held = prepare_data(recipe.data)
        texts = [*held.validation["text"], *held.test["text"]]
    return {leakage_key(t) for t in texts}


def _weighted(texts: list[str], weight: float, seed: int) -> list[str]:
    """Each text ``floor(weight)`` times, plus a seeded share of them for the fraction."""
    whole, fraction = math.floor(weight), weight - math.floor(weight)
    rows = texts * whole
    extra = round(fraction * len(texts))
    if extra:
        rng = np.random.default_rng(seed)
        rows += [texts[i] for i in sorted(rng.choice(len(texts), extra, replace=False))]
    return rows
