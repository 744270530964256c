"""Feedback on served predictions, and labelled examples, in the registry's database.

One event shape for every application (:class:`FeedbackEvent`): the correct ``label`` of a
prediction, whether it was ``correct``, a new labelled ``text`` for a ``model``, or an
interaction (``user_id``, ``item_id``, ``event`` click|rating, ``value``). Feedback on a
prediction is one row per ``prediction_id``: a repeat updates it (an upsert on the unique
column, on SQLite and PostgreSQL alike). Every write is one committed transaction before the
call returns, so a caller that acknowledges after it never loses an acknowledged row.

Labels are checked against the answering version's labels in the registry. Bulk import and
export (CSV/JSONL) are in :mod:`lmforge.monitor.feedback_files`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
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
#: The prediction log's ``kind`` of an assistant's answer: feedback on it is only ``correct``.
ASSISTANT = "assistant"
MAX_COMMENT = 2000  # characters
MAX_TEXT = 20_000  # characters of an example's text (the server's limits.max_chars is lower)


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
            values = self.values_of(conn, event, key_name)
            row_id = self.write(conn, values)
        return self._get(row_id)

    def values_of(
        self, conn: Connection, event: FeedbackEvent, key_name: str | None
    ) -> dict[str, Any]:
        """The row to write for ``event`` (checked against the log and the registry), or the
        error that refuses it."""
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
                    PredictionLogRow.model,
                    PredictionLogRow.version,
                    PredictionLogRow.label,
                    PredictionLogRow.kind,
                ).where(PredictionLogRow.prediction_id == event.prediction_id)
            ).first()
            if prediction is None:
                raise UnknownPredictionError(
                    f"no prediction with id '{event.prediction_id}'",
                    "send a prediction_id a /v1/predict answer gave (kept for "
                    "prediction_log.retention_days)",
                )
            model, version, predicted, answered_by = prediction
            if answered_by == ASSISTANT and kind != "correct":
                raise FeedbackError(
                    "feedback on an assistant answer takes only 'correct' (it has no labels)",
                    "send {prediction_id, correct: true|false}",
                )
            if event.model is not None and parse_ref(event.model)[0] != model:
                raise _shape(f"the prediction was answered by '{model}', not '{event.model}'")
            label = event.label
            if event.correct is True:
                if label is not None and label != predicted:
                    raise _shape("correct: true with a label other than the predicted one")
                label = predicted
            elif event.correct is False and label is not None and label == predicted:
                raise _shape("correct: false with the predicted label")
            if label is not None and answered_by != ASSISTANT:
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

    def write(self, conn: Connection, values: dict[str, Any]) -> int:
        """Insert the row, or update the one of its prediction id; the row's id."""
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
