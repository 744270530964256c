"""Feedback in bulk: import a CSV/JSONL file of labelled rows (all or nothing, errors naming the
row and the column) and export every feedback row, for analysts who label outside the API.

The rows go through :class:`~lmforge.monitor.feedback.FeedbackStore`'s checks (labels, known
prediction ids) inside one transaction; an exported file imports as it is.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.monitor.feedback import (
    FeedbackError,
    FeedbackEvent,
    FeedbackStore,
    UnknownLabelError,
    UnknownPredictionError,
)
from lmforge.registry import Registry, parse_ref
from lmforge.settings import Settings

EXPORT_COLUMNS = (
    "id", "kind", "prediction_id", "model", "version", "predicted", "label", "correct", "text",
    "user_id", "item_id", "event", "value", "comment", "key_name", "created_at", "updated_at",
)  # fmt: skip


def import_rows(store: FeedbackStore, path: Path, model: str) -> int:
    """Store every row of a CSV/JSONL file of ``text,label`` or ``prediction_id,label``
    (optional ``comment``) for ``model``, all in one transaction; how many rows."""
    rows = list(_read_rows(path))
    if not rows:
        raise FeedbackError(f"{path} has no rows", "add text,label or prediction_id,label rows")
    with store.engine.begin() as conn:  # one transaction: any bad row and nothing is stored
        for number, row in rows:
            try:
                event = _import_event(row, model)
                values = store.values_of(conn, event, key_name=None)
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
            store.write(conn, values)
    return len(rows)


def export_rows(store: FeedbackStore, path: Path) -> int:
    """Write every feedback row to ``path`` (``.csv``, else JSON lines), replacing it whole;
    how many rows."""
    rows = [f.to_json() for f in store.list()]
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


def import_feedback(path: Path | str, model: str, settings: Settings | None = None) -> int:
    """Import a CSV/JSONL file of labelled rows for ``model``, all or nothing; how many."""
    return import_rows(FeedbackStore(Registry(settings)), Path(path), model)


def export_feedback(path: Path | str, settings: Settings | None = None) -> int:
    """Write every feedback row to a CSV (``.csv``) or JSON-lines file; how many."""
    return export_rows(FeedbackStore(Registry(settings)), Path(path))
