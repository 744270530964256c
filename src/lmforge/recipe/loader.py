"""Reading a recipe file into a validated :class:`Recipe`, with errors a person can act on."""

from __future__ import annotations

import difflib
import json
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from lmforge.errors import RecipeError
from lmforge.recipe.schema import Recipe

M = typing.TypeVar("M", bound=BaseModel)


def load_recipe(path: str | Path) -> Recipe:
    """Load and validate a YAML (or JSON) recipe; relative data paths resolve against its folder."""
    path = Path(path)
    recipe = parse_recipe(read_yaml(path, "recipe"), source=str(path))
    src = recipe.data.source
    if src.path is not None and not src.path.is_absolute():
        resolved = (path.parent / src.path).resolve()
        source = src.model_copy(update={"path": resolved})
        data = recipe.data.model_copy(update={"source": source})
        recipe = recipe.model_copy(update={"data": data})
    return _resolve_multitask_paths(_resolve_pretrain_paths(recipe, path.parent), path.parent)


def _resolve_multitask_paths(recipe: Recipe, folder: Path) -> Recipe:
    """A multitask recipe's sub-task files, relative to its folder."""
    m = recipe.multitask
    tasks = [
        t.model_copy(update={"path": (folder / t.path).resolve()})
        if t.path is not None and not t.path.is_absolute()
        else t
        for t in m.tasks
    ]
    if tasks == m.tasks:
        return recipe
    return recipe.model_copy(update={"multitask": m.model_copy(update={"tasks": tasks})})


def _resolve_pretrain_paths(recipe: Recipe, folder: Path) -> Recipe:
    """A pretrain recipe's mixed-in files and downstream recipe files, relative to its folder."""
    p = recipe.pretrain
    mix = [
        s.model_copy(update={"path": (folder / s.path).resolve()})
        if s.path is not None and not s.path.is_absolute()
        else s
        for s in p.mix
    ]
    exclude = [
        str((folder / e).resolve())
        if e.endswith((".yaml", ".yml")) and not Path(e).is_absolute()
        else e
        for e in p.exclude_test_of
    ]
    if mix == p.mix and exclude == p.exclude_test_of:
        return recipe
    section = p.model_copy(update={"mix": mix, "exclude_test_of": exclude})
    return recipe.model_copy(update={"pretrain": section})


def read_yaml(path: Path, kind: str) -> Any:
    """A YAML (or JSON) file's content, or a one-line error naming the file and the line."""
    if not path.is_file():
        raise RecipeError(
            f"{kind} file {path} not found", "check the path, or start from examples/*.yaml"
        )
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise RecipeError(f"{kind} {path} is not valid YAML{at}", "fix the syntax") from exc


def parse_recipe(raw: Any, source: str = "recipe") -> Recipe:
    """Validate a recipe given as a mapping, turning the first pydantic error into one line."""
    return validate_config(Recipe, raw, source, "name, data, model, ...")


def validate_config(model: type[M], raw: Any, source: str, keys_hint: str) -> M:
    """Validate a configuration mapping against ``model``; the first error becomes one line."""
    if not isinstance(raw, dict):
        raise RecipeError(
            f"{source} must be a mapping of keys ({keys_hint})",
            "see the examples/ folder or `lmforge schema`",
        )
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise _explain(exc, source, model) from exc


def recipe_json_schema() -> dict[str, Any]:
    return Recipe.model_json_schema()


def dump_recipe(recipe: Recipe) -> str:
    """The fully resolved recipe (every default filled in) as YAML, for run folders and cards."""
    data = json.loads(recipe.model_dump_json())
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _explain(exc: ValidationError, source: str, model: type[BaseModel]) -> RecipeError:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    dotted = ".".join(loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        valid = _keys_at(model, err["loc"][:-1])
        close = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'?" if close else "remove it"
        return RecipeError(
            f"{source}: unknown key '{dotted}'",
            f"{hint} (valid keys here: {', '.join(valid)})",
        )
    if err["type"] == "missing":
        return RecipeError(f"{source}: required key '{dotted}' is missing", "add it")
    msg = err["msg"].removeprefix("Value error, ")
    got = ""
    if "input" in err and not isinstance(err["input"], dict | list):
        got = f" (got {err['input']!r})"
    return RecipeError(f"{source}: {dotted}: {msg}{got}", "fix the value; see `lmforge schema`")


def _keys_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The field names valid at a location of the recipe, following nested sections."""
    current: type[BaseModel] = model
    for part in loc:
        if not isinstance(part, str) or part not in current.model_fields:
            continue
        nested = _model_in(current.model_fields[part].annotation)
        if nested is None:
            break
        current = nested
    return list(current.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
