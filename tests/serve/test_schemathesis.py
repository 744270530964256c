"""Property-based requests from the OpenAPI document (schemathesis): no input makes a 5xx.

Bounded: a fixed number of generated cases per operation, valid and invalid alike, against the
real server with an admin key (so every route is reachable) and the rate limit off.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from conftest import LiveServer, register_copy, serve_config
from lmforge.registry import Registry
from lmforge.serve import KeyStore
from lmforge.settings import Settings

EXAMPLES = 40  # per operation and mode


@pytest.fixture(scope="module")
def api(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    home = tmp_path_factory.mktemp("schemathesis-home")
    app_settings = Settings(home=home, database_url=None)
    register_copy(app_settings, tiny_model_dir, "tiny", stage="production")
    _, secret = KeyStore(Registry(app_settings).engine).create("fuzz", ["admin"])
    # few, short texts per request: /v1/embed runs a real encoder (minilm-l6, its default)
    limits = {"rate_per_second": None, "max_body_bytes": 20_000, "max_inputs": 8, "max_chars": 500}
    # explanations run in spawn-started workers at nice 15: on a loaded machine the first one
    # took over the default 60 s deadline (a 504); 110 s stays below the client's 120 s bound
    explain = {"timeout_s": 110}
    with LiveServer(serve_config(limits=limits, explain=explain), app_settings) as server:
        server.secret = secret
        warm = httpx.post(  # the catalogue encoder loads once, before the timed-out cases
            server.url + "/v1/embed",
            json={"inputs": ["warm up"]},
            headers={"Authorization": f"Bearer {secret}"},
            timeout=300,
        )
        assert warm.status_code == 200, warm.text
        warm = httpx.post(  # and the explanation worker starts once
            server.url + "/v1/explain",
            json={"input": "warm up", "method": "ig", "steps": 2},
            headers={"Authorization": f"Bearer {secret}"},
            timeout=300,
        )
        assert warm.status_code == 200, warm.text
        yield server


def test_no_generated_request_makes_a_server_error(api: Any) -> None:
    schema = schemathesis.openapi.from_url(api.url + "/openapi.json")
    headers = {"Authorization": f"Bearer {api.secret}"}
    failures: list[str] = []
    checked = 0
    paths: set[str] = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        paths.add(operation.path)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            def run(case: Any) -> None:
                nonlocal checked
                # 120 s: a bound on a hang, not a measurement (30 s ran out on a loaded machine)
                response = case.call(base_url=api.url, headers=headers, timeout=120)
                checked += 1
                if response.status_code >= 500:
                    failures.append(
                        f"{case.method} {case.formatted_path} {case.body!r}: "
                        f"{response.status_code} {response.text[:200]}"
                    )
                assert (
                    "application/json" in response.headers.get("content-type", "")
                    or case.path == "/metrics"
                )

            try:
                run()
            except Unsatisfiable:
                continue  # no invalid request exists for a route without parameters
    assert checked > 100
    assert "/v1/embed" in paths
    assert failures == []
