"""Operating the server: backpressure, deadlines, rate limits, hot swap under load, replicas
sharing one database (SQLite, and PostgreSQL where its server is installed), graceful shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from conftest import LiveServer, register_copy, serve_config
from lmforge.monitor import PredictionLogRow
from lmforge.registry import Registry
from lmforge.serve import KeyStore
from lmforge.settings import Settings


@pytest.fixture
def settings(tmp_path: Path, tiny_model_dir: Path) -> Settings:
    settings = Settings(home=tmp_path / "home", database_url=None)
    register_copy(settings, tiny_model_dir, "tiny", stage="production")
    register_copy(settings, tiny_model_dir, "tiny")
    return settings


def admin_key(settings: Settings) -> dict[str, str]:
    _, secret = KeyStore(Registry(settings).engine).create("admin", ["admin"])
    return {"Authorization": f"Bearer {secret}"}


def gate_inference(server: LiveServer, ref: str) -> threading.Event:
    """Hold the model's inference thread until the returned event is set."""
    gate = threading.Event()
    batcher = server.state.pool.loaded[ref].batcher
    run: Callable[[list[str]], Any] = batcher._run

    def held(rows: list[str]) -> Any:
        gate.wait(30)
        return run(rows)

    batcher._run = held
    return gate


def post_in_thread(
    url: str, headers: dict[str, str], out: list[Any], body: Any
) -> threading.Thread:
    def send() -> None:
        try:
            out.append(httpx.post(url, json=body, headers=headers, timeout=60))
        except httpx.HTTPError as exc:
            out.append(exc)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def wait_for(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_a_full_queue_answers_429_at_once_then_recovers(settings: Settings) -> None:
    headers = admin_key(settings)
    config = serve_config(batching={"max_batch": 2, "max_queue": 4, "max_wait_ms": 0})
    with LiveServer(config, settings) as server:
        gate = gate_inference(server, "tiny:v1")
        batcher = server.state.pool.loaded["tiny:v1"].batcher
        url = server.url + "/v1/predict"
        answers: list[Any] = []
        threads = [post_in_thread(url, headers, answers, {"inputs": ["held"]})]
        wait_for(lambda: batcher.queued_rows == 0 and batcher.stats.batches == 0)
        time.sleep(0.1)  # the first request is inside the held inference call
        threads += [post_in_thread(url, headers, answers, {"inputs": [f"q{i}"]}) for i in range(4)]
        wait_for(lambda: batcher.queued_rows == 4)
        start = time.perf_counter()
        refused = httpx.post(url, json={"inputs": ["one too many"]}, headers=headers)
        assert time.perf_counter() - start < 1.0
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert "queue is full" in refused.json()["error"]["message"]
        gate.set()
        for t in threads:
            t.join()
        assert [a.status_code for a in answers] == [200] * 5
        assert httpx.post(url, json={"inputs": ["again"]}, headers=headers).status_code == 200


def test_a_request_past_its_deadline_gets_504(settings: Settings) -> None:
    headers = admin_key(settings)
    config = serve_config(batching={"timeout_s": 0.3, "max_wait_ms": 0})
    with LiveServer(config, settings) as server:
        gate = gate_inference(server, "tiny:v1")
        r = httpx.post(server.url + "/v1/predict", json={"inputs": ["slow"]}, headers=headers)
        gate.set()
        assert r.status_code == 504
        assert "batching.timeout_s" in r.json()["error"]["message"]


def test_the_rate_limit_is_per_key_with_retry_after(settings: Settings) -> None:
    store = KeyStore(Registry(settings).engine)
    first = {"Authorization": f"Bearer {store.create('a', ['predict'])[1]}"}
    second = {"Authorization": f"Bearer {store.create('b', ['predict'])[1]}"}
    config = serve_config(limits={"rate_per_second": 0.5, "burst": 2})
    with LiveServer(config, settings) as server:
        url = server.url + "/v1/predict"
        codes = [
            httpx.post(url, json={"inputs": ["x"]}, headers=first).status_code for _ in range(3)
        ]
        assert codes == [200, 200, 429]
        limited = httpx.post(url, json={"inputs": ["x"]}, headers=first)
        assert limited.headers["Retry-After"] in ("1", "2")
        assert "rate limit of 0.5 requests/s" in limited.json()["error"]["message"]
        assert httpx.post(url, json={"inputs": ["x"]}, headers=second).status_code == 200


def test_promotion_swaps_versions_under_load_without_failing_a_request(settings: Settings) -> None:
    headers = admin_key(settings)
    with LiveServer(serve_config(refresh_seconds=60), settings) as server:
        url = server.url + "/v1/predict"
        served: list[str] = []
        failures: list[Any] = []
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(timeout=30) as http:
                while not stop.is_set():
                    r = http.post(url, json={"inputs": ["a fine film"]}, headers=headers)
                    if r.status_code == 200:
                        served.append(r.json()["model"])
                    else:
                        failures.append((r.status_code, r.text))

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        wait_for(lambda: len(served) > 40)
        promoted = httpx.post(
            server.url + "/v1/models/tiny/versions/2/promote", headers=headers, timeout=30
        )
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["stage"] == "production"
        count = len(served)
        wait_for(lambda: len(served) > count + 40)
        stop.set()
        for t in threads:
            t.join()
        assert failures == []
        assert served[0] == "tiny:v1" and served[-1] == "tiny:v2"
        switch = served.index("tiny:v2")
        assert set(served[switch + 16 :]) == {"tiny:v2"}  # after the in-flight ones, only v2
        assert Registry(settings).get("tiny:v1").stage == "archived"


def _two_replicas_share_one_database(settings: Settings) -> None:
    headers = admin_key(settings)
    config = serve_config(prediction_log={"sample_rate": 1.0, "flush_seconds": 0.1})
    with LiveServer(config, settings) as a, LiveServer(config, settings) as b:
        for server in (a, b):  # one key, created once, works on every replica
            r = httpx.post(server.url + "/v1/predict", json={"inputs": ["x"]}, headers=headers)
            assert r.status_code == 200 and r.json()["model"] == "tiny:v1"
        promoted = httpx.post(a.url + "/v1/models/tiny/versions/2/promote", headers=headers)
        assert promoted.status_code == 200
        # replica b learns of the promotion from the database within refresh_seconds
        wait_for(lambda: b.state.pool.aliases.get("tiny") == "tiny:v2")
        r = httpx.post(b.url + "/v1/predict", json={"inputs": ["x"]}, headers=headers)
        assert r.json()["model"] == "tiny:v2"
        _, revoked = KeyStore(Registry(settings).engine).create("temp", ["predict"])
        temp = {"Authorization": f"Bearer {revoked}"}
        assert (
            httpx.post(b.url + "/v1/predict", json={"inputs": ["x"]}, headers=temp).status_code
            == 200
        )
        KeyStore(Registry(settings).engine).revoke("temp")
        assert (
            httpx.post(a.url + "/v1/predict", json={"inputs": ["x"]}, headers=temp).status_code
            == 401
        )
    with Session(Registry(settings).engine) as session:
        logged = session.scalar(select(func.count()).select_from(PredictionLogRow))
    assert logged == 4  # both replicas wrote every sample (flushed at shutdown at the latest)


def test_two_replicas_on_one_sqlite_database(settings: Settings) -> None:
    _two_replicas_share_one_database(settings)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_replicas_on_one_postgresql_database(
    postgres_url: str, tmp_path: Path, tiny_model_dir: Path
) -> None:
    settings = Settings(home=tmp_path / "pg-home", database_url=postgres_url)
    register_copy(settings, tiny_model_dir, "tiny", stage="production")
    register_copy(settings, tiny_model_dir, "tiny")
    assert Registry(settings).engine.dialect.name == "postgresql"
    _two_replicas_share_one_database(settings)


def test_graceful_shutdown_finishes_queued_requests(settings: Settings) -> None:
    headers = admin_key(settings)
    config = serve_config(batching={"max_batch": 2, "max_wait_ms": 0})
    server = LiveServer(config, settings).__enter__()
    gate = gate_inference(server, "tiny:v1")
    batcher = server.state.pool.loaded["tiny:v1"].batcher
    answers: list[Any] = []
    threads = [
        post_in_thread(server.url + "/v1/predict", headers, answers, {"inputs": [f"r{i}"]})
        for i in range(6)
    ]
    wait_for(lambda: batcher.queued_rows >= 4)
    stopping = threading.Thread(target=server.stop)
    stopping.start()  # like SIGTERM: stop accepting, finish what is queued, exit
    time.sleep(0.3)
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/healthz", timeout=2)
    gate.set()
    for t in threads:
        t.join()
    stopping.join(timeout=30)
    assert [a.status_code for a in answers] == [200] * 6
    assert not server.thread.is_alive()


def test_lmforge_serve_exits_cleanly_on_sigterm(settings: Settings) -> None:
    env = {**os.environ, "LMFORGE_HOME": str(settings.home)}
    env.pop("LMFORGE_DATABASE_URL", None)
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "lmforge.cli", "serve", "--port", str(port), "--no-auth"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: _ready(port) or process.poll() is not None, seconds=60)
        assert process.poll() is None
        r = httpx.post(f"http://127.0.0.1:{port}/v1/predict", json={"inputs": ["x"]})
        assert r.status_code == 200
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    # uvicorn re-raises the signal once shut down, so a supervisor sees why the process ended
    assert process.returncode in (0, -signal.SIGTERM)
    assert "authentication is OFF" in stderr and "Application shutdown complete" in stderr


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_damaged_version_is_refused_while_the_others_serve(
    settings: Settings, tiny_model_dir: Path
) -> None:
    broken = register_copy(settings, tiny_model_dir, "broken", stage="production")
    (Registry(settings).get(broken).path / "model.safetensors").write_bytes(b"not weights")
    headers = admin_key(settings)
    with LiveServer(serve_config(), settings) as server:
        assert httpx.get(server.url + "/readyz").json()["models"] == {"tiny": "tiny:v1"}
        url = server.url + "/v1/predict"
        r = httpx.post(url, json={"model": "broken", "inputs": ["x"]}, headers=headers)
        assert r.status_code == 503
        message = r.json()["error"]["message"]
        assert "broken" in message and "\n" not in message
        ok = httpx.post(url, json={"model": "tiny", "inputs": ["x"]}, headers=headers)
        assert ok.status_code == 200
        unnamed = httpx.post(url, json={"inputs": ["x"]}, headers=headers)
        assert unnamed.status_code == 200  # one model served: it is the default


def test_a_request_must_name_a_model_when_there_is_no_default(settings: Settings) -> None:
    headers = admin_key(settings)
    with LiveServer(serve_config(models=[]), settings) as server:
        r = httpx.post(server.url + "/v1/predict", json={"inputs": ["x"]}, headers=headers)
        assert r.status_code == 422 and "serves no model yet" in r.json()["error"]["message"]
        named = {"model": "tiny", "inputs": ["x"]}
        assert (
            httpx.post(server.url + "/v1/predict", json=named, headers=headers).status_code == 200
        )
