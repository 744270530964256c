"""The web console's page and its static files at ``/ui`` (on unless ``--no-ui``).

The files are the package's own (``lmforge/serve/ui/``: one HTML page, plain ES modules and a
style sheet — no build step, nothing from a CDN). Every answer carries a strict
Content-Security-Policy: scripts and styles only from this server (no inline script, no
``eval``), requests only to this server, no framing. The page reads everything else from the
``/v1/`` routes with the key the user typed, sent as a bearer header (see docs/console.md).
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time.
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

from lmforge.serve.limits import ApiError

router = APIRouter(include_in_schema=False)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
#: The files served, by name: nothing else under the folder is reachable.
MEDIA_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "views.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "finance.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}


def _file(name: str) -> Response:
    if name not in MEDIA_TYPES:
        raise ApiError(404, f"no console file '{name[:64]}' — open /ui", "not_found")
    body = (files("lmforge.serve") / "ui" / name).read_bytes()
    return Response(body, media_type=MEDIA_TYPES[name], headers=HEADERS)


@router.get("/ui")
@router.get("/ui/")
async def ui_page() -> Response:
    return _file("index.html")


@router.get("/ui/{name}")
async def ui_file(name: str) -> Response:
    return _file(name)
