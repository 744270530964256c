"""The access log's options: a file instead of stderr, the request body only when asked."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from conftest import LiveServer, serve_config
from lmforge.registry import Registry
from lmforge.serve import KeyStore
from lmforge.settings import Settings


@pytest.mark.parametrize("include_body", [False, True])
def test_access_log_to_a_file_with_or_without_the_body(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], include_body: bool
) -> None:
    settings = Settings(home=tmp_path / "home", database_url=None)
    key = KeyStore(Registry(settings).engine).create("ops-app", ["predict"])[1]
    log = tmp_path / "logs" / "access.jsonl"
    config = serve_config(models=[], access_log={"file": str(log), "include_body": include_body})
    with LiveServer(config, settings) as server:
        r = httpx.post(
            server.url + "/v1/predict",
            json={"model": "nope", "inputs": ["a secret sentence"]},
            headers={"Authorization": f"Bearer {key}", "X-Request-ID": "abc-1"},
            timeout=30,
        )
        assert r.status_code == 404 and r.headers["X-Request-ID"] == "abc-1"
        probe = httpx.get(server.url + "/healthz", timeout=30)
        assert probe.status_code == 200 and "X-Request-ID" in probe.headers
    lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    mine = [line for line in lines if line["request_id"] == "abc-1"]
    assert len(mine) == 1
    line = mine[0]
    assert line["status"] == 404 and line["route"] == "/v1/predict" and line["key"] == "ops-app"
    assert not any(line["route"] == "/healthz" for line in lines)  # probes: skip_paths
    assert ("a secret sentence" in line.get("body", "")) is include_body
    assert key not in log.read_text(encoding="utf-8")
    assert "abc-1" not in capfd.readouterr().err  # the file, not stderr


def test_access_log_off(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    settings = Settings(home=tmp_path / "home", database_url=None)
    config = serve_config(models=[], access_log={"enabled": False})
    with LiveServer(config, settings) as server:
        r = httpx.get(server.url + "/healthz", headers={"X-Request-ID": "off-1"}, timeout=30)
        assert r.headers["X-Request-ID"] == "off-1"  # the id is still returned
    assert "off-1" not in capfd.readouterr().err
