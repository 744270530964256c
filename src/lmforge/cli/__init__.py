"""The ``lmforge`` command line: parses arguments, calls the library, prints results.

This module builds the typer app and registers every command, in the order ``lmforge --help``
lists them; each command lives in the module of its group (``run``, ``generate``, ``bench``,
``serve``, ``models``, ``keys``, ``feedback``) and what they print in ``output``. Errors in the
user's input arrive as :class:`LmforgeError` and leave as one line on stderr with exit code 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys
import warnings
from typing import Annotated, Any

import typer

from lmforge.cli import bench, explain, feedback, generate, keys, models, retrain, run, serve
from lmforge.cli import finance as finance_cli
from lmforge.cli import monitor as monitor_cli
from lmforge.cli import recommend as recommend_cli
from lmforge.cli.output import err
from lmforge.errors import LmforgeError

app = typer.Typer(
    help="lmforge: adapt, evaluate and register language models from one recipe.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(
    help="The model registry: list, show, promote, archive and delete versions."
)
app.add_typer(models_app, name="models")
keys_app = typer.Typer(help="API keys for the server: create, list and revoke.")
app.add_typer(keys_app, name="keys")
feedback_app = typer.Typer(help="Feedback on predictions: import labels, list and export.")
app.add_typer(feedback_app, name="feedback")
apps_app = typer.Typer(help="Applications built on the engine.")
app.add_typer(apps_app, name="app")
recipe_app = typer.Typer(help="Recipes: a commented starting recipe for a task.")
app.add_typer(recipe_app, name="recipe")

# `lmforge --help` lists the commands in this order.
app.command()(run.run)
app.command()(run.train)
app.command()(run.evaluate)
app.command()(run.predict)
app.command()(explain.explain)
app.command()(generate.generate)
app.command()(bench.compress)
app.command()(run.schema)
recipe_app.command("init")(run.recipe_init)
app.command()(bench.bench)
app.command()(serve.serve)
app.command()(monitor_cli.monitor)
app.command()(retrain.retrain)
app.command()(retrain.loop)
models_app.command("list")(models.models_list)
models_app.command("show")(models.models_show)
models_app.command("promote")(models.models_promote)
models_app.command("archive")(models.models_archive)
models_app.command("delete")(models.models_delete)
models_app.command("catalogue")(models.models_catalogue)
keys_app.command("create")(keys.keys_create)
keys_app.command("list")(keys.keys_list)
keys_app.command("revoke")(keys.keys_revoke)
feedback_app.command("import")(feedback.feedback_import)
feedback_app.command("list")(feedback.feedback_list)
feedback_app.command("export")(feedback.feedback_export)
apps_app.command("assistant")(generate.app_assistant)
apps_app.command("recommend")(recommend_cli.app_recommend)
apps_app.command("finance-monitor")(finance_cli.finance_monitor)

_state = {"debug": False}

# typer 0.2x runs its own copy of click (typer._click), older typer runs click itself; either
# way the usage errors derive from the ClickException its public BadParameter derives from.
# (Catching `click.ClickException` missed the copy's errors: `lmforge nosuch` left a traceback.)
_CLICK_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


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
    except _CLICK_ERROR as exc:  # usage errors: an unknown command or option, a bad value
        error: Any = exc
        error.show()
        sys.exit(error.exit_code)
