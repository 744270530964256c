"""The ``lmforge`` command line: parses arguments, calls the library, prints results.

Errors in the user's input arrive as :class:`LmforgeError` and leave as one line on stderr with
exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from lmforge.errors import LmforgeError
from lmforge.registry.card import percent

app = typer.Typer(
    help="lmforge: adapt, evaluate and register language models from one recipe.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(help="The model registry: list, show and promote versions.")
app.add_typer(models_app, name="models")
out = Console()
err = Console(stderr=True)
_state = {"debug": False}


class RichProgress:
    """Draws library progress as a rich bar on stderr."""

    def __init__(self) -> None:
        self._bar: Progress | None = None
        self._task: Any = None

    def start(self, description: str, total: int, completed: int = 0) -> None:
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[metrics]}"),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, completed=completed, metrics="")

    def advance(self, steps: int = 1, **metrics: float) -> None:
        if self._bar is not None:
            shown = " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            self._bar.update(self._task, advance=steps, metrics=shown)

    def note(self, message: str) -> None:
        (self._bar.console if self._bar else err).print(f"[dim]{message}[/dim]")

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def _metrics_table(metrics: dict[str, Any], baselines: dict[str, Any], title: str) -> Table:
    table = Table(title=title)
    for column in ("model", "accuracy", "macro-F1", "ROC-AUC"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, m in [("this model", metrics), *baselines.items()]:
        scores = (m["accuracy"], m["macro_f1"], m.get("roc_auc"))
        table.add_row(name, *(percent(v) for v in scores))
    return table


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe file (YAML).")],
    resume: Annotated[
        Path | None, typer.Option(help="Resume the run folder of an interrupted run.")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Run every stage the recipe names: data, fine-tuning, evaluation, registration."""
    _run(recipe, resume, json_output, register=None)


@app.command()
def train(
    recipe: Annotated[Path, typer.Argument(help="Recipe file (YAML).")],
    resume: Annotated[
        Path | None, typer.Option(help="Resume the run folder of an interrupted run.")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Fine-tune and evaluate into a run folder, without registering a version."""
    _run(recipe, resume, json_output, register=False)


def _run(recipe_path: Path, resume: Path | None, json_output: bool, register: bool | None) -> None:
    from lmforge.recipe import load_recipe

    recipe = load_recipe(recipe_path)  # before the heavy imports: a bad recipe fails at once
    if resume is not None and not resume.is_dir():
        raise LmforgeError(f"run folder {resume} not found", "give a folder under ~/.lmforge/runs")
    from lmforge.pipeline import run_recipe

    result = run_recipe(recipe, register=register, resume=resume, progress=RichProgress())
    if json_output:
        _print_json(result.summary())
        return
    out.print(_metrics_table(result.metrics, result.baselines, f"{recipe.name}: test split"))
    t = result.outcome
    out.print(
        f"trained {t.steps} steps at {t.samples_per_second:.1f} samples/s"
        + (" (stopped early)" if t.stopped_early else "")
        + f"; run folder {result.run_dir}"
    )
    if result.version is not None:
        v = result.version
        out.print(f"registered [bold]{v.ref}[/bold] ({v.stage}) at {v.path}")


@app.command()
def evaluate(
    model: Annotated[str, typer.Argument(help="NAME[:VERSION] of a registered model.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Re-evaluate a registered version on its recipe's test split, beside baselines."""
    from lmforge.data import prepare_data
    from lmforge.evaluate import evaluate_classifier, score_baselines
    from lmforge.recipe import load_recipe
    from lmforge.registry import Registry
    from lmforge.runtime import Predictor

    version = Registry().get(model)
    recipe = load_recipe(version.path / "recipe.yaml")
    data = prepare_data(recipe.data)
    predictor = Predictor(version.path)
    metrics = evaluate_classifier(
        predictor.model,
        predictor.tokenizer,
        data,
        max_length=predictor.max_length,
        text_prefix=predictor.text_prefix,
    )
    baselines = score_baselines(data, recipe.evaluation.baselines)
    if json_output:
        _print_json({"ref": version.ref, "test_metrics": metrics, "baseline_metrics": baselines})
    else:
        out.print(_metrics_table(metrics, baselines, f"{version.ref}: test split"))


@app.command()
def predict(
    model: Annotated[str, typer.Argument(help="NAME[:VERSION] of a registered model.")],
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify.")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="A file with one text per line.")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Classify texts with a registered model."""
    from lmforge.registry import Registry
    from lmforge.runtime import Predictor

    items = list(texts or [])
    if file is not None:
        if not file.is_file():
            raise LmforgeError(f"input file {file} not found", "check the path given to --file")
        items += [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not items:
        raise LmforgeError("no texts to classify", "pass texts as arguments or --file FILE")
    version = Registry().get(model)
    predictions = Predictor(version.path).predict(items)
    if json_output:
        _print_json({"model": version.ref, "predictions": [p.to_json() for p in predictions]})
        return
    table = Table(title=version.ref)
    for column in ("label", "score", "text"):
        table.add_column(column)
    for p in predictions:
        table.add_row(p.label, f"{p.score:.3f}", p.text)
    out.print(table)


@app.command()
def schema() -> None:
    """Print the recipe's JSON Schema (every key, its type, default and meaning)."""
    from lmforge.recipe import recipe_json_schema

    _print_json(recipe_json_schema())


@models_app.command("list")
def models_list(
    name: Annotated[str | None, typer.Argument(help="Only versions of this model.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List registered model versions."""
    from lmforge.registry import Registry

    versions = Registry().list(name)
    if json_output:
        _print_json([v.to_json() for v in versions])
        return
    table = Table(title="registered models")
    for column in ("model", "stage", "task", "base", "test acc", "macro-F1", "created"):
        table.add_column(column)
    for v in versions:
        table.add_row(
            v.ref,
            v.stage,
            v.task,
            v.base_model,
            percent(v.metrics.get("accuracy")),
            percent(v.metrics.get("macro_f1")),
            v.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    out.print(table)


@models_app.command("show")
def models_show(
    model: Annotated[str, typer.Argument(help="NAME[:VERSION]")],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show one version: stage, path, labels, metrics beside baselines."""
    from lmforge.registry import Registry

    v = Registry().get(model)
    if json_output:
        _print_json(v.to_json())
        return
    out.print(f"[bold]{v.ref}[/bold]  stage {v.stage}  task {v.task}  base {v.base_model}")
    out.print(f"path {v.path}")
    out.print(f"labels {', '.join(v.labels)}")
    out.print(_metrics_table(v.metrics, v.baselines, "test split"))


@models_app.command("promote")
def models_promote(model: Annotated[str, typer.Argument(help="NAME:VERSION")]) -> None:
    """Make a version the production one (the previous production version is archived)."""
    from lmforge.registry import Registry

    v = Registry().promote(model)
    out.print(f"{v.ref} is now in production")


@models_app.command("catalogue")
def models_catalogue(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the built-in base models."""
    from lmforge.models import CATALOGUE

    if json_output:
        _print_json(
            [
                {
                    "name": e.name,
                    "description": e.description,
                    "languages": list(e.languages),
                    "parameters": e.parameters,
                    "licence": e.licence,
                    "package": e.package,
                }
                for e in CATALOGUE.values()
            ]
        )
        return
    table = Table(title="base model catalogue")
    for column in ("name", "parameters", "languages", "package", "description"):
        table.add_column(column)
    for e in CATALOGUE.values():
        table.add_row(e.name, e.parameters, ", ".join(e.languages), e.package, e.description)
    out.print(table)


def main() -> None:
    # Deprecation notices between transformers and peft are for their developers, not our users.
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    try:
        app(standalone_mode=False)
    except LmforgeError as exc:
        if _state["debug"]:
            raise
        err.print(f"[red]error:[/red] {exc.message}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
