"""The prediction log below the HTTP layer: the writer, the reader a batch job uses, and what a
real server logs read back without FastAPI."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from conftest import LiveServer, register_copy, serve_config
from lmforge.errors import LmforgeError
from lmforge.monitor import (
    LoggedPrediction,
    PredictionLog,
    PredictionRecord,
    predlog,
    read_predictions,
)
from lmforge.monitor.predlog import LogNotWritten
from lmforge.registry import Registry
from lmforge.serve import KeyStore
from lmforge.settings import Settings


@dataclass(frozen=True)
class Policy:
    sample_rate: float = 1.0
    include_text: bool = True
    flush_seconds: float = 0.05
    retention_days: float | None = None


def prediction(model: str, version: int, label: str, text: str) -> LoggedPrediction:
    return LoggedPrediction(model, version, label, 0.75, 12.5, "job", text)


def write(settings: Settings, rows: list[LoggedPrediction], policy: Policy = Policy()) -> None:
    log = PredictionLog(Registry(settings).engine, policy)

    async def run() -> None:
        for row in rows:
            log.add(row)
        await log.flush()

    asyncio.run(run())


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", database_url=None)


def test_importing_monitor_loads_no_web_framework() -> None:
    code = (
        "import sys, lmforge.monitor\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "web = sorted(loaded & {'fastapi', 'starlette', 'uvicorn'})\n"
        "print(','.join(web))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_an_empty_database_reads_as_no_rows(settings: Settings) -> None:
    assert read_predictions(settings) == []


def test_rows_read_back_typed_in_log_order(settings: Settings) -> None:
    write(settings, [prediction("a", 1, "pos", "first"), prediction("a", 2, "neg", "second")])
    rows = read_predictions(settings)
    assert [(r.ref, r.label, r.text) for r in rows] == [
        ("a:v1", "pos", "first"),
        ("a:v2", "neg", "second"),
    ]
    first = rows[0]
    assert isinstance(first, PredictionRecord)
    assert first.score == 0.75 and first.latency_ms == 12.5 and first.key_name == "job"
    assert first.created_at.tzinfo is not None
    assert abs(datetime.now(UTC) - first.created_at) < timedelta(minutes=5)


def test_filters_and_the_limit_keeps_the_latest(settings: Settings) -> None:
    write(settings, [prediction("a", 1, "pos", f"a{i}") for i in range(5)])
    write(settings, [prediction("b", 1, "neg", "b0"), prediction("a", 2, "neg", "a-v2")])
    assert [r.text for r in read_predictions(settings, limit=3)] == ["a4", "b0", "a-v2"]
    assert [r.text for r in read_predictions(settings, model="b")] == ["b0"]
    assert [r.text for r in read_predictions(settings, model="a", version=2)] == ["a-v2"]
    assert len(read_predictions(settings, model="a")) == 6
    future = datetime.now(UTC) + timedelta(hours=1)
    assert read_predictions(settings, since=future) == []
    past = datetime.now(UTC) - timedelta(hours=1)
    assert len(read_predictions(settings, since=past)) == 7
    assert len(read_predictions(settings, since=past.replace(tzinfo=None))) == 7  # naive: UTC


def test_texts_are_kept_only_when_the_policy_says_so(settings: Settings) -> None:
    write(settings, [prediction("a", 1, "pos", "secret text")], Policy(include_text=False))
    (row,) = read_predictions(settings)
    assert row.text is None


@pytest.mark.parametrize(("kwargs", "needle"), [({"limit": 0}, "limit"), ({"version": 1}, "model")])
def test_bad_reader_arguments_are_one_line_errors(
    settings: Settings, kwargs: dict[str, int], needle: str
) -> None:
    with pytest.raises(LmforgeError, match=needle) as caught:
        read_predictions(settings, **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


def test_a_job_reads_what_the_server_logged(tiny_model_dir: Path, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", database_url=None)
    register_copy(settings, tiny_model_dir, "tiny", stage="production")
    _, secret = KeyStore(Registry(settings).engine).create("scorer", ["predict"])
    config = serve_config(
        prediction_log={"sample_rate": 1.0, "flush_seconds": 0.1, "include_text": True}
    )
    texts = ["a wonderful film", "a dull mess"]
    with LiveServer(config, settings) as server:
        r = httpx.post(
            server.url + "/v1/predict",
            json={"inputs": texts},
            headers={"Authorization": f"Bearer {secret}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        answered = r.json()["predictions"]
        deadline = time.monotonic() + 10
        rows = read_predictions(settings, model="tiny")
        while len(rows) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
            rows = read_predictions(settings, model="tiny")
    assert [r.text for r in rows] == texts
    assert [r.label for r in rows] == [p["label"] for p in answered]
    assert [r.score for r in rows] == pytest.approx([p["score"] for p in answered])
    assert {r.ref for r in rows} == {"tiny:v1"} and {r.key_name for r in rows} == {"scorer"}
    assert all(r.latency_ms > 0 for r in rows)


# --- what cannot be stored never blocks what can ---------------------------------------------


class Lost:
    """An ``on_lost`` that remembers what it was told."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}

    def __call__(self, reason: str, rows: int) -> None:
        self.rows[reason] = self.rows.get(reason, 0) + rows


def refused_row(text: str) -> LoggedPrediction:
    """A row the database refuses: version is NOT NULL (as a NaN score once was on SQLite)."""
    return LoggedPrediction("a", None, "pos", 0.5, 1.0, None, text)  # type: ignore[arg-type]


def test_a_row_the_database_refuses_is_dropped_and_counted_and_the_rest_written(
    settings: Settings,
) -> None:
    lost = Lost()
    log = PredictionLog(Registry(settings).engine, Policy(), on_lost=lost)

    async def run() -> None:
        for row in [
            prediction("a", 1, "pos", "before"),
            refused_row("bad"),
            prediction("a", 1, "neg", "after"),
        ]:
            log.add(row)
        await log.flush()
        log.add(prediction("a", 2, "pos", "later"))  # the next flush is not blocked either
        await log.flush()

    asyncio.run(run())
    assert [r.text for r in read_predictions(settings)] == ["before", "after", "later"]
    assert lost.rows == {"refused": 1}
    assert log.written == 3 and log.dropped == 1


def test_a_non_finite_score_is_never_logged(settings: Settings) -> None:
    lost = Lost()
    log = PredictionLog(Registry(settings).engine, Policy(), on_lost=lost)
    nan = LoggedPrediction("a", 1, "pos", float("nan"), 1.0, None, "nan")
    inf = LoggedPrediction("a", 1, "pos", float("inf"), 1.0, None, "inf")

    async def run() -> None:
        for row in [nan, prediction("a", 1, "pos", "fine"), inf]:
            log.add(row)
        await log.flush()

    asyncio.run(run())
    assert [r.text for r in read_predictions(settings)] == ["fine"]
    assert lost.rows == {"non_finite": 2}


def test_nul_characters_are_removed_from_logged_text(settings: Settings) -> None:
    write(settings, [prediction("a", 1, "pos", "nul\x00 in\x00side")])
    assert [r.text for r in read_predictions(settings)] == ["nul inside"]


def test_rows_wait_while_the_database_is_away_and_are_written_in_order_after(
    settings: Settings, tmp_path: Path
) -> None:
    from sqlalchemy import create_engine

    log = PredictionLog(Registry(settings).engine, Policy())
    engine = log.engine
    log.engine = create_engine(f"sqlite:///{tmp_path / 'no such folder' / 'x.db'}")

    async def run() -> None:
        log.add(prediction("a", 1, "pos", "first"))
        with pytest.raises(LogNotWritten):
            await log.flush()
        log.add(prediction("a", 1, "pos", "second"))
        log.engine = engine  # back
        await log.flush()

    asyncio.run(run())
    assert [r.text for r in read_predictions(settings)] == ["first", "second"]
    assert log.dropped == 0


def test_closing_writes_every_buffered_row_even_after_a_refused_one(settings: Settings) -> None:
    log = PredictionLog(Registry(settings).engine, Policy(flush_seconds=3600))

    async def run() -> None:
        log.start()
        log.add(prediction("a", 1, "pos", "one"))
        log.add(refused_row("bad"))
        log.add(prediction("a", 1, "pos", "two"))
        await log.close()

    asyncio.run(run())
    assert [r.text for r in read_predictions(settings)] == ["one", "two"]


def test_rows_still_unwritten_at_shutdown_are_counted(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import create_engine

    monkeypatch.setattr(predlog, "_CLOSE_RETRY_S", 0)
    lost = Lost()
    log = PredictionLog(Registry(settings).engine, Policy(flush_seconds=3600), on_lost=lost)
    log.engine = create_engine(f"sqlite:///{tmp_path / 'no such folder' / 'x.db'}")

    async def run() -> None:
        log.start()
        log.add(prediction("a", 1, "pos", "one"))
        log.add(prediction("a", 1, "pos", "two"))
        await log.close()

    asyncio.run(run())
    assert lost.rows == {"shutdown": 2}


def test_postgresql_logs_text_with_nul_and_drops_only_a_refused_row(
    postgres_url: str, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path / "pg-home", database_url=postgres_url)
    lost = Lost()
    log = PredictionLog(Registry(settings).engine, Policy(), on_lost=lost)
    assert log.engine.dialect.name == "postgresql"

    async def run() -> None:
        for row in [
            prediction("a", 1, "pos", "nul\x00here"),
            refused_row("bad"),
            prediction("a", 1, "pos", "after"),
        ]:
            log.add(row)
        await log.flush()

    asyncio.run(run())
    assert [r.text for r in read_predictions(settings)] == ["nulhere", "after"]
    assert lost.rows == {"refused": 1}


def test_an_older_table_gets_the_newer_columns_and_keeps_its_rows(settings: Settings) -> None:
    from sqlalchemy import inspect, text

    from lmforge.monitor.tables import create_tables
    from lmforge.registry.db import make_engine

    engine = make_engine(settings.resolved_database_url)
    with engine.begin() as conn:  # the table as the first servers created it
        conn.execute(
            text(
                "CREATE TABLE prediction_log (id INTEGER PRIMARY KEY, created_at DATETIME, "
                "model VARCHAR(64), version INTEGER, label VARCHAR(128), score FLOAT, "
                "latency_ms FLOAT, key_name VARCHAR(64), text TEXT)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO prediction_log (created_at, model, version, label, score, "
                "latency_ms) VALUES ('2026-11-02 09:00:00', 'old', 1, 'positive', 0.9, 2.0)"
            )
        )
    create_tables(engine)
    columns = {c["name"] for c in inspect(engine).get_columns("prediction_log")}
    assert {"prediction_id", "scores", "kind"} <= columns
    engine.dispose()
    (old,) = read_predictions(settings)
    assert (old.model, old.prediction_id, old.scores, old.kind) == ("old", None, None, None)
