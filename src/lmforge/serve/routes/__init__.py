"""The HTTP routes, one ``APIRouter`` per area; ``create_app`` includes them in this order
(which is also the order of the OpenAPI document's paths).

Adding a route is adding a function to its area's file; a new area is a new file here, listed
in ``ROUTERS``. The web console's page (``ui``) is not listed: ``create_app`` adds it unless
``ui: false``. What routes share (the caller's key, limits, the model pool) is in
:mod:`lmforge.serve.deps`.
"""

from __future__ import annotations

from fastapi import APIRouter

from lmforge.serve.routes import (
    alerts,
    assistant,
    console,
    explain,
    feedback,
    finance,
    generation,
    inference,
    models,
    operations,
    recommend,
)

ROUTERS: tuple[APIRouter, ...] = (
    generation.router,
    inference.router,
    explain.router,
    assistant.router,
    recommend.router,
    feedback.router,
    alerts.router,
    finance.router,
    models.router,
    console.router,
    operations.router,
)

__all__ = ["ROUTERS"]
