"""The gazetteer: whole-word matches, case rules, the longest alias winning an overlap, and the
shipped entity labels (stable ids: the guardian_headlines row whose text they hold)."""

from __future__ import annotations

from lmforge.data.sources import load_builtin
from lmforge.finance.entities import (
    Gazetteer,
    entity_accuracy,
    load_entity_labels,
    load_gazetteer,
)


def names(text: str) -> list[str]:
    return [e["name"] for e in load_gazetteer().find(text)]


def test_whole_words_case_rules_and_first_mention_order() -> None:
    assert names("Shell and BP: FTSE 100 slides as oil price falls") == [
        "Shell",
        "BP",
        "FTSE",
        "oil price",
    ]
    assert names("the shell of a bankrupt firm") == []  # lower-case 'shell', 'bank' in a word
    assert names("M&S and Marks & Spencer") == ["Marks & Spencer"]  # each entity once


def test_the_longest_alias_wins_an_overlap() -> None:
    # 'Bank' (the banks sector, any case) inside 'Bank of England' is not a second entity;
    # 'British' (the UK) inside 'British Airways' neither
    assert names("Bank of England warns banks") == ["Bank of England", "banks"]
    assert names("British Airways to cut jobs") == ["British Airways"]


def test_accuracy_counts_pairs_per_kind() -> None:
    gazetteer = Gazetteer(
        [
            {"name": "Tesco", "kind": "company", "aliases": ["Tesco"]},
            {"name": "retail", "kind": "sector", "aliases": ["shops"], "case_sensitive": False},
        ]
    )
    rows = [
        {"text": "Tesco shops", "entities": [{"name": "Tesco", "kind": "company"}]},
        {"text": "Asda", "entities": [{"name": "Asda", "kind": "company"}]},
    ]
    found = entity_accuracy(gazetteer, rows)
    assert (found.labelled, found.found, found.correct) == (2, 2, 1)
    assert found.precision == 0.5 and found.recall == 0.5
    assert found.by_kind["sector"] == {"labelled": 0, "found": 1, "precision": 0.0, "recall": 0.0}


def test_the_shipped_labels_match_their_source_rows() -> None:
    labels = load_entity_labels()
    guardian = load_builtin("guardian_headlines")
    assert len(labels) == 100 and len({r["id"] for r in labels}) == 100
    assert all(guardian["text"].iloc[r["id"]] == r["text"] for r in labels)
    kinds = {e["kind"] for r in labels for e in r["entities"]}
    assert kinds == {"company", "sector", "market"}
