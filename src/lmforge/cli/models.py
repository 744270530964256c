"""``lmforge models list``, ``show``, ``promote``, ``archive``, ``delete`` and ``catalogue``: the
registry's versions and the built-in base models."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from lmforge.cli.output import metrics_table, out, print_json
from lmforge.cli.retrain import print_record
from lmforge.registry.card import percent


def models_list(
    name: Annotated[str | None, typer.Argument(help="Only versions of this model.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List registered model versions."""
    from lmforge.registry import Registry

    versions = Registry().list(name)
    if json_output:
        print_json([v.to_json() for v in versions])
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


def models_show(
    model: Annotated[str, typer.Argument(help="NAME[:VERSION]")],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show one version: stage, path, labels, metrics beside baselines."""
    from lmforge.registry import Registry

    v = Registry().get(model)
    if json_output:
        print_json(v.to_json())
        return
    out.print(f"[bold]{v.ref}[/bold]  stage {v.stage}  task {v.task}  base {v.base_model}")
    out.print(f"path {v.path}")
    out.print(f"labels {', '.join(v.labels)}")
    out.print(metrics_table(v.metrics, v.baselines, "test split"))
    if isinstance(v.metrics.get("retrain"), dict):  # a version retrained on feedback
        print_record(v.metrics["retrain"], v.ref)


def models_promote(model: Annotated[str, typer.Argument(help="NAME:VERSION")]) -> None:
    """Make a version the production one once it loads (the previous one is archived)."""
    from lmforge.tasks import promote_version

    change = promote_version(model)
    state = "is now" if change.changed else "is already"
    out.print(f"{change.ref} {state} in production")


def models_archive(model: Annotated[str, typer.Argument(help="NAME:VERSION")]) -> None:
    """Move a version to the archived stage (not the production one)."""
    from lmforge.registry import Registry

    registry = Registry()
    version = registry.get(model)
    change = registry.archive(version.name, version.version)
    out.print(f"{change.ref} archived" if change.changed else f"{change.ref} is already archived")


def models_delete(model: Annotated[str, typer.Argument(help="NAME:VERSION")]) -> None:
    """Delete a version's folder and row in one step (not production, nor a parent)."""
    from lmforge.registry import Registry

    registry = Registry()
    version = registry.get(model)
    removed = registry.delete(version.name, version.version)
    out.print(f"deleted {removed.ref}")


def models_catalogue(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the built-in base models."""
    from lmforge.models import CATALOGUE

    if json_output:
        print_json([e.to_json() for e in CATALOGUE.values()])
        return
    table = Table(title="base model catalogue")
    for column in ("name", "kind", "parameters", "languages", "package", "licence", "description"):
        table.add_column(column)
    for e in CATALOGUE.values():
        table.add_row(
            e.name,
            e.kind,
            e.parameters,
            ", ".join(e.languages),
            e.package,
            e.licence,
            e.description,
        )
    out.print(table)
