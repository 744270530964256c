"""The prediction log's writer: a compact record of every served prediction, in the background.

Every answered prediction gets a row (its ``prediction_id``, model, version, label, scores,
latency, time, key name), so feedback can name any prediction; the input text is kept only with
``include_text``, and then for a ``sample_rate`` share of rows. Rows are buffered and written by
one task every ``flush_seconds`` (in a thread, off the event loop), so logging never adds a
database round trip to a request; closing writes what is left. With ``retention_days`` the same
task deletes older rows (at most once an hour). The server owns one (``serve``); nothing here
knows about HTTP.

What cannot be stored never blocks what can: texts lose their NUL characters (PostgreSQL's text
type cannot hold them; SQLite's could, so both databases log the same text), a non-finite score
is not logged, and a row the database refuses (a constraint, a value it cannot store) is dropped
and counted, while the rows around it are written. Only a database that is away keeps rows in
the buffer, to be written on the next flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import delete, insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from lmforge.errors import first_line
from lmforge.monitor.tables import PredictionLogRow, create_tables

_MAX_BUFFER = 10_000  # rows held between flushes; past it new rows are dropped (and counted)
_CLOSE_ATTEMPTS = 3  # writes tried at shutdown while the database is away ...
_CLOSE_RETRY_S = 1.0  # ... this far apart
_PURGE_EVERY_S = 3600.0  # how often the writer deletes rows past the retention
logger = logging.getLogger("lmforge.serve")  # the server's logger: the server runs this writer

Row = dict[str, object]
OnLost = Callable[[str, int], None]  # (reason, rows): rows that will never be written


class LogSettings(Protocol):
    """What the writer needs of its configuration (the server's ``prediction_log`` section)."""

    @property
    def sample_rate(self) -> float: ...

    @property
    def include_text(self) -> bool: ...

    @property
    def flush_seconds(self) -> float: ...

    @property
    def retention_days(self) -> float | None: ...


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
    prediction_id: str | None = None  # a new one is drawn when None
    scores: dict[str, float] | None = None
    kind: str | None = None  # None: a classifier; "assistant": an FAQ answer (label: its entry)


def new_prediction_id() -> str:
    """A random id (32 hex characters): unguessable, so feedback cannot name others' rows."""
    return uuid.uuid4().hex


class LogNotWritten(Exception):
    """The database is away: these rows (in order) are still to be written."""

    def __init__(self, rows: list[Row], cause: Exception) -> None:
        super().__init__(first_line(cause))
        self.rows = rows


class PredictionLog:
    """Buffers every prediction for one background task to write to the database.

    ``on_lost`` is told of rows that will never be written, by reason: ``non_finite`` (a NaN or
    infinite score), ``refused`` (the database refused the row), ``buffer_full`` (the database
    was away for long) and ``shutdown`` (still unwritten when the server stopped).
    """

    def __init__(
        self,
        engine: Engine,
        config: LogSettings,
        seed: int | None = None,
        on_lost: OnLost | None = None,
    ) -> None:
        self.engine = engine
        self.config = config
        self._random = random.Random(seed)
        self._buffer: list[Row] = []
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._on_lost = on_lost
        # One flush at a time: a caller that flushes waits for the one in flight, so a row
        # handed to the log before the call is in the database when it returns.
        self._flushing = asyncio.Lock()
        self._purged_at: float | None = None
        self.written = 0
        self.dropped = 0  # every row lost, whatever the reason
        create_tables(engine)

    def sample(self) -> bool:
        """Whether to keep this row's text (only asked with ``include_text``)."""
        rate = self.config.sample_rate
        return rate > 0 and (rate >= 1 or self._random.random() < rate)

    def add(self, row: LoggedPrediction) -> str:
        """Buffer a row; its prediction id (``row.prediction_id``, or a new one)."""
        prediction_id = row.prediction_id or new_prediction_id()
        if not (math.isfinite(row.score) and math.isfinite(row.latency_ms)):
            self._lose("non_finite", 1)  # NOT NULL on SQLite, NaN on PostgreSQL: never stored
            return prediction_id
        if len(self._buffer) >= _MAX_BUFFER:
            self._lose("buffer_full", 1)
            return prediction_id
        keep_text = self.config.include_text and self.sample()
        scores = row.scores
        if scores is not None and not all(math.isfinite(v) for v in scores.values()):
            scores = None  # JSON has no NaN: the row is kept without its scores
        self._buffer.append(
            {
                "prediction_id": prediction_id,
                "scores": scores,
                "model": _storable(row.model),
                "version": row.version,
                "label": _storable(row.label),
                "score": row.score,
                "latency_ms": row.latency_ms,
                "key_name": _storable(row.key_name),
                "text": _storable(row.text) if keep_text else None,
                "kind": row.kind,
            }
        )
        return prediction_id

    def _lose(self, reason: str, rows: int) -> None:
        self.dropped += rows
        if self._on_lost is not None:
            self._on_lost(reason, rows)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._flush_forever())

    async def flush(self) -> None:
        """Write the buffer; rows the database refuses are dropped, and while it is away the
        rows stay buffered (the error is raised). Waits for a flush in flight first."""
        async with self._flushing:
            rows, self._buffer = self._buffer, []
            if not rows:
                return
            try:
                await asyncio.to_thread(self._write, rows)
            except LogNotWritten as exc:
                kept = exc.rows + self._buffer  # in log order: the older rows first
                if len(kept) > _MAX_BUFFER:
                    self._lose("buffer_full", len(kept) - _MAX_BUFFER)
                self._buffer = kept[:_MAX_BUFFER]
                raise

    def purge(self, now: datetime | None = None) -> int:
        """Delete the rows older than ``retention_days`` (none without it); how many went."""
        days = self.config.retention_days
        if days is None:
            return 0
        cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
        with self.engine.begin() as conn:
            gone = conn.execute(
                delete(PredictionLogRow).where(PredictionLogRow.created_at < cutoff)
            )
        return int(gone.rowcount or 0)

    async def _purge_when_due(self) -> None:
        if self.config.retention_days is None:
            return
        now = time.monotonic()
        if self._purged_at is not None and now - self._purged_at < _PURGE_EVERY_S:
            return
        self._purged_at = now
        try:
            gone = await asyncio.to_thread(self.purge)
        except StatementError as exc:  # the database is away: the next hour tries again
            logger.warning("prediction log: old rows not deleted yet: %s", first_line(exc))
            return
        if gone:
            logger.info("prediction log: %d rows past the retention deleted", gone)

    def _write(self, rows: list[Row]) -> None:
        try:
            self._insert(rows)
        except StatementError as exc:
            if not _refused(exc):  # the database is away, or the connection broke
                raise LogNotWritten(rows, exc) from exc
            self._write_each(rows)  # some row is refused: find it, write the others

    def _write_each(self, rows: list[Row]) -> None:
        for i, row in enumerate(rows):
            try:
                self._insert([row])
            except StatementError as exc:
                if not _refused(exc):
                    raise LogNotWritten(rows[i:], exc) from exc
                self._lose("refused", 1)
                logger.warning(
                    "prediction log: the database refused a row, dropped: %s", first_line(exc)
                )

    def _insert(self, rows: list[Row]) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(PredictionLogRow), rows)
        self.written += len(rows)

    async def _flush_forever(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):  # a flush every flush_seconds, or now
                await asyncio.wait_for(self._stop.wait(), self.config.flush_seconds)
            try:
                await self.flush()
            except LogNotWritten as exc:  # the database is away: keep serving, keep the rows
                logger.warning("prediction log not written yet: %s", exc)
            await self._purge_when_due()
        await self._last_flush()

    async def _last_flush(self) -> None:
        """At shutdown: a database that is briefly away gets a few more tries, then what is
        still buffered is counted as lost (and said so in the server's log)."""
        for attempt in range(_CLOSE_ATTEMPTS):
            try:
                await self.flush()
                return
            except LogNotWritten as exc:
                if attempt + 1 < _CLOSE_ATTEMPTS:
                    await asyncio.sleep(_CLOSE_RETRY_S)
                    continue
                logger.error(
                    "prediction log: %d rows not written at shutdown: %s", len(self._buffer), exc
                )
                self._lose("shutdown", len(self._buffer))
                self._buffer = []

    async def close(self) -> None:
        """Stop the writer once it has written what is buffered (never cut off mid-write)."""
        if self._task is None:
            await self._last_flush()
            return
        self._stop.set()
        await self._task


def _refused(exc: StatementError) -> bool:
    """Whether a failed insert is the row's fault — a constraint, a value the database cannot
    store, or one the driver cannot even send (a StatementError that is no DBAPIError) — rather
    than the database's (away, or the connection broke), which a later try may get past."""
    return isinstance(exc, IntegrityError | DataError) or not isinstance(exc, DBAPIError)


def _storable(text: str | None) -> str | None:
    """The text without NUL characters: PostgreSQL's text type cannot store them (DataError),
    and SQLite must log the same text."""
    return text.replace("\x00", "") if text is not None and "\x00" in text else text
