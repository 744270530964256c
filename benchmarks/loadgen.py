"""Load generation for the serving benchmarks: a small HTTP/1.1 client, closed- and open-loop
clients, and starting and stopping a server process.

The clients speak HTTP/1.1 over raw asyncio sockets (keep-alive), so the load generator costs
little CPU on the cores it shares with the server. Used by ``serve_load.py`` and
``generation.py``; latencies are summarised with the runtime's `percentile`, so a p99 here is
the p99 of ``lmforge bench``.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from lmforge.runtime.measure import percentile

# --- a small HTTP/1.1 client ------------------------------------------------------------------


class Connection:
    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _send(
        self, path: str, body: bytes
    ) -> tuple[asyncio.StreamReader, int, dict[str, str]]:
        """POST `body`; the reader positioned at the answer's body, its status and headers."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{self.extra}\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("server closed the connection")
        headers = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.lower()] = value.strip()
        return self.reader, int(status_line.split()[1]), headers

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        reader, status, headers = await self._send(path, body)
        payload = await reader.readexactly(int(headers.get("content-length", 0)))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, payload

    async def events(self, path: str, body: bytes) -> AsyncIterator[bytes]:
        """POST, then each server-sent event of the streamed (chunked) answer as it arrives."""
        reader, status, _ = await self._send(path, body)
        if status != 200:
            raise ConnectionError(f"server answered {status}")
        pending = b""
        while size := int((await reader.readline()).split(b";")[0], 16):
            pending += (await reader.readexactly(size + 2))[:-2]  # the chunk, less its CRLF
            *complete, pending = pending.split(b"\n\n")
            for event in complete:
                yield event
        await reader.readline()  # the empty trailer after the last chunk

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class PhaseResult:
    seconds: float = 0.0
    ok: list[float] = field(default_factory=list)  # latency (s) of 200s
    rejected: list[float] = field(default_factory=list)  # latency (s) of 429s
    other: dict[int, int] = field(default_factory=dict)
    errors: int = 0

    def record(self, status: int, seconds: float) -> None:
        if status == 200:
            self.ok.append(seconds)
        elif status == 429:
            self.rejected.append(seconds)
        else:
            self.other[status] = self.other.get(status, 0) + 1

    def merge(self, other: PhaseResult) -> None:
        self.seconds += other.seconds
        self.ok += other.ok
        self.rejected += other.rejected
        self.errors += other.errors
        for status, count in other.other.items():
            self.other[status] = self.other.get(status, 0) + count

    def summary(self) -> dict[str, Any]:
        ok = self.ok
        return {
            "seconds": round(self.seconds, 2),
            "ok": len(ok),
            "ok_per_second": round(len(ok) / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(percentile(ok, 50) * 1000, 2) if ok else None,
            "p99_ms": round(percentile(ok, 99) * 1000, 2) if ok else None,
            "rejected_429": len(self.rejected),
            "rejected_p99_ms": round(percentile(self.rejected, 99) * 1000, 2)
            if self.rejected
            else None,
            "other_status": {str(k): v for k, v in self.other.items()},
            "connection_errors": self.errors,
        }


def sequential(
    host: str,
    port: int,
    headers: dict[str, str],
    path: str,
    bodies: list[bytes],
    count: int,
    offset: int,
) -> PhaseResult:
    """One client, one request at a time, over a blocking socket: the thinnest client there is,
    so that what is measured is the server's latency, not the load generator's."""
    result = PhaseResult()
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection((host, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stream = sock.makefile("rb")
        begin = time.perf_counter()
        for i in range(count):
            body = bodies[(offset + i) % len(bodies)]
            head = (
                f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n{extra}\r\n"
            )
            start = time.perf_counter()
            sock.sendall(head.encode() + body)
            status = int(stream.readline().split()[1])
            length = 0
            while (line := stream.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            stream.read(length)
            result.record(status, time.perf_counter() - start)
        result.seconds = time.perf_counter() - begin
    return result


async def closed_loop(
    host: str,
    port: int,
    headers: dict[str, str],
    path: str,
    bodies: list[bytes],
    clients: int,
    seconds: float,
    max_requests: int,
) -> PhaseResult:
    result = PhaseResult()
    stop = time.perf_counter() + seconds
    sent = 0

    async def client(index: int) -> None:
        nonlocal sent
        conn = Connection(host, port, headers)
        i = index
        while time.perf_counter() < stop and sent < max_requests:
            sent += 1
            body = bodies[i % len(bodies)]
            i += clients
            start = time.perf_counter()
            try:
                status, _ = await conn.post(path, body)
            except (ConnectionError, OSError, asyncio.IncompleteReadError):
                result.errors += 1
                conn.close()
                continue
            result.record(status, time.perf_counter() - start)
        conn.close()

    begin = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    result.seconds = time.perf_counter() - begin
    return result


async def open_loop(
    host: str,
    port: int,
    headers: dict[str, str],
    path: str,
    bodies: list[bytes],
    rate: float,
    seconds: float,
    pid: int,
) -> tuple[PhaseResult, list[float]]:
    """Requests start on a fixed schedule whatever the answers; idle connections are reused."""
    result = PhaseResult()
    idle: list[Connection] = []
    memory: list[float] = []
    tasks: set[asyncio.Task[None]] = set()

    async def one(body: bytes) -> None:
        reused = bool(idle)
        conn = idle.pop() if idle else Connection(host, port, headers)
        start = time.perf_counter()
        try:
            try:
                status, _ = await conn.post(path, body)
            except (ConnectionError, asyncio.IncompleteReadError):
                if not reused:
                    raise
                # The server closed a connection that sat idle past its keep-alive timeout:
                # like any HTTP client, send again on a fresh one.
                conn.close()
                conn = Connection(host, port, headers)
                status, _ = await conn.post(path, body)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            result.errors += 1
            conn.close()
            return
        result.record(status, time.perf_counter() - start)
        idle.append(conn)

    async def sample_memory() -> None:
        while True:
            memory.append(rss_mb(pid))
            await asyncio.sleep(1.0)

    sampler = asyncio.get_running_loop().create_task(sample_memory())
    begin = time.perf_counter()
    n = 0
    while (now := time.perf_counter()) - begin < seconds:
        due = begin + n / rate
        if due > now:
            await asyncio.sleep(due - now)
        task = asyncio.get_running_loop().create_task(one(bodies[n % len(bodies)]))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
    await asyncio.gather(*tasks)
    result.seconds = time.perf_counter() - begin
    sampler.cancel()
    for conn in idle:
        conn.close()
    return result, memory


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --- servers ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, config: Path | str, stderr: Any) -> subprocess.Popen[bytes]:
    """``lmforge serve`` on ``port`` with the serve config file ``config``, in a subprocess."""
    command = ["-m", "lmforge.cli", "serve", "--port", str(port), "--config", str(config)]
    return subprocess.Popen([sys.executable, *command], stderr=stderr)


def wait_ready(port: int, process: subprocess.Popen[bytes], path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server on port {port} not ready in {timeout:.0f} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
