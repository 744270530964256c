"""``lmforge serve``: the HTTP server, with the command line's switches over its config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lmforge.cli.output import err


def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind [default: 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [default: 8000].")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Server config YAML (limits, batching, ...).")
    ] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Serve without API keys (loopback hosts only).")
    ] = False,
    decoder: Annotated[
        list[str] | None,
        typer.Option(
            "--decoder",
            help="Serve this decoder for chat/completions, e.g. smollm2-135m-instruct "
            "(repeatable; adds to generation.models).",
        ),
    ] = None,
    assistant: Annotated[
        str | None,
        typer.Option(
            "--assistant",
            help="Serve this registered assistant (from an assistant recipe) on "
            "/v1/assistant/ask, in place of the config's FAQ.",
        ),
    ] = None,
    no_ui: Annotated[
        bool, typer.Option("--no-ui", help="Do not serve the web console at /ui.")
    ] = False,
    finance: Annotated[
        str | None,
        typer.Option(
            "--finance",
            help="Run the finance monitor with this registered negative/neutral/positive "
            "model: /v1/finance/headlines, /timeline, /alerts and the surge alert.",
        ),
    ] = None,
) -> None:
    """Serve registered models over HTTP until Ctrl-C / SIGTERM (then finish queued requests)."""
    import logging

    from lmforge.serve import load_serve_config, run_server
    from lmforge.serve.config import with_command_line
    from lmforge.serve.server import check_bind

    settings = with_command_line(
        load_serve_config(config, host=host, port=port),
        no_auth=no_auth,
        decoders=decoder or (),
        assistant=assistant,
        no_ui=no_ui,
        finance=finance,
    )
    check_bind(settings)  # before the banner: a refused start prints only its error
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    console = "; console at /ui" if settings.ui else ""
    err.print(
        f"lmforge serving on http://{settings.host}:{settings.port} "
        f"(API docs at /docs{console}; auth {'on' if settings.auth.enabled else 'OFF'})",
        highlight=False,
    )
    run_server(settings)
