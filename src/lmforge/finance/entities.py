"""Which companies, sectors and markets a headline names: a gazetteer matched by whole words.

The gazetteer is ``finance/data/gazetteer.json`` (its ``source`` field says who compiled it
and from what): each entity has a canonical ``name``, a ``kind`` (company, sector or market —
a market being an index, a currency, a commodity, bonds, or a country's or bloc's economy) and
its aliases. Company and country aliases match case-sensitively ("Shell" the company, not a
shell), the others in any case; every alias matches only as a whole word. A gazetteer was
chosen over noun phrases or NER because no NER model ships offline and a noun-phrase chunker
finds phrases, not the company behind "M&S" or "Marks & Spencer". Its precision and recall on
100 hand-labelled headlines (``finance/data/entities_labelled.jsonl``) are measured by
:func:`entity_accuracy` and reported in docs/finance.md.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.errors import DataError

__all__ = [
    "ENTITY_LABELS_FILE",
    "GAZETTEER_FILE",
    "EntityAccuracy",
    "Gazetteer",
    "entity_accuracy",
    "load_entity_labels",
    "load_gazetteer",
]

DATA_DIR = Path(__file__).parent / "data"
GAZETTEER_FILE = DATA_DIR / "gazetteer.json"
ENTITY_LABELS_FILE = DATA_DIR / "entities_labelled.jsonl"
KINDS = ("company", "sector", "market")


class Gazetteer:
    """Entities and one compiled pattern per case mode; :meth:`find` lists a text's entities."""

    def __init__(self, entries: Sequence[dict[str, Any]]) -> None:
        self.kind: dict[str, str] = {}
        exact: dict[str, str] = {}
        folded: dict[str, str] = {}
        for entry in entries:
            name, kind = str(entry["name"]), str(entry["kind"])
            if kind not in KINDS:
                raise DataError(
                    f"gazetteer entity '{name}' has kind '{kind}'", "use " + "/".join(KINDS)
                )
            self.kind[name] = kind
            target = exact if entry.get("case_sensitive", True) else folded
            for alias in entry["aliases"]:
                target[alias if target is exact else alias.lower()] = name
        self._exact, self._folded = exact, folded
        self._exact_re = _pattern(exact, 0)
        self._folded_re = _pattern(folded, re.IGNORECASE)

    def find(self, text: str) -> list[dict[str, str]]:
        """The entities ``text`` names, each once, in order of first mention."""
        hits: list[tuple[int, int, str]] = []  # (start, end, name)
        modes = ((self._exact_re, self._exact, False), (self._folded_re, self._folded, True))
        for pattern, table, fold in modes:
            if pattern is None:
                continue
            for found in pattern.finditer(text):
                alias = found.group(0).lower() if fold else found.group(0)
                hits.append((found.start(), found.end(), table[alias]))
        # the longest alias wins where two overlap ("Bank of England" is not also "banks")
        kept: list[tuple[int, int, str]] = []
        for start, end, name in sorted(hits, key=lambda h: (h[0] - h[1], h[0])):
            if all(end <= a or start >= b for a, b, _ in kept):
                kept.append((start, end, name))
        seen: dict[str, None] = {}
        for _, _, name in sorted(kept):
            seen.setdefault(name, None)
        return [{"name": name, "kind": self.kind[name]} for name in seen]


def _pattern(aliases: dict[str, str], flags: int) -> re.Pattern[str] | None:
    if not aliases:
        return None
    # longest first, so "FTSE 100" wins over "FTSE" and "British Airways" over "British"
    ordered = sorted(aliases, key=len, reverse=True)
    body = "|".join(re.escape(a) for a in ordered)
    return re.compile(rf"(?<![\w&]){'(?:' + body + ')'}(?![\w&])", flags)


@functools.lru_cache(maxsize=4)
def load_gazetteer(path: Path = GAZETTEER_FILE) -> Gazetteer:
    """The gazetteer in ``path`` (default: the one shipped with lmforge)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return Gazetteer(doc["entities"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"gazetteer {path} cannot be read ({exc})", "reinstall lmforge") from None


def load_entity_labels(path: Path = ENTITY_LABELS_FILE) -> list[dict[str, Any]]:
    """The hand-labelled headlines: ``id`` (the guardian_headlines row), ``text``,
    ``entities`` (canonical names; names outside the gazetteer as written)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@dataclass(frozen=True)
class EntityAccuracy:
    """Micro precision and recall over (headline, entity) pairs, overall and per kind."""

    headlines: int
    labelled: int
    found: int
    correct: int
    by_kind: dict[str, dict[str, float]]

    @property
    def precision(self) -> float:
        return self.correct / self.found if self.found else 0.0

    @property
    def recall(self) -> float:
        return self.correct / self.labelled if self.labelled else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "headlines": self.headlines,
            "labelled": self.labelled,
            "found": self.found,
            "correct": self.correct,
            "precision": self.precision,
            "recall": self.recall,
            "by_kind": self.by_kind,
        }


def entity_accuracy(gazetteer: Gazetteer, labelled: Iterable[dict[str, Any]]) -> EntityAccuracy:
    """How often the gazetteer finds the hand-labelled entities (recall) and how often what it
    finds is labelled (precision). A labelled entity outside the gazetteer counts as missed,
    under the kind the labeller gave it."""
    rows = list(labelled)
    counts = {kind: [0, 0, 0] for kind in KINDS}  # labelled, found, correct
    for row in rows:
        truth = {str(e["name"]): str(e["kind"]) for e in row["entities"]}
        found = {e["name"]: e["kind"] for e in gazetteer.find(row["text"])}
        for name, kind in truth.items():
            counts[kind][0] += 1
            counts[kind][2] += name in found
        for kind in found.values():
            counts[kind][1] += 1
    by_kind = {
        kind: {
            "labelled": n,
            "found": f,
            "precision": c / f if f else 0.0,
            "recall": c / n if n else 0.0,
        }
        for kind, (n, f, c) in counts.items()
    }
    total = [sum(v[i] for v in counts.values()) for i in range(3)]
    return EntityAccuracy(len(rows), total[0], total[1], total[2], by_kind)
