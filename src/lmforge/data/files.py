"""Reading user data files (CSV, JSONL, Parquet) into a DataFrame."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd

from lmforge.errors import DataError, first_line

FileFormat = Literal["auto", "csv", "jsonl", "parquet"]
_SUFFIXES: dict[str, FileFormat] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def read_table(path: Path, fmt: FileFormat = "auto") -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"data file {path} not found", "check data.source.path in the recipe")
    if fmt == "auto":
        fmt = _SUFFIXES.get(path.suffix.lower(), "auto")
        if fmt == "auto":
            raise DataError(
                f"cannot tell the format of {path.name}",
                "set data.source.format to csv, jsonl or parquet",
            )
    try:
        if fmt == "csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        if fmt == "jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        return pd.read_parquet(path)
    except Exception as exc:  # pandas raises many types; all mean "unreadable file"
        raise DataError(
            f"cannot read {path} as {fmt}: {first_line(exc, None)}",
            "check the file, or set data.source.format",
        ) from exc
