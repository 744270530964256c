"""The interactive API documentation at ``/docs``, served whole from the installed package.

FastAPI's default page loads Swagger UI's script and styles from a CDN, so offline (where a
model server often runs) it was blank. The assets come from the ``swagger-ui-bundle-v2``
package instead, through FastAPI's documented self-hosting (``get_swagger_ui_html`` with local
URLs). That package rather than ``swagger-ui-bundle``: the latter ships Swagger UI 4, which
cannot render the OpenAPI 3.1 document FastAPI writes. ReDoc has no such package, so
``/redoc`` is off.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

DOCS_URL = "/docs"
ASSETS_URL = "/docs/assets"


def add_docs(app: FastAPI) -> None:
    """``/docs`` and its assets, for an app created with ``docs_url=None, redoc_url=None``."""
    app.mount(ASSETS_URL, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} — API",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon-32x32.png",
        )
