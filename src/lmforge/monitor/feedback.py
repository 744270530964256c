"""Feedback on served predictions, and labelled examples, in the registry's database.

One event shape for every application (:class:`FeedbackEvent`): the correct ``label`` of a
prediction, whether it was ``correct``, a new labelled ``text`` for a ``model``, or an
interaction (``user_id``, ``item_id``, ``event`` click|rating, ``value``). Feedback on a
prediction is one row per ``prediction_id``: a repeat updates it (an upsert on the unique
column, on SQLite and PostgreSQL alike). Every write is one committed transaction before the
call returns, so a caller that acknowledges after it never loses an acknowledged row.

Labels are checked against the answering version's labels in the registry. Bulk import
(CSV/JSONL) is all or nothing, and its errors name the row and the column.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from lmforge.errors import LmforgeError
from lmforge.monitor.tables import FeedbackRow, PredictionLogRow, create_tables
from lmforge.registry import ModelVersion, Registry, parse_ref
from lmforge.registry.db import as_utc
from lmforge.settings import Settings

INTERACTIONS = ("click", "rating")
MAX_COMMENT = 2000  # characters
MAX_TEXT = 20_000  # characters of an example's text (the server's limits.max_chars is lower)
EXPORT_COLUMNS = (
    "id", "kind", "prediction_id", "model", "version", "predicted", "label", "correct", "text",
    "user_id", "item_id", "event", "value", "comment", "key_name", "created_at", "updated_at",
)  # fmt: skip


class FeedbackError(LmforgeError):
    """A feedback event that cannot be stored as it is (its shape or a value)."""


class UnknownPredictionError(FeedbackError):
    """No recorded prediction has this id (the HTTP layer answers 404)."""


class UnknownLabelError(FeedbackError):
    """A label the model does not have; the message names the valid ones."""


@dataclass(frozen=True)
class FeedbackEvent:
    """What a caller sends; :meth:`kind` says which of the four shapes it is."""

    prediction_id: str | None = None
    label: str | None = None
    correct: bool | None = None
    text: str | None = None
    model: str | None = None
    user_id: str | None = None
    item_id: str | None = None
    event: str | None = None
    value: float | None = None
    comment: str | None = None

    def kind(self) -> str:
        """``label``, ``correct``, ``example`` or ``interaction``; an error for other shapes."""
        if self.comment is not None and len(self.comment) > MAX_COMMENT:
            raise FeedbackError(
                f"the comment has {len(self.comment)} characters, over {MAX_COMMENT}",
                "shorten it",
            )
        interaction = (self.user_id, self.item_id, self.event, self.value)
        if self.prediction_id is not None:
            if self.text is not None or any(v is not None for v in interaction):
                raise _shape("feedback on a prediction takes only label, correct and comment")
            if self.label is None and self.correct is None:
                raise _shape("feedback on a prediction needs 'label' or 'correct'")
            return "label" if self.label is not None else "correct"
        if self.text is not None:
            if self.label is None or self.model is None or self.correct is not None:
                raise _shape("a labelled example is {text, label, model}")
            if not self.text.strip() or len(self.text) > MAX_TEXT:
                raise FeedbackError(
                    "an example's text must have 1 to 20,000 characters", "fix the text"
                )
            return "example"
        if self.user_id is not None or self.item_id is not None or self.event is not None:
            if not (self.user_id and self.item_id and self.event in INTERACTIONS):
                raise _shape("an interaction is {user_id, item_id, event: click|rating, value}")
            if self.event == "rating" and self.value is None:
                raise _shape("a rating needs a 'value'")
            if self.value is not None and not math.isfinite(self.value):
                raise FeedbackError("an interaction's value must be a finite number", "fix it")
            return "interaction"
        raise _shape("send {prediction_id, label}, {prediction_id, correct}, {text, label, model}")


def _storable(event: FeedbackEvent) -> FeedbackEvent:
    """The event with what no database can store taken out of its strings: NUL characters
    (PostgreSQL's text type refuses them; SQLite stores the same) and lone surrogates (not
    UTF-8, so neither driver can send them; each becomes '?')."""
    changes: dict[str, Any] = {}
    for f in fields(FeedbackEvent):
        value = getattr(event, f.name)
        if isinstance(value, str):
            clean = value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
            if clean != value:
                changes[f.name] = clean
    return replace(event, **changes) if changes else event


def _shape(problem: str) -> FeedbackError:
    return FeedbackError(problem, "see the feedback event schema in docs/serving.md")


@dataclass(frozen=True)
class Feedback:
    """One stored feedback row."""

    id: int
    kind: str
    prediction_id: str | None
    model: str | None
    version: int | None
    predicted: str | None  # the label the model answered (feedback on a prediction)
    label: str | None  # the correct label, where known
    correct: bool | None
    text: str | None
    user_id: str | None
    item_id: str | None
    event: str | None
    value: float | None
    comment: str | None
    key_name: str | None
    created_at: datetime
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        data["updated_at"] = self.updated_at.isoformat()
        return data


class FeedbackStore:
    """Feedback in the registry's database; labels are checked against the registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.engine = registry.engine
        create_tables(self.engine)

    def record(self, event: FeedbackEvent, key_name: str | None = None) -> Feedback:
        """Store one event (a repeated prediction id updates its row); committed on return."""
        with self.engine.begin() as conn:
            values = self._values(conn, event, key_name)
            row_id = self._write(conn, values)
        return self._get(row_id)

    def _values(
        self, conn: Connection, event: FeedbackEvent, key_name: str | None
    ) -> dict[str, Any]:
        event = _storable(event)
        kind = event.kind()
        values: dict[str, Any] = {
            "kind": kind,
            "comment": event.comment,
            "key_name": key_name,
            "updated_at": datetime.now(UTC),
        }
        if kind in ("label", "correct"):
            prediction = conn.execute(
                select(
                    PredictionLogRow.model, PredictionLogRow.version, PredictionLogRow.label
                ).where(PredictionLogRow.prediction_id == event.prediction_id)
            ).first()
            if prediction is None:
                raise UnknownPredictionError(
                    f"no prediction with id '{event.prediction_id}'",
                    "send a prediction_id a /v1/predict answer gave (kept for "
                    "prediction_log.retention_days)",
                )
            model, version, predicted = prediction
            label = event.label
            if event.correct is True:
                if label is not None and label != predicted:
                    raise _shape("correct: true with a label other than the predicted one")
                label = predicted
            elif event.correct is False and label is not None and label == predicted:
                raise _shape("correct: false with the predicted label")
            if label is not None:
                self.check_label(f"{model}:v{version}", label)
            correct = event.correct if event.correct is not None else label == predicted
            values.update(
                prediction_id=event.prediction_id,
                model=model,
                version=version,
                predicted=predicted,
                label=label,
                correct=correct,
            )
        elif kind == "example":
            assert event.model is not None and event.label is not None  # kind() checked
            answering = self.check_label(event.model, event.label)
            values.update(model=answering.name, version=answering.version, label=event.label)
            values["text"] = event.text
        else:
            named = self.registry.get(event.model).name if event.model is not None else None
            values.update(
                model=named,
                user_id=event.user_id,
                item_id=event.item_id,
                event=event.event,
                value=event.value if event.value is not None else 1.0,
            )
        return values

    def check_label(self, ref: str, label: str) -> ModelVersion:
        """The registered version ``ref``; an error naming its labels when it lacks ``label``."""
        version = self.registry.get(ref)
        if label not in version.labels:
            raise UnknownLabelError(
                f"'{label}' is not a label of {version.ref}",
                f"use one of: {', '.join(version.labels)}",
            )
        return version

    def _write(self, conn: Connection, values: dict[str, Any]) -> int:
        if values.get("prediction_id") is None:
            result = conn.execute(insert(FeedbackRow).values(**values))
            return int(result.inserted_primary_key[0])  # type: ignore[index]
        dialect = conn.dialect.name
        changes = {k: v for k, v in values.items() if k != "prediction_id"}
        if dialect in ("sqlite", "postgresql"):
            upsert = sqlite.insert if dialect == "sqlite" else postgresql.insert
            statement = upsert(FeedbackRow).values(**values)
            statement = statement.on_conflict_do_update(
                index_elements=["prediction_id"], set_=changes
            )
            conn.execute(statement)
        else:  # another database: update, else insert, in the same transaction
            updated = conn.execute(
                update(FeedbackRow)
                .where(FeedbackRow.prediction_id == values["prediction_id"])
                .values(**changes)
            )
            if not updated.rowcount:
                conn.execute(insert(FeedbackRow).values(**values))
        row_id = conn.execute(
            select(FeedbackRow.id).where(FeedbackRow.prediction_id == values["prediction_id"])
        ).scalar_one()
        return int(row_id)

    def _get(self, row_id: int) -> Feedback:
        with Session(self.engine) as session:
            row = session.get_one(FeedbackRow, row_id)
            return _feedback(row)

    def list(self, model: str | None = None, since: datetime | None = None) -> list[Feedback]:
        """Feedback oldest first; ``model`` keeps one name, ``since`` rows updated since then
        (a naive datetime is UTC)."""
        query = select(FeedbackRow).order_by(FeedbackRow.id)
        if model is not None:
            query = query.where(FeedbackRow.model == model)
        if since is not None:
            query = query.where(FeedbackRow.updated_at >= as_utc(since).astimezone(UTC))
        with Session(self.engine) as session:
            return [_feedback(r) for r in session.scalars(query)]

    def import_file(self, path: Path, model: str) -> int:
        """Store every row of a CSV/JSONL file of ``text,label`` or ``prediction_id,label``
        (optional ``comment``) for ``model``, all in one transaction; how many rows."""
        rows = list(_read_rows(path))
        if not rows:
            raise FeedbackError(f"{path} has no rows", "add text,label or prediction_id,label rows")
        with self.engine.begin() as conn:  # one transaction: any bad row and nothing is stored
            for number, row in rows:
                try:
                    event = _import_event(row, model)
                    values = self._values(conn, event, key_name=None)
                    if values["model"] != parse_ref(model)[0]:
                        raise FeedbackError(
                            f"the prediction was answered by '{values['model']}', not '{model}'",
                            "import it with that model's name",
                        )
                except LmforgeError as exc:
                    raise FeedbackError(
                        f"{path.name} row {number}, column {_column(exc, row)}: {exc.problem}",
                        exc.fix or "fix the row",
                    ) from exc
                self._write(conn, values)
        return len(rows)

    def export_file(self, path: Path) -> int:
        """Write every feedback row to ``path`` (``.csv``, else JSON lines), replacing it whole;
        how many rows."""
        rows = [f.to_json() for f in self.list()]
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
                if path.suffix.lower() == ".csv":
                    writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS)
                    writer.writeheader()
                    writer.writerows(rows)
                else:
                    for row in rows:
                        out.write(json.dumps(row, ensure_ascii=False) + "\n")
            os.replace(tmp, path)  # readers see the old file or the new one, never half of it
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return len(rows)


def _column(exc: LmforgeError, row: dict[str, Any]) -> str:
    """The column an import error is about, for its message."""
    if isinstance(exc, UnknownLabelError) or "label" in exc.problem:
        return "label"
    if isinstance(exc, UnknownPredictionError) or row.get("prediction_id"):
        return "prediction_id"
    return "text"


def _import_event(row: dict[str, Any], model: str) -> FeedbackEvent:
    def cell(name: str) -> str | None:
        value = row.get(name)
        return None if value is None or str(value).strip() == "" else str(value)

    label, text, prediction_id = cell("label"), cell("text"), cell("prediction_id")
    if label is None:
        raise FeedbackError("the label is empty", "give every row a label")
    if (text is None) == (prediction_id is None):
        raise FeedbackError("a row needs a text or a prediction_id (one of them)", "fix the row")
    if prediction_id is not None:
        return FeedbackEvent(prediction_id=prediction_id, label=label, comment=cell("comment"))
    return FeedbackEvent(text=text, label=label, model=model, comment=cell("comment"))


def _read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number, row) pairs: CSV rows numbered from 2 (after the header), JSON lines from 1."""
    if not path.is_file():
        raise FeedbackError(f"no file {path}", "give the path of a CSV or JSONL file")
    allowed = set(EXPORT_COLUMNS)  # an exported file imports as it is
    with path.open(encoding="utf-8", newline="") as f:
        if path.suffix.lower() == ".csv":
            reader = csv.DictReader(f)
            unknown = sorted(set(reader.fieldnames or []) - allowed)
            if unknown or not {"label"} <= set(reader.fieldnames or []):
                raise FeedbackError(
                    f"{path.name}: unknown or missing columns ({', '.join(unknown) or 'label'})",
                    "use text,label or prediction_id,label (optional comment)",
                )
            for number, row in enumerate(reader, start=2):
                yield number, row
            return
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise FeedbackError(
                    f"{path.name} row {number}: not JSON ({exc.msg})", "one JSON object a line"
                ) from exc
            if not isinstance(row, dict):
                raise FeedbackError(f"{path.name} row {number}: not a JSON object", "fix it")
            unknown = sorted(set(row) - allowed)
            if unknown:
                raise FeedbackError(
                    f"{path.name} row {number}, column {unknown[0]}: unknown column",
                    "use text,label or prediction_id,label (optional comment)",
                )
            yield number, row


def _feedback(row: FeedbackRow) -> Feedback:
    data = {f.name: getattr(row, f.name) for f in fields(Feedback)}
    data["created_at"] = as_utc(row.created_at)
    data["updated_at"] = as_utc(row.updated_at)
    return Feedback(**data)


# --- the library's entry points (the CLI calls these) ---------------------------------------


def _store(settings: Settings | None) -> FeedbackStore:
    return FeedbackStore(Registry(settings))


def record_feedback(
    event: FeedbackEvent, settings: Settings | None = None, key_name: str | None = None
) -> Feedback:
    """Store one feedback event; committed when this returns."""
    return _store(settings).record(event, key_name)


def list_feedback(
    model: str | None = None, since: datetime | None = None, settings: Settings | None = None
) -> list[Feedback]:
    """Stored feedback, oldest first (``model``: one name; ``since``: updated since then)."""
    return _store(settings).list(model, since)


def import_feedback(path: Path | str, model: str, settings: Settings | None = None) -> int:
    """Import a CSV/JSONL file of labelled rows for ``model``, all or nothing; how many."""
    return _store(settings).import_file(Path(path), model)


def export_feedback(path: Path | str, settings: Settings | None = None) -> int:
    """Write every feedback row to a CSV (``.csv``) or JSON-lines file; how many."""
    return _store(settings).export_file(Path(path))
