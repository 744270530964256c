"""Connection limits over real sockets, against the server as ``lmforge serve`` configures
uvicorn: header size and count (431), a slow head or body (408), the concurrency cap (503),
and the graceful-shutdown timeout (503, not uvicorn's plain-text 500)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from conftest import register_copy, serve_config
from lmforge.registry import Registry
from lmforge.serve import KeyStore, create_app
from lmforge.serve.server import uvicorn_config
from lmforge.settings import Settings

FAST = {"header_timeout_s": 0.5, "body_timeout_s": 0.5, "keep_alive_s": 1}


class Served:
    """The app under uvicorn with the settings ``run_server`` uses, on a free port."""

    def __init__(self, settings: Settings, **sections: Any) -> None:
        config = serve_config(port=0, **sections)
        self.app = create_app(config, settings)
        self.server = uvicorn.Server(uvicorn_config(self.app, config))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "did not start"
            time.sleep(0.02)
        self.port = int(self.server.servers[0].sockets[0].getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return sock

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", database_url=None)


@pytest.fixture
def served(settings: Settings) -> Iterator[Served]:
    server = Served(settings, models=[], connections={**FAST, "max_header_bytes": 4096})
    yield server
    server.stop()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Everything the server sends until it closes the connection: status, headers, body."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:  # what was read before the reset is the answer
        pass
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def test_a_header_over_the_size_limit_gets_431_without_being_read_whole(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:  # the server answers and closes long before the megabyte is sent
            for _ in range(256):
                sock.sendall(b"a" * 4096)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, headers, body = read_response(sock)
    assert status == 431 and headers["connection"] == "close"
    assert json.loads(body)["error"]["code"] == "headers_too_large"
    assert "connections.max_header_bytes" in json.loads(body)["error"]["message"]


def test_a_head_in_one_chunk_is_measured_too(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n")
        status, _, body = read_response(sock)
    assert status == 431 and b"headers_too_large" in body


def test_too_many_header_fields_get_431(served: Served) -> None:
    fields = b"".join(b"X-F%d: 1\r\n" % i for i in range(101))
    with served.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
        status, _, body = read_response(sock)
    assert status == 431
    assert "connections.max_headers" in json.loads(body)["error"]["message"]


def test_headers_within_the_limits_are_served(served: Served) -> None:
    response = httpx.get(served.url + "/healthz", headers={"X-Ok": "a" * 2000})
    assert response.status_code == 200


def test_a_half_sent_head_gets_408_and_is_closed(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        status, _, body = read_response(sock)
    assert status == 408 and json.loads(body)["error"]["code"] == "header_timeout"


def test_a_connection_that_sends_nothing_is_closed(served: Served) -> None:
    with served.connect() as sock:
        status, _, _ = read_response(sock)
    assert status == 408


def test_many_half_sent_heads_are_all_closed(served: Served) -> None:
    socks = [served.connect() for _ in range(50)]
    try:
        for sock in socks:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        assert all(read_response(sock)[0] == 408 for sock in socks)
    finally:
        for sock in socks:
            sock.close()


def test_a_stalled_body_gets_408_and_is_closed(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n" + b'{"inputs": ["'
        )
        status, _, body = read_response(sock)
    assert status == 408 and json.loads(body)["error"]["code"] == "body_timeout"


def test_keep_alive_serves_the_next_request_on_the_same_connection(served: Served) -> None:
    with httpx.Client(base_url=served.url) as client:
        assert [client.get("/healthz").status_code for _ in range(3)] == [200] * 3


def test_the_concurrency_cap_answers_json_503_with_retry_after(settings: Settings) -> None:
    server = Served(settings, models=[], connections={"max_concurrency": 2})
    try:
        socks = [server.connect()]  # one of the two allowed: the second is served
        try:
            assert httpx.get(server.url + "/healthz").status_code == 200
            socks.append(server.connect())  # both held: a third is refused
            with server.connect() as third:
                third.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                status, headers, body = read_response(third)
        finally:
            for sock in socks:
                sock.close()
    finally:
        server.stop()
    assert status == 503 and headers["retry-after"] == "1"
    assert json.loads(body)["error"]["code"] == "overloaded"


def test_a_request_cut_off_by_the_graceful_timeout_gets_503(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    settings = Settings(home=tmp_path / "home", database_url=None)
    register_copy(settings, tiny_model_dir, "tiny", stage="production")
    _, secret = KeyStore(Registry(settings).engine).create("admin", ["admin"])
    server = Served(settings, graceful_timeout_s=1, batching={"max_wait_ms": 0})
    batcher = server.app.state.lmforge.pool.loaded["tiny:v1"].batcher
    gate, entered = threading.Event(), threading.Event()
    run = batcher._run

    def held(rows: list[str]) -> Any:
        entered.set()
        gate.wait(30)
        return run(rows)

    batcher._run = held
    answers: list[httpx.Response] = []

    def send() -> None:
        answers.append(
            httpx.post(
                server.url + "/v1/predict",
                json={"inputs": ["held"]},
                headers={"Authorization": f"Bearer {secret}"},
                timeout=30,
            )
        )

    client = threading.Thread(target=send)
    client.start()
    assert entered.wait(10)
    server.server.should_exit = True  # like SIGTERM; the held request outlasts the 1 s
    client.join(timeout=20)
    gate.set()
    server.thread.join(timeout=30)
    assert answers and answers[0].status_code == 503
    assert answers[0].headers["retry-after"] == "1"
    assert answers[0].json()["error"]["code"] == "shutting_down"
