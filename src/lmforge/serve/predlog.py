"""The prediction log: a sample of served predictions, written to the database in the background.

Rows are buffered and written by one task every ``flush_seconds`` (in a thread, off the event
loop), so logging never adds a database round trip to a request; closing writes what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass

from sqlalchemy import insert
from sqlalchemy.engine import Engine

from lmforge.serve.config import LogConfig
from lmforge.serve.tables import PredictionLogRow, create_tables

_MAX_BUFFER = 10_000  # rows held between flushes; past it new rows are dropped (and counted)
logger = logging.getLogger("lmforge.serve")


@dataclass(frozen=True)
class LoggedPrediction:
    model: str
    version: int
    label: str
    score: float
    latency_ms: float
    key_name: str | None
    text: str | None


class PredictionLog:
    def __init__(self, engine: Engine, config: LogConfig, seed: int | None = None) -> None:
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
