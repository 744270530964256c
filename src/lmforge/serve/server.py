"""Running the app under uvicorn, with the checks that must come before a port opens."""

from __future__ import annotations

import ipaddress
import math
import socket

import uvicorn
from fastapi import FastAPI

from lmforge.errors import LmforgeError
from lmforge.serve.app import create_app
from lmforge.serve.config import ServeConfig
from lmforge.serve.models import check_served_models
from lmforge.serve.protocol import protocol_class
from lmforge.settings import Settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(config: ServeConfig, settings: Settings | None = None) -> None:
    """Auth off is for local use only; the models the config names must exist (see
    :func:`lmforge.serve.models.check_served_models`); and say so now if the port is taken —
    all before anything listens."""
    if not config.auth.enabled and not is_loopback(config.host):
        raise LmforgeError(
            f"authentication can be turned off only on a loopback host, not {config.host}",
            "drop --no-auth and create a key with `lmforge keys create`, or bind 127.0.0.1",
        )
    check_served_models(config, settings)
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((config.host, config.port))
        except OSError as exc:
            raise LmforgeError(
                f"cannot listen on {config.host}:{config.port} ({exc.strerror})",
                "choose another --port, or stop what is using it",
            ) from exc


def uvicorn_config(app: FastAPI, config: ServeConfig) -> uvicorn.Config:
    """uvicorn's settings for the app: the connection limits of ``config.connections`` (see
    :mod:`lmforge.serve.protocol`) and the graceful-shutdown timeout."""
    connections = config.connections
    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        http=protocol_class(connections),  # httptools, with the header and body limits
        loop="auto",  # uvloop where installed
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=math.ceil(config.graceful_timeout_s),
        timeout_keep_alive=connections.keep_alive_s,
        # uvicorn refuses a request once the open connections, its own included, reach the
        # limit: one more lets max_concurrency connections be served.
        limit_concurrency=connections.max_concurrency + 1,
    )


def run_server(config: ServeConfig, settings: Settings | None = None) -> None:
    """Serve until SIGINT/SIGTERM, then stop accepting, finish what is queued, and return."""
    check_bind(config, settings)
    server = uvicorn.Server(uvicorn_config(create_app(config, settings), config))
    server.run()
    if not server.started:  # uvicorn has logged why (the app's startup failed)
        raise LmforgeError(
            f"the server on {config.host}:{config.port} did not start", "see the log above"
        )
