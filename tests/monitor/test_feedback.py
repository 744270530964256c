"""Feedback below the HTTP layer: the four event shapes, the upsert on a prediction id (SQLite
and PostgreSQL), label checks against the registry, bulk import (all or nothing, errors naming
row and column) and export; and the prediction log's compact record of every prediction, its
text sampling and its retention."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from conftest import lmforge, register_copy
from lmforge.errors import LmforgeError, ModelNotFoundError
from lmforge.monitor import (
    FeedbackError,
    FeedbackEvent,
    FeedbackStore,
    LoggedPrediction,
    PredictionLog,
    PredictionLogRow,
    UnknownLabelError,
    UnknownPredictionError,
    export_feedback,
    import_feedback,
    list_feedback,
    read_predictions,
    record_feedback,
)
from lmforge.registry import Registry
from lmforge.settings import Settings


@dataclass(frozen=True)
class Policy:
    sample_rate: float = 1.0
    include_text: bool = False
    flush_seconds: float = 0.05
    retention_days: float | None = None


@pytest.fixture
def settings(tmp_path: Path, tiny_model_dir: Path) -> Settings:
    settings = Settings(home=tmp_path / "home", database_url=None)
    register_copy(settings, tiny_model_dir, "tiny", stage="production")
    return settings


def predict(settings: Settings, *labels: str, policy: Policy = Policy()) -> list[str]:
    """Log one prediction of tiny:v1 per label, written; their ids."""
    log = PredictionLog(Registry(settings).engine, policy)

    async def run() -> list[str]:
        ids = [
            log.add(
                LoggedPrediction(
                    "tiny", 1, label, 0.8, 3.0, "k", f"text {i}", None, {label: 0.8, "x": 0.2}
                )
            )
            for i, label in enumerate(labels)
        ]
        await log.flush()
        return ids

    return asyncio.run(run())


def test_every_prediction_is_recorded_with_its_id_and_scores_and_no_text_by_default(
    settings: Settings,
) -> None:
    ids = predict(settings, "positive", "negative", "positive", policy=Policy(sample_rate=0.0))
    rows = read_predictions(settings)
    assert [r.prediction_id for r in rows] == ids and len(set(ids)) == 3
    assert all(len(i) == 32 for i in ids)
    assert rows[0].scores == {"positive": 0.8, "x": 0.2}
    assert [r.text for r in rows] == [None, None, None]


def test_with_include_text_a_sample_rate_share_keeps_its_text(settings: Settings) -> None:
    predict(settings, *["positive"] * 40, policy=Policy(sample_rate=0.5, include_text=True))
    rows = read_predictions(settings)
    kept = [r for r in rows if r.text is not None]
    assert len(rows) == 40 and 0 < len(kept) < 40


def test_the_writer_deletes_rows_past_the_retention(settings: Settings) -> None:
    old, new = predict(settings, "positive", "negative")
    engine = Registry(settings).engine
    with engine.begin() as conn:
        conn.execute(
            update(PredictionLogRow)
            .where(PredictionLogRow.prediction_id == old)
            .values(created_at=datetime.now(UTC) - timedelta(days=10))
        )
    assert PredictionLog(engine, Policy(retention_days=None)).purge() == 0
    assert PredictionLog(engine, Policy(retention_days=7)).purge() == 1
    assert [r.prediction_id for r in read_predictions(settings)] == [new]


def test_the_running_writer_applies_the_retention(settings: Settings) -> None:
    old, new = predict(settings, "positive", "negative")
    engine = Registry(settings).engine
    with engine.begin() as conn:
        conn.execute(
            update(PredictionLogRow)
            .where(PredictionLogRow.prediction_id == old)
            .values(created_at=datetime.now(UTC) - timedelta(days=2))
        )
    log = PredictionLog(engine, Policy(retention_days=1))

    async def run() -> None:
        log.start()
        for _ in range(200):  # the first round purges; no wall time is asserted
            await asyncio.sleep(0.05)
            if len(read_predictions(settings)) == 1:
                break
        await log.close()

    asyncio.run(run())
    assert [r.prediction_id for r in read_predictions(settings)] == [new]


def test_feedback_on_a_prediction_is_one_row_that_a_repeat_updates(settings: Settings) -> None:
    (pid,) = predict(settings, "positive")
    first = record_feedback(FeedbackEvent(prediction_id=pid, correct=True), settings, "k")
    assert (first.kind, first.label, first.correct, first.predicted) == (
        "correct",
        "positive",
        True,
        "positive",
    )
    assert (first.model, first.version, first.key_name) == ("tiny", 1, "k")
    second = record_feedback(
        FeedbackEvent(prediction_id=pid, label="negative", comment="sarcasm"), settings
    )
    assert second.id == first.id and second.updated_at >= first.updated_at
    assert (second.kind, second.label, second.correct, second.comment) == (
        "label",
        "negative",
        False,
        "sarcasm",
    )
    assert [f.id for f in list_feedback(settings=settings)] == [first.id]


def test_strings_lose_what_no_database_stores(settings: Settings) -> None:
    event = FeedbackEvent(text="a\x00b", label="positive", model="tiny", comment="x\ud800y")
    row = record_feedback(event, settings)
    assert (row.text, row.comment) == ("ab", "x?y")
    with pytest.raises(UnknownPredictionError):
        record_feedback(FeedbackEvent(prediction_id="\ud800", correct=True), settings)


def test_wrong_without_a_label_is_kept_as_incorrect(settings: Settings) -> None:
    (pid,) = predict(settings, "positive")
    row = record_feedback(FeedbackEvent(prediction_id=pid, correct=False), settings)
    assert (row.label, row.correct) == (None, False)


def test_unknown_id_and_unknown_label_are_refused_naming_the_fix(settings: Settings) -> None:
    (pid,) = predict(settings, "positive")
    with pytest.raises(UnknownPredictionError, match="no prediction with id 'nope'"):
        record_feedback(FeedbackEvent(prediction_id="nope", label="positive"), settings)
    with pytest.raises(UnknownLabelError, match="use one of: negative, positive"):
        record_feedback(FeedbackEvent(prediction_id=pid, label="neutral"), settings)
    with pytest.raises(UnknownLabelError, match="'meh' is not a label of tiny:v1"):
        record_feedback(FeedbackEvent(text="ok", label="meh", model="tiny"), settings)
    with pytest.raises(FeedbackError, match="answered by 'tiny', not 'other'"):
        record_feedback(FeedbackEvent(prediction_id=pid, correct=True, model="other"), settings)
    with pytest.raises(ModelNotFoundError):
        record_feedback(FeedbackEvent(text="ok", label="positive", model="other"), settings)
    assert list_feedback(settings=settings) == []


@pytest.mark.parametrize(
    ("event", "needle"),
    [
        (FeedbackEvent(), "send {prediction_id, label}"),
        (FeedbackEvent(prediction_id="x"), "needs 'label' or 'correct'"),
        (FeedbackEvent(prediction_id="x", text="t", label="positive"), "takes only"),
        (FeedbackEvent(text="t", label="positive"), "{text, label, model}"),
        (FeedbackEvent(user_id="u", item_id="i", event="rating"), "a rating needs a 'value'"),
        (FeedbackEvent(user_id="u", item_id="i", event="buy"), "click|rating"),
        (FeedbackEvent(label="positive", comment="x" * 2001), "over 2000"),
    ],
)
def test_malformed_events_get_one_line_errors(
    settings: Settings, event: FeedbackEvent, needle: str
) -> None:
    with pytest.raises(FeedbackError) as caught:
        record_feedback(event, settings)
    assert needle in caught.value.message and "\n" not in caught.value.message


def test_examples_and_interactions_are_stored_and_listed_by_model_and_time(
    settings: Settings,
) -> None:
    example = record_feedback(FeedbackEvent(text="great", label="positive", model="tiny"), settings)
    click = record_feedback(FeedbackEvent(user_id="u1", item_id="i9", event="click"), settings)
    rating = record_feedback(
        FeedbackEvent(user_id="u1", item_id="i9", event="rating", value=4.5, model="tiny"),
        settings,
    )
    assert (example.kind, example.model, example.version) == ("example", "tiny", 1)
    assert (click.kind, click.value, click.model) == ("interaction", 1.0, None)
    assert [f.id for f in list_feedback("tiny", settings=settings)] == [example.id, rating.id]
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert list_feedback(since=later, settings=settings) == []
    assert (
        len(list_feedback(since=later.replace(tzinfo=None) - timedelta(hours=1), settings=settings))
        == 3
    )


def test_import_export_round_trip(settings: Settings, tmp_path: Path) -> None:
    p1, p2 = predict(settings, "positive", "negative")
    source = tmp_path / "labels.csv"
    source.write_text(
        f"text,label,prediction_id,comment\nsuperb,positive,,\n,positive,{p2},fixed\n"
    )
    assert import_feedback(source, "tiny", settings) == 2
    exported = tmp_path / "out" / "feedback.jsonl"
    assert export_feedback(exported, settings) == 2
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert [(r["kind"], r["text"], r["prediction_id"], r["label"]) for r in lines] == [
        ("example", "superb", None, "positive"),
        ("label", None, p2, "positive"),
    ]
    # the export imports as it is (into a fresh database): the same labelled rows
    other = Settings(home=tmp_path / "other", database_url=None)
    register_copy(other, Path(Registry(settings).get("tiny").path), "tiny", stage="production")
    examples = tmp_path / "examples.csv"
    assert export_feedback(examples, settings) == 2
    kept = examples.read_text().splitlines()
    examples.write_text("\n".join(kept[:2]) + "\n")  # only the example: p2 is not in `other`
    assert import_feedback(examples, "tiny", other) == 1
    (copied,) = list_feedback(settings=other)
    assert (copied.kind, copied.text, copied.label) == ("example", "superb", "positive")
    assert p1 not in {f.prediction_id for f in list_feedback(settings=settings)}


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("a.csv", "text,label\nfine,positive\nbad,neutral\n", "a.csv row 3, column label"),
        ("b.csv", "text,label\nfine,positive\n,positive\n", "b.csv row 3, column text"),
        ("c.csv", "text,label\nfine,\n", "c.csv row 2, column label: the label is empty"),
        ("d.csv", "prediction_id,label\nnope,positive\n", "row 2, column prediction_id"),
        ("e.csv", "words,label\nfine,positive\n", "unknown or missing columns (words)"),
        ("f.jsonl", '{"text": "fine", "label": "positive"}\n{oops\n', "f.jsonl row 2: not JSON"),
        ("g.jsonl", '{"text": "x", "label": "positive", "wat": 1}\n', "row 1, column wat"),
        ("h.csv", "text,label\n", "has no rows"),
    ],
)
def test_a_bad_row_stores_nothing_and_names_row_and_column(
    settings: Settings, tmp_path: Path, name: str, content: str, needle: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(LmforgeError) as caught:
        import_feedback(path, "tiny", settings)
    assert needle in caught.value.message and "\n" not in caught.value.message
    assert list_feedback(settings=settings) == []


def test_importing_a_prediction_of_another_model_is_refused(
    settings: Settings, tmp_path: Path, tiny_model_dir: Path
) -> None:
    register_copy(settings, tiny_model_dir, "other")
    (pid,) = predict(settings, "positive")
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prediction_id": pid, "label": "negative"}) + "\n")
    with pytest.raises(FeedbackError, match="answered by 'tiny', not 'other'"):
        import_feedback(path, "other", settings)


def test_the_cli_imports_lists_and_exports(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"text": "lovely", "label": "positive"}) + "\n")
    home = settings.home
    done = lmforge("feedback", "import", str(path), "--model", "tiny", home=home)
    assert done.returncode == 0, done.stderr
    assert "imported 1 feedback rows" in done.stdout
    listed = lmforge("feedback", "list", "--model", "tiny", "--json", home=home)
    assert [r["text"] for r in json.loads(listed.stdout)] == ["lovely"]
    out = tmp_path / "out.csv"
    assert lmforge("feedback", "export", str(out), home=home).returncode == 0
    assert out.read_text().splitlines()[0].startswith("id,kind,prediction_id")
    bad = lmforge("feedback", "list", "--since", "yesterday", home=home)
    assert bad.returncode == 2 and "is not a date" in bad.stderr


def test_upsert_on_postgresql(postgres_url: str, tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = Settings(home=tmp_path / "pg-home", database_url=postgres_url)
    register_copy(settings, tiny_model_dir, "tiny", stage="production")
    (pid,) = predict(settings, "positive")
    store = FeedbackStore(Registry(settings))
    assert store.engine.dialect.name == "postgresql"
    a = store.record(FeedbackEvent(prediction_id=pid, correct=True))
    b = store.record(FeedbackEvent(prediction_id=pid, label="negative"))
    assert a.id == b.id and [f.label for f in store.list()] == ["negative"]
    assert store.record(FeedbackEvent(text="t", label="positive", model="tiny")).kind == "example"
