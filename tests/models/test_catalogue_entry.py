"""A catalogue entry as ``lmforge models catalogue --json`` prints it."""

from __future__ import annotations

import json

from lmforge.models import CATALOGUE


def test_every_entry_has_the_documented_json_keys() -> None:
    keys = {"name", "kind", "description", "languages", "parameters", "licence", "package"}
    for name, entry in CATALOGUE.items():
        doc = entry.to_json()
        assert set(doc) == keys
        assert doc["name"] == name and doc["kind"] in ("encoder", "decoder")
        assert doc["languages"] == list(entry.languages)
        assert json.loads(json.dumps(doc)) == doc  # plain JSON, no tuples or paths
