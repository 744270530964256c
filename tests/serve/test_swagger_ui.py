"""``/docs`` works offline: the page and everything it loads come from this server."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from lmforge.serve import ServeConfig, create_app
from lmforge.settings import Settings


def test_the_docs_page_loads_only_local_assets(tmp_path: Path) -> None:
    app = create_app(ServeConfig(models=[]), Settings(home=tmp_path, database_url=None))
    client = TestClient(app)  # no lifespan: nothing to load for the page
    page = client.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", page.text)
    assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"} <= set(urls)
    assert "://" not in page.text  # no CDN, nor any other host
    for url in urls:
        assert url.startswith("/"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.content, url
    assert client.get("/docs/assets/swagger-ui-bundle.js").text.startswith(("/*", "!"))
    assert client.get("/redoc").status_code == 404  # off: it has no offline package
