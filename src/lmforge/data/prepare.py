"""From a data source to clean, leakage-free, stratified train/validation/test splits.

Everything removed is counted, and the counts go into the data card written with each run, so a
user can see what the model was (and was not) trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from lmforge.data.files import read_table
from lmforge.data.sources import BUILTIN_SOURCES, load_builtin
from lmforge.data.text import clean_text, leakage_key
from lmforge.errors import DataError, first_line
from lmforge.recipe.schema import DataConfig, SourceConfig

MIN_ROWS_PER_LABEL = 5  # the floor; small held-out shares raise it (see _min_rows_per_label)


@dataclass
class PreparedData:
    train: pd.DataFrame  # columns: text, label
    validation: pd.DataFrame
    test: pd.DataFrame
    labels: list[str]
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def label_to_id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    def label_ids(self, split: Literal["train", "validation", "test"]) -> np.ndarray:
        """The integer label of every row of ``split`` (indices into ``labels``)."""
        ids = self.label_to_id
        frame: pd.DataFrame = getattr(self, split)
        return np.array([ids[v] for v in frame["label"]], dtype=np.int64)


def load_source(source: SourceConfig) -> pd.DataFrame:
    if source.builtin is not None:
        return load_builtin(source.builtin)
    assert source.path is not None  # guaranteed by the schema
    return read_table(source.path, source.format)


def prepare_data(cfg: DataConfig, *, require_labels: bool = True) -> PreparedData:
    src = cfg.source
    raw = load_source(src)
    name = src.builtin or str(src.path)
    missing = [c for c in (src.text_column, src.label_column) if c not in raw.columns]
    if not require_labels and src.label_column in missing:
        missing.remove(src.label_column)
    if missing:
        raise DataError(
            f"column '{missing[0]}' not in {name} "
            f"(columns there: {', '.join(map(str, raw.columns))})",
            "set data.source.text_column / label_column",
        )
    removed: dict[str, int] = {}
    df = pd.DataFrame({"text": raw[src.text_column]})
    df["label"] = _label_column(raw[src.label_column]) if src.label_column in raw.columns else ""
    fixed = _fixed_split_column(src)
    if fixed is not None:
        df["split"] = raw[fixed].astype(str)
    rows_raw = len(df)

    before = len(df)
    df = df[df["text"].notna() & df["label"].notna()]
    df = df.assign(text=df["text"].astype(str), label=df["label"].astype(str).str.strip())
    df = df[df["label"] != ""] if require_labels else df
    removed["missing_text_or_label"] = before - len(df)
    if df.empty:
        raise DataError(
            f"no rows left in {name}: none has both a text and a label (from {rows_raw})",
            f"check the columns '{src.text_column}' and '{src.label_column}'",
        )

    df = df.assign(text=[clean_text(t, cfg.cleaning) for t in df["text"]])
    lengths = df["text"].str.len()
    removed["too_short"] = int((lengths < max(cfg.cleaning.min_chars, 1)).sum())
    removed["too_long"] = int((lengths > cfg.cleaning.max_chars).sum())
    df = df[(lengths >= max(cfg.cleaning.min_chars, 1)) & (lengths <= cfg.cleaning.max_chars)]

    if cfg.cleaning.dedupe:
        before = len(df)
        df = df.drop_duplicates(subset=["text", "label"])
        removed["duplicates"] = before - len(df)
    # The same text under two labels teaches nothing and makes evaluation noisy: drop all copies.
    key = df["text"].map(leakage_key)
    conflicting = key.map(df.groupby(key)["label"].nunique()) > 1
    removed["conflicting_labels"] = int(conflicting.sum())
    df = df[~conflicting.to_numpy()].reset_index(drop=True)

    if df.empty:
        raise DataError(
            f"no rows left in {name} after cleaning (from {rows_raw})",
            "check the text column and the cleaning.min_chars/max_chars limits",
        )
    if src.limit is not None and len(df) > src.limit:
        if fixed is None:
            df = _stratified_sample(df, src.limit, cfg.split.seed)
        else:  # the held-out parts are fixed by the source: only the train part is cut
            df = _limit_train(df, src.limit, cfg.split.seed)

    counts = df["label"].value_counts()
    if require_labels and len(counts) < 2:
        raise DataError(
            f"{name} has a single label ({counts.index[0]!r}) after cleaning",
            "classification needs at least two labels; check data.source.label_column",
        )
    least = _min_rows_per_label(cfg)
    rare = counts[counts < least]
    if require_labels and len(rare):
        raise DataError(
            f"label {rare.index[0]!r} has only {int(rare.iloc[0])} rows",
            f"give each label at least {least} rows for this split, or merge/drop it",
        )
    if fixed is None:
        train, validation, test = _split(df, cfg, stratify=require_labels)
    else:
        train, validation, test = (
            df[df["split"] == part].drop(columns="split").reset_index(drop=True)
            for part in ("train", "validation", "test")
        )
    train, validation, test, leaks = _remove_leakage(train, validation, test)
    removed.update(leaks)
    labels = sorted(df["label"].unique().tolist()) if require_labels else []
    card = {
        "source": name,
        "text_column": src.text_column,
        "label_column": src.label_column,
        "rows_raw": rows_raw,
        "rows_used": len(train) + len(validation) + len(test),
        "removed": removed,
        "cleaning": cfg.cleaning.model_dump(),
        "split": (cfg.split.model_dump() if fixed is None else {"fixed_by_source_column": fixed}),
        "labels": labels,
        "splits": _splits_card(train, validation, test),
    }
    return PreparedData(train, validation, test, labels, card)


MIN_PAIRS = 20  # fewer cannot train in-batch negatives and still leave a test set


@dataclass
class PairData:
    """Positive pairs (text, pair) for a similarity model, e.g. a question and its answer."""

    train: pd.DataFrame  # columns: text, pair
    validation: pd.DataFrame
    test: pd.DataFrame
    card: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def pairs(frame: pd.DataFrame) -> list[tuple[str, str]]:
        return list(zip(frame["text"], frame["pair"], strict=True))


def prepare_pairs(cfg: DataConfig) -> PairData:
    """Clean, deduplicated, leakage-free random splits of (text, pair) rows."""
    src = cfg.source
    name = src.builtin or str(src.path)
    if src.pair_column is None:
        raise DataError(
            "a similarity recipe needs data.source.pair_column",
            "name the column holding each text's partner (e.g. answer)",
        )
    raw = load_source(src)
    missing = [c for c in (src.text_column, src.pair_column) if c not in raw.columns]
    if missing:
        raise DataError(
            f"column '{missing[0]}' not in {name} "
            f"(columns there: {', '.join(map(str, raw.columns))})",
            "set data.source.text_column / pair_column",
        )
    df = pd.DataFrame({"text": raw[src.text_column], "pair": raw[src.pair_column]}).dropna()
    rows_raw = len(raw)
    df = df.assign(
        text=[clean_text(str(t), cfg.cleaning) for t in df["text"]],
        pair=[clean_text(str(t), cfg.cleaning) for t in df["pair"]],
    )
    lower, upper = max(cfg.cleaning.min_chars, 1), cfg.cleaning.max_chars
    for column in ("text", "pair"):
        lengths = df[column].str.len()
        df = df[(lengths >= lower) & (lengths <= upper)]
    if cfg.cleaning.dedupe:
        df = df.drop_duplicates(subset=["text", "pair"])
    df = df.reset_index(drop=True)
    if src.limit is not None and len(df) > src.limit:
        df = df.sample(n=src.limit, random_state=cfg.split.seed).reset_index(drop=True)
    if len(df) < MIN_PAIRS:
        raise DataError(
            f"{name} has {len(df)} usable pairs after cleaning (from {rows_raw})",
            f"give at least {MIN_PAIRS} (text, {src.pair_column}) rows",
        )
    train, validation, test = _split(df, cfg, stratify=False)
    train, validation, test, leaks = _remove_leakage(train, validation, test)
    card = {
        "source": name,
        "text_column": src.text_column,
        "pair_column": src.pair_column,
        "rows_raw": rows_raw,
        "rows_used": len(train) + len(validation) + len(test),
        "removed": {"cleaning_or_duplicates": rows_raw - len(df), **leaks},
        "cleaning": cfg.cleaning.model_dump(),
        "split": cfg.split.model_dump(),
        "labels": [],
        "splits": _splits_card(train, validation, test),
    }
    return PairData(train, validation, test, card)


def _splits_card(
    train: pd.DataFrame, validation: pd.DataFrame, test: pd.DataFrame
) -> dict[str, dict[str, Any]]:
    """Rows, rows per label (where there are labels) and mean length of each split."""
    return {
        name: {
            "rows": len(part),
            "labels": (
                {k: int(v) for k, v in part["label"].value_counts().sort_index().items()}
                if "label" in part
                else {}
            ),
            "mean_chars": round(float(part["text"].str.len().mean()), 1) if len(part) else 0.0,
        }
        for name, part in (("train", train), ("validation", validation), ("test", test))
    }


def _label_column(labels: pd.Series) -> pd.Series:
    """Labels as strings; integer labels read as floats (because of a gap) keep their names."""
    if pd.api.types.is_float_dtype(labels):
        whole = labels.dropna()
        if (whole == whole.round()).all():
            return labels.astype("Int64").astype(object).where(labels.notna(), None)
    return labels


def _min_rows_per_label(cfg: DataConfig) -> int:
    """Enough rows that a stratified cut leaves two of each label in the held-out share."""
    return max(MIN_ROWS_PER_LABEL, math.ceil(2 / (cfg.split.validation + cfg.split.test)))


def _fixed_split_column(src: SourceConfig) -> str | None:
    """The column a built-in source fixes its train/validation/test cut by, if any."""
    info = BUILTIN_SOURCES.get(src.builtin) if src.builtin is not None else None
    return info.split_column if info is not None else None


def _limit_train(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most ``n`` train rows (a seeded stratified sample); the held-out rows all stay."""
    train = df[df["split"] == "train"]
    if len(train) <= n:
        return df
    kept = _stratified_sample(train, n, seed)
    return pd.concat([kept, df[df["split"] != "train"]], ignore_index=True)


def _stratified_sample(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    sample, _ = train_test_split(df, train_size=n, random_state=seed, stratify=df["label"])
    return sample.reset_index(drop=True)


def _split(
    df: pd.DataFrame, cfg: DataConfig, *, stratify: bool
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    held_out = cfg.split.validation + cfg.split.test
    try:
        strat = df["label"] if stratify else None
        train, rest = train_test_split(
            df, test_size=held_out, random_state=cfg.split.seed, stratify=strat
        )
        strat_rest = rest["label"] if stratify else None
        validation, test = train_test_split(
            rest,
            test_size=cfg.split.test / held_out,
            random_state=cfg.split.seed,
            stratify=strat_rest,
        )
    except ValueError as exc:  # scikit-learn: too few rows of a label for a stratified cut
        raise DataError(
            f"cannot split {len(df)} rows into stratified train/validation/test "
            f"({first_line(exc, None)})",
            "add rows to the rarest labels, or raise data.split.validation/test",
        ) from exc
    return tuple(p.reset_index(drop=True) for p in (train, validation, test))


def _remove_leakage(
    train: pd.DataFrame, validation: pd.DataFrame, test: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Held-out rows whose normalised text is also in an earlier split are dropped from it."""
    seen = set(train["text"].map(leakage_key))
    val_keys = validation["text"].map(leakage_key)
    val_leak = val_keys.isin(seen)
    seen |= set(val_keys)
    test_leak = test["text"].map(leakage_key).isin(seen)
    leaks = {"leakage_validation": int(val_leak.sum()), "leakage_test": int(test_leak.sum())}
    return (
        train,
        validation[~val_leak].reset_index(drop=True),
        test[~test_leak].reset_index(drop=True),
        leaks,
    )


def data_card_markdown(card: dict[str, Any]) -> str:
    lines = [
        f"# Data card — {card['source']}",
        "",
        f"- rows in source: {card['rows_raw']}; rows used: {card['rows_used']}",
        f"- labels: {', '.join(card['labels'])}",
        "",
        "| split | rows | " + " | ".join(card["labels"]) + " | mean chars |",
        "|---|---|" + "---|" * len(card["labels"]) + "---|",
    ]
    for split_name, info in card["splits"].items():
        per = " | ".join(str(info["labels"].get(lbl, 0)) for lbl in card["labels"])
        lines.append(f"| {split_name} | {info['rows']} | {per} | {info['mean_chars']} |")
    lines += ["", "## Removed", "", "| reason | rows |", "|---|---|"]
    lines += [f"| {reason} | {n} |" for reason, n in card["removed"].items()]
    lines += [
        "",
        "Cleaning: " + ", ".join(f"{k}={v}" for k, v in card["cleaning"].items()) + ".",
        "Leakage: held-out rows whose case/punctuation-insensitive text also appears in an "
        "earlier split are removed; texts seen with two different labels are removed everywhere.",
    ]
    return "\n".join(lines) + "\n"
