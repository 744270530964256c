"""The recipe's reference for people: each task's commented template (``lmforge recipe init``)
loads unchanged and lists exactly the keys the task reads, and docs/recipe.md is the schema's
current rendering."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lmforge.errors import RecipeError
from lmforge.recipe import Recipe, load_recipe, parse_recipe, template, write_template
from lmforge.recipe.reference import STARTERS, TASK_NAMES, applies, keys, markdown
from lmforge.tasks import TASKS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "recipe.md"


def _leaves(mapping: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in mapping.items():
        if isinstance(value, dict):
            out |= _leaves(value, f"{prefix}{key}.")
        else:
            out.add(f"{prefix}{key}")
    return out


def _schema_leaves() -> set[str]:
    """Every key of the recipe, read from its JSON Schema (not from the walker under test)."""
    schema = Recipe.model_json_schema()

    def walk(node: dict[str, Any], prefix: str) -> set[str]:
        out: set[str] = set()
        for key, prop in node.get("properties", {}).items():
            ref = prop.get("$ref") or next(
                (a["$ref"] for a in prop.get("allOf", []) if "$ref" in a), None
            )
            if ref:
                out |= walk(schema["$defs"][ref.rsplit("/", 1)[-1]], f"{prefix}{key}.")
            else:
                out.add(f"{prefix}{key}")
        return out

    return walk(schema, "")


def test_the_reference_walks_every_key_of_the_schema() -> None:
    assert {k.dotted for k in keys()} == _schema_leaves()


def test_every_key_has_a_meaning() -> None:
    missing = [k.dotted for k in keys() if not k.description.strip()]
    assert missing == []


@pytest.mark.parametrize("task", TASK_NAMES)
def test_the_template_loads_unchanged_and_runs_the_defaults(task: str, tmp_path: Path) -> None:
    path = write_template(task, tmp_path / "recipe.yaml")
    recipe = load_recipe(path)
    assert recipe.task == task
    TASKS[task].check(recipe)  # a task's own checks (e.g. a decoder base) pass too
    # every value is the schema's default, apart from what the template starts from
    assert recipe.model_dump() == parse_recipe(STARTERS[task]).model_dump()


@pytest.mark.parametrize("task", TASK_NAMES)
def test_the_template_lists_exactly_the_keys_the_task_reads(task: str) -> None:
    text = template(task)
    listed = _leaves(yaml.safe_load(text))
    expected = {k.dotted for k in keys(task)}
    assert listed == expected
    assert expected == {k for k in _schema_leaves() if applies(tuple(k.split(".")), task)}
    for key in keys(task):  # each key's meaning is written above it
        assert key.description.split()[0] in text


def test_the_template_says_the_default_of_a_changed_starting_value() -> None:
    text = template("generation")
    words = " ".join(text.replace("#", " ").split())  # comments wrap over lines
    assert "base: smollm2-135m-instruct" in text and "default minilm-l6]" in words
    assert "allow_below_baseline" not in text and "allow_below_baseline" in template(
        "classification"
    )


def test_write_template_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("name: keep-me\n", encoding="utf-8")
    with pytest.raises(RecipeError, match=r"mine.yaml already exists.*--force"):
        write_template("classification", path)
    assert path.read_text(encoding="utf-8") == "name: keep-me\n"
    write_template("classification", path, force=True)
    assert load_recipe(path).name == "my-classifier"
    assert [p.name for p in tmp_path.iterdir()] == ["mine.yaml"]  # no partial file left


def test_an_unknown_task_names_the_tasks() -> None:
    with pytest.raises(RecipeError, match=r"unknown task 'regression'.*classification"):
        template("regression")


def test_allow_below_baseline_is_for_classification_only() -> None:
    raw = {**STARTERS["similarity"], "registry": {"allow_below_baseline": True}}
    with pytest.raises(RecipeError, match="allow_below_baseline applies to task classification"):
        parse_recipe(raw)


def test_docs_recipe_md_is_in_step_with_the_schema() -> None:
    assert DOCS.read_text(encoding="utf-8") == markdown(), (
        "docs/recipe.md is out of step with the schema: "
        "run `python -m lmforge.recipe.doc > docs/recipe.md`"
    )
    for key in keys():
        assert f"`{key.dotted}`" in markdown()
