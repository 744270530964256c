"""Archiving and deleting a version over HTTP (admin only), through a real client against the
real app: a deleted version's folder and row are gone and this server stops serving it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import LiveServer, register_copy, serve_config
from lmforge.registry import Registry
from lmforge.serve import KeyStore
from lmforge.settings import Settings


@pytest.fixture
def site(tiny_model_dir: Path, tmp_path: Path) -> Iterator[Any]:
    """tiny:v1 in production, tiny:v2 and tiny:v3 candidates; an admin and a predict key."""
    settings = Settings(home=tmp_path / "home", database_url=None)
    register_copy(settings, tiny_model_dir, "tiny", stage="production")
    register_copy(settings, tiny_model_dir, "tiny")
    register_copy(settings, tiny_model_dir, "tiny")
    store = KeyStore(Registry(settings).engine)
    keys = {scope: store.create(scope, [scope])[1] for scope in ("predict", "admin")}
    with LiveServer(serve_config(), settings) as server:
        server.keys = keys
        server.settings = settings
        yield server


def call(site: Any, method: str, path: str, scope: str = "admin", **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {site.keys[scope]}"}
    return httpx.request(method, site.url + path, headers=headers, timeout=30, **kw)


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    assert "\n" not in body["message"]
    return body


def test_archive_a_candidate_and_refuse_production(site: Any) -> None:
    archived = call(site, "POST", "/v1/models/tiny/versions/2/archive")
    assert archived.status_code == 200, archived.text
    assert archived.json()["stage"] == "archived" and archived.json()["changed"] is True
    again = call(site, "POST", "/v1/models/tiny/versions/2/archive").json()
    assert again["changed"] is False
    refused = error(call(site, "POST", "/v1/models/tiny/versions/1/archive"), 409)
    assert refused["code"] == "version_in_use" and "tiny:v1 is in production" in refused["message"]
    error(call(site, "POST", "/v1/models/tiny/versions/2/archive", scope="predict"), 403)
    error(call(site, "POST", "/v1/models/tiny/versions/9/archive"), 404)


def test_delete_removes_the_version_and_stops_serving_it(site: Any) -> None:
    pinned = {"model": "tiny:v3", "inputs": ["a fine film"]}
    assert call(site, "POST", "/v1/predict", scope="predict", json=pinned).status_code == 200
    folder = Registry(site.settings).get("tiny:v3").path
    assert "tiny:v3" in site.state.pool.loaded

    error(call(site, "DELETE", "/v1/models/tiny/versions/3", scope="predict"), 403)
    deleted = call(site, "DELETE", "/v1/models/tiny/versions/3")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"id": "tiny:v3", "object": "model", "deleted": True}

    assert not folder.exists() and "tiny:v3" not in site.state.pool.loaded
    assert [v.ref for v in Registry(site.settings).list()] == ["tiny:v1", "tiny:v2"]
    gone = error(call(site, "POST", "/v1/predict", scope="predict", json=pinned), 404)
    assert "no version 3" in gone["message"]
    error(call(site, "DELETE", "/v1/models/tiny/versions/3"), 404)
    refused = error(call(site, "DELETE", "/v1/models/tiny/versions/1"), 409)
    assert "tiny:v1 is in production" in refused["message"]
    served = call(site, "POST", "/v1/predict", scope="predict", json={"inputs": ["fine"]})
    assert served.json()["model"] == "tiny:v1"


def test_deleting_the_version_a_name_serves_moves_the_name(site: Any, tiny_model_dir: Path) -> None:
    # No production version: the bare name serves the latest, until that one is deleted.
    register_copy(site.settings, tiny_model_dir, "solo")
    register_copy(site.settings, tiny_model_dir, "solo")
    bare = {"model": "solo", "inputs": ["fine"]}
    assert (
        call(site, "POST", "/v1/predict", scope="predict", json=bare).json()["model"] == "solo:v2"
    )
    assert call(site, "DELETE", "/v1/models/solo/versions/2").status_code == 200
    assert (
        call(site, "POST", "/v1/predict", scope="predict", json=bare).json()["model"] == "solo:v1"
    )
    assert call(site, "DELETE", "/v1/models/solo/versions/1").status_code == 200
    gone = error(call(site, "POST", "/v1/predict", scope="predict", json=bare), 404)
    assert "no registered model named 'solo'" in gone["message"]
