"""``lmforge run``, ``train``, ``evaluate``, ``predict``, ``schema`` and ``recipe init``: a recipe
run or written, and a registered classifier asked, re-scored, or described."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lmforge.cli.output import (
    RichProgress,
    metrics_table,
    out,
    print_compress,
    print_json,
    print_report,
)

BACKEND_OPTION = typer.Option(
    "--backend",
    help="Runtime backend (torch-fp32, torch-bf16, torch-int8, onnx-fp32, onnx-int8); "
    "default: the one the version was registered for.",
)

# `run` and `train` take the same arguments.
RecipeFile = Annotated[Path, typer.Argument(help="Recipe file (YAML).")]
ResumeFolder = Annotated[
    Path | None, typer.Option(help="Resume the run folder of an interrupted run.")
]
ReportAsJson = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]


def run(
    recipe: RecipeFile,
    resume: ResumeFolder = None,
    json_output: ReportAsJson = False,
) -> None:
    """Run every stage the recipe names: data, fine-tuning, evaluation, registration."""
    _run(recipe, resume, json_output, register=None)


def train(
    recipe: RecipeFile,
    resume: ResumeFolder = None,
    json_output: ReportAsJson = False,
) -> None:
    """Fine-tune and evaluate into a run folder, without registering a version."""
    _run(recipe, resume, json_output, register=False)


def _run(recipe_path: Path, resume: Path | None, json_output: bool, register: bool | None) -> None:
    from lmforge.recipe import load_recipe

    recipe = load_recipe(recipe_path)  # before the heavy imports: a bad recipe fails at once
    from lmforge.tasks import run_recipe

    result = run_recipe(recipe, register=register, resume=resume, progress=RichProgress())
    if json_output:
        print_json(result.summary())
        return
    print_report(result.report())
    if result.compression is not None:
        print_compress(result.compression)


def evaluate(
    model: Annotated[str, typer.Argument(help="NAME[:VERSION] of a registered model.")],
    backend: Annotated[str | None, BACKEND_OPTION] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Re-evaluate a registered version on its recipe's test split, beside baselines."""
    from lmforge.runtime.versions import evaluate_version

    result = evaluate_version(model, backend)
    if json_output:
        print_json(result.to_json())
    else:
        title = f"{result.ref} ({result.backend}): test split"
        out.print(metrics_table(result.test_metrics, result.baseline_metrics, title))


def predict(
    model: Annotated[str, typer.Argument(help="NAME[:VERSION] of a registered model.")],
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify.")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="A file with one text per line.")
    ] = None,
    backend: Annotated[str | None, BACKEND_OPTION] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Classify texts with a registered model."""
    from lmforge.runtime.versions import predict_version, texts_to_classify

    items = texts_to_classify(texts or [], file)  # before the model loads: bad input fails now
    result = predict_version(model, items, backend)
    if json_output:
        print_json(result.to_json())
        return
    table = Table(title=result.ref)
    for column in ("label", "score", "text"):
        table.add_column(column)
    for p in result.predictions:
        table.add_row(p.label, f"{p.score:.3f}", p.text)
    out.print(table)


def schema() -> None:
    """Print the recipe's JSON Schema (every key, its type, default and meaning)."""
    from lmforge.recipe import recipe_json_schema

    print_json(recipe_json_schema())


def recipe_init(
    task: Annotated[
        str, typer.Argument(help="classification, similarity, generation or assistant.")
    ],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file, not stdout.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Print a commented recipe for TASK: every key, default and meaning; runnable as is."""
    from lmforge.recipe import template, write_template

    if output is None:
        sys.stdout.write(template(task))
        return
    write_template(task, output, force=force)
    out.print(f"wrote {output}")
