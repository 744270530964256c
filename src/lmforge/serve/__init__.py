"""The HTTP server: dynamic batching, API keys and limits, metrics, hot swap (``lmforge serve``).

FastAPI and uvicorn load only when a server is built, so the CLI's other commands start fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmforge.serve.app import create_app
    from lmforge.serve.config import ServeConfig, load_serve_config
    from lmforge.serve.keys import SCOPES, ApiKey, KeyStore
    from lmforge.serve.server import run_server

_EXPORTS = {
    "SCOPES": "lmforge.serve.keys",
    "ApiKey": "lmforge.serve.keys",
    "KeyStore": "lmforge.serve.keys",
    "ServeConfig": "lmforge.serve.config",
    "create_app": "lmforge.serve.app",
    "load_serve_config": "lmforge.serve.config",
    "run_server": "lmforge.serve.server",
}
__all__ = [
    "SCOPES",
    "ApiKey",
    "KeyStore",
    "ServeConfig",
    "create_app",
    "load_serve_config",
    "run_server",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lmforge.serve' has no attribute {name!r}")
