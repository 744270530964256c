"""The prediction log's writer: a sample of served predictions, written in the background.

Rows are buffered and written by one task every ``flush_seconds`` (in a thread, off the event
loop), so logging never adds a database round trip to a request; closing writes what is left.
The server owns one (``serve``); nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import insert
from sqlalchemy.engine import Engine

from lmforge.monitor.tables import PredictionLogRow, create_tables

_MAX_BUFFER = 10_000  # rows held between flushes; past it new rows are dropped (and counted)
logger = logging.getLogger("lmforge.serve")  # the server's logger: the server runs this writer


class LogSettings(Protocol):
    """What the writer needs of its configuration (the server's ``prediction_log`` section)."""

    @property
    def sample_rate(self) -> float: ...

    @property
    def include_text(self) -> bool: ...

    @property
    def flush_seconds(self) -> float: ...


@dataclass(frozen=True)
class LoggedPrediction:
    """One prediction to log, as the server hands it over."""

    model: str
    version: int
    label: str
    score: float
    latency_ms: float
    key_name: str | None
    text: str | None


class PredictionLog:
    """Samples predictions into a buffer that one background task writes to the database."""

    def __init__(self, engine: Engine, config: LogSettings, seed: int | None = None) -> None:
        self.engine = engine
        self.config = config
        self._random = random.Random(seed)
        self._buffer: list[dict[str, object]] = []
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.dropped = 0
        create_tables(engine)

    def sample(self) -> bool:
        rate = self.config.sample_rate
        return rate > 0 and (rate >= 1 or self._random.random() < rate)

    def add(self, row: LoggedPrediction) -> None:
        if len(self._buffer) >= _MAX_BUFFER:
            self.dropped += 1
            return
        self._buffer.append(
            {
                "model": row.model,
                "version": row.version,
                "label": row.label,
                "score": row.score,
                "latency_ms": row.latency_ms,
                "key_name": row.key_name,
                "text": row.text if self.config.include_text else None,
            }
        )

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._flush_forever())

    async def flush(self) -> None:
        rows, self._buffer = self._buffer, []
        if rows:
            try:
                await asyncio.to_thread(self._write, rows)
            except Exception:
                self._buffer = (rows + self._buffer)[:_MAX_BUFFER]  # try again next time
                raise

    def _write(self, rows: list[dict[str, object]]) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(PredictionLogRow), rows)
        self.written += len(rows)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.flush_seconds)
            try:
                await self.flush()
            except Exception as exc:  # the database is away: keep serving, keep the rows
                logger.warning("prediction log not written yet: %s", exc)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
