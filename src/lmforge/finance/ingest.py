"""Where headlines come from: a built-in source replayed by date, a JSONL or CSV file, or stdin.

Every source yields :class:`Headline` rows (id, time, text). A row that cannot be used is
refused with one line naming the row and the fix — the whole input is checked before anything
is scored, so a bad file stores nothing. A time is ISO 8601 (``2020-02-24`` or
``2020-02-24T09:30:00Z``); a time without a zone is UTC. A row without an id gets one from its
time and text, so the same headline sent twice is stored once.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, TextIO

from lmforge.errors import DataError

__all__ = [
    "MAX_TEXT_CHARS",
    "REPLAY_SOURCES",
    "Headline",
    "headline_from",
    "parse_speed",
    "parse_time",
    "read_headlines",
    "replay_days",
]

MAX_TEXT_CHARS = 2000  # a headline, not an article: longer rows are a wrong column
MAX_ID_CHARS = 128
# Built-in sources with a date column that can be replayed (data.sources.load_builtin names).
REPLAY_SOURCES = ("guardian_headlines",)

_TIME_FIX = "write ISO 8601, e.g. 2020-02-24 or 2020-02-24T09:30:00Z"


@dataclass(frozen=True)
class Headline:
    """One headline to score: a stable ``id``, when it was published (UTC) and its text."""

    id: str
    time: datetime
    text: str


def parse_time(value: Any, where: str) -> datetime:
    """An ISO 8601 date or time as an aware UTC datetime; ``where`` names the row in the error."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime.combine(value, time(0))
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            # Python < 3.11 rejects a trailing Z; 3.11+ takes it, this keeps both
            parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            raise DataError(f"{where}: time '{text[:40]}' cannot be parsed", _TIME_FIX) from None
    else:
        raise DataError(f"{where}: 'time' is missing or empty", _TIME_FIX)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def headline_from(raw: Mapping[str, Any], where: str) -> Headline:
    """A headline from one input row (keys ``text``, ``time`` — or ``date`` — and ``id``)."""
    text = raw.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: 'text' is missing or empty", "give every row a headline text")
    if len(text) > MAX_TEXT_CHARS:
        raise DataError(
            f"{where}: 'text' has {len(text)} characters, over {MAX_TEXT_CHARS}",
            "send the headline, not the article",
        )
    stamp = parse_time(raw.get("time", raw.get("date")), where)
    given = raw.get("id")
    if given is None or (isinstance(given, str) and not given.strip()):
        digest = hashlib.sha1(f"{stamp.isoformat()}\x1f{text}".encode()).hexdigest()
        row_id = f"h{digest[:20]}"
    elif isinstance(given, bool) or not isinstance(given, str | int):
        raise DataError(f"{where}: 'id' must be a string or an integer", "fix the id")
    else:
        row_id = str(given).strip()
    if len(row_id) > MAX_ID_CHARS:
        raise DataError(f"{where}: 'id' is over {MAX_ID_CHARS} characters", "shorten the id")
    return Headline(id=row_id, time=stamp, text=text.strip())


def read_headlines(path: Path | None, stdin: TextIO | None = None) -> list[Headline]:
    """Every headline of a JSONL or CSV file (by its suffix), or of stdin (``path`` None: JSONL
    when the first character is ``{``, else CSV with a header). Nothing is returned unless every
    row is usable."""
    if path is None:
        content = (stdin or sys.stdin).read()
        kind = "jsonl" if content.lstrip().startswith("{") else "csv"
        name = "stdin"
    else:
        if not path.is_file():
            raise DataError(f"headline file {path} not found", "check the path given to --file")
        content = path.read_text(encoding="utf-8")
        kind = "csv" if path.suffix.lower() == ".csv" else "jsonl"
        name = str(path)
    rows = _jsonl_rows(content, name) if kind == "jsonl" else _csv_rows(content, name)
    headlines = [headline_from(raw, where) for where, raw in rows]
    if not headlines:
        raise DataError(f"{name} holds no headlines", "give one row per headline: text and time")
    return headlines


def _jsonl_rows(content: str, name: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for number, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{name} line {number}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not JSON ({exc.msg})", "one JSON object per line") from None
        if not isinstance(raw, dict):
            raise DataError(f"{where}: not a JSON object", 'write {"text": ..., "time": ...}')
        yield where, raw


def _csv_rows(content: str, name: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    reader = csv.DictReader(io.StringIO(content))
    columns = set(reader.fieldnames or [])
    if "text" not in columns or not columns & {"time", "date"}:
        raise DataError(
            f"{name}: the CSV header has no 'text' and 'time' columns",
            "give a header row naming text, time (or date) and optionally id",
        )
    for number, raw in enumerate(reader, 2):  # line 1 is the header
        yield f"{name} row {number}", raw


_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$")
_UNIT_SECONDS = {
    "s": 1,
    "sec": 1,
    "m": 60,
    "min": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
}


def parse_speed(text: str) -> float:
    """``"1day=1s"`` (simulated span = wall span) → wall seconds per simulated day; ``"max"``
    (or ``0``) → 0: as fast as the model scores."""
    if text.strip().lower() in ("max", "0"):
        return 0.0
    left, sep, right = text.partition("=")
    spans = [_SPAN.match(part.lower()) for part in (left, right)]
    if not sep or spans[0] is None or spans[1] is None:
        raise DataError(f"speed '{text}' is not SPAN=SPAN", "write e.g. 1day=1s, 1h=0.1s or max")
    seconds = []
    for found in spans:
        assert found is not None
        unit = _UNIT_SECONDS.get(found.group(2))
        if unit is None:
            raise DataError(f"speed '{text}': unknown unit '{found.group(2)}'", "use s, m, h or d")
        seconds.append(float(found.group(1)) * unit)
    if seconds[0] <= 0:
        raise DataError(f"speed '{text}': the simulated span must be positive", "e.g. 1day=1s")
    return seconds[1] / seconds[0] * 86400


def replay_days(source: str) -> list[tuple[date, list[Headline]]]:
    """A built-in source's headlines grouped by day, oldest first; each id is
    ``SOURCE:ROW`` (the row number in the source, so labelled subsets join on it)."""
    from lmforge.data.sources import load_builtin

    if source not in REPLAY_SOURCES:
        raise DataError(
            f"unknown replay source '{source}'",
            f"use one of: {', '.join(REPLAY_SOURCES)} (or --file for your own headlines)",
        )
    frame = load_builtin(source)
    days: dict[date, list[Headline]] = {}
    for row, (text, stamp) in enumerate(zip(frame["text"], frame["date"], strict=True)):
        when = datetime.combine(stamp.date(), time(0), UTC)
        days.setdefault(when.date(), []).append(Headline(f"{source}:{row}", when, str(text)))
    return sorted(days.items())


def day_end(day: date) -> datetime:
    """The moment a day's headlines are complete: the next midnight, UTC."""
    return datetime.combine(day, time(0), UTC) + timedelta(days=1)
