"""Cleaning, de-duplication, leakage removal, stratified splits and the data card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from lmforge.data import PreparedData, data_card_markdown, load_source, prepare_data
from lmforge.data.files import read_table
from lmforge.data.prepare import MIN_ROWS_PER_LABEL, clean_text
from lmforge.data.text import leakage_key
from lmforge.errors import DataError
from lmforge.recipe.schema import CleaningConfig, DataConfig, SourceConfig, SplitConfig

WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "ember",
    "maple",
    "quartz",
    "tiger",
    "violet",
    "zephyr",
]


def _text(label: str, i: int) -> str:
    """A unique text per (label, i), unique also under the case/punctuation-insensitive key."""
    return f"{label} {WORDS[i % len(WORDS)]} {WORDS[(i // len(WORDS)) % len(WORDS)]} item {i}"


def _frame(counts: dict[str, int]) -> pd.DataFrame:
    rows = [(_text(label, i), label) for label, n in counts.items() for i in range(n)]
    return pd.DataFrame(rows, columns=["text", "label"])


def _write(df: pd.DataFrame, path: Path) -> Path:
    suffix = path.suffix
    if suffix == ".csv":
        df.to_csv(path, index=False)
    elif suffix in (".jsonl", ".json", ".ndjson"):
        df.to_json(path, orient="records", lines=True, force_ascii=False)
    elif suffix in (".parquet", ".pq"):
        df.to_parquet(path, index=False)
    else:
        raise ValueError(suffix)
    return path


def _config(path: Path, *, seed: int = 42, **source: Any) -> DataConfig:
    cleaning = source.pop("cleaning", CleaningConfig())
    return DataConfig(
        source=SourceConfig(path=path, **source), cleaning=cleaning, split=SplitConfig(seed=seed)
    )


def _prepare(
    tmp_path: Path, df: pd.DataFrame, name: str = "rows.csv", **kwargs: Any
) -> PreparedData:
    return prepare_data(_config(_write(df, tmp_path / name), **kwargs))


def _all_texts(data: PreparedData) -> list[str]:
    return [*data.train["text"], *data.validation["text"], *data.test["text"]]


def _one_line_error(excinfo: pytest.ExceptionInfo[DataError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    assert excinfo.value.fix, "a DataError names the fix"
    assert " — " in message
    return message


# --- read_table --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rows.csv", "rows.jsonl", "rows.json", "rows.parquet", "rows.pq"])
def test_read_table_formats(tmp_path: Path, name: str) -> None:
    df = pd.DataFrame(
        {"text": ["héllo", "中文, with comma", 'quote "x"'], "label": ["a", "b", "a"]}
    )
    got = read_table(_write(df, tmp_path / name))
    assert got["text"].tolist() == df["text"].tolist()
    assert got["label"].tolist() == df["label"].tolist()


def test_read_table_csv_keeps_strings(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("text,label\n007,1\nNA,0\n,1\n", encoding="utf-8")
    got = read_table(path)
    assert got["text"].tolist() == ["007", "NA", ""]  # no int parsing, no NA guessing
    assert got["label"].tolist() == ["1", "0", "1"]


def test_read_table_explicit_format_overrides_suffix(tmp_path: Path) -> None:
    path = tmp_path / "rows.txt"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n', encoding="utf-8")
    assert read_table(path, "jsonl")["text"].tolist() == ["a", "b"]


def test_read_table_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        read_table(tmp_path / "nope.csv")
    message = _one_line_error(info)
    assert "not found" in message
    assert "data.source.path" in message


def test_read_table_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "rows.xlsx"
    path.write_text("whatever", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_table(path)
    message = _one_line_error(info)
    assert "rows.xlsx" in message
    assert "data.source.format" in message


def test_read_table_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    path.write_bytes(b"this is not a parquet file\n" * 10)
    with pytest.raises(DataError) as info:
        read_table(path)
    message = _one_line_error(info)
    assert "cannot read" in message
    assert "parquet" in message


def test_read_table_truncated_parquet(tmp_path: Path) -> None:
    path = _write(_frame({"a": 20, "b": 20}), tmp_path / "rows.parquet")
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataError, match="cannot read"):
        read_table(path)


def test_read_table_corrupt_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": oops\n', encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_table(path)
    assert "cannot read" in _one_line_error(info)


# --- cleaning ----------------------------------------------------------------------------------


def test_clean_text_nfkc_and_whitespace() -> None:
    cfg = CleaningConfig()
    assert clean_text("ＡＢＣ", cfg) == "ABC"
    assert clean_text("a\n\n b", cfg) == "a b"
    assert clean_text("  x\t\ty \u3000z  ", cfg) == "x y z"
    assert clean_text("ｶﾞ①", cfg) == "ガ1"
    raw = CleaningConfig(unicode_nfkc=False, collapse_whitespace=False)
    assert clean_text("ＡＢＣ", raw) == "ＡＢＣ"
    assert clean_text(" a\n\n b ", raw) == "a\n\n b"  # still stripped at the ends


def test_leakage_key_ignores_case_punctuation_and_spacing() -> None:
    assert leakage_key("Hello, World!") == leakage_key("hello   world")
    assert leakage_key("ＨＥＬＬＯ world") == leakage_key("hello_world")
    assert leakage_key("hello world") != leakage_key("hello there")


def test_prepare_normalises_texts(tmp_path: Path) -> None:
    df = _frame({"pos": 20, "neg": 20})
    extra = pd.DataFrame({"text": ["ＡＢＣ", "a\n\n b", "  padded\ttext  "], "label": ["pos"] * 3})
    data = _prepare(tmp_path, pd.concat([df, extra]), name="rows.jsonl")
    texts = _all_texts(data)
    assert "ABC" in texts
    assert "a b" in texts
    assert "padded text" in texts
    assert "ＡＢＣ" not in texts
    assert all(t == t.strip() and "\n" not in t for t in texts)


def test_exact_duplicates_counted(tmp_path: Path) -> None:
    df = _frame({"pos": 20, "neg": 20})
    dupes = pd.concat([df.iloc[[0, 0, 1]], df.iloc[[30]]])  # 4 extra copies
    # identical after NFKC: also an exact duplicate of the cleaned text
    width = pd.DataFrame({"text": ["ＸＹＺ", "XYZ"], "label": ["pos", "pos"]})
    data = _prepare(tmp_path, pd.concat([df, dupes, width]), name="rows.jsonl")
    assert data.card["removed"]["duplicates"] == 5
    texts = _all_texts(data)
    assert len(texts) == len(set(texts))
    assert data.card["rows_raw"] == 40 + 4 + 2
    assert data.card["rows_used"] == len(texts) == 41


def test_dedupe_off_keeps_duplicates(tmp_path: Path) -> None:
    df = _frame({"pos": 20, "neg": 20})
    data = _prepare(
        tmp_path, pd.concat([df, df.iloc[[0, 1]]]), cleaning=CleaningConfig(dedupe=False)
    )
    assert "duplicates" not in data.card["removed"]
    assert data.card["rows_raw"] == 42
    total = len(_all_texts(data)) + data.card["removed"]["leakage_validation"]
    assert total + data.card["removed"]["leakage_test"] == 42


def test_conflicting_labels_removed_everywhere(tmp_path: Path) -> None:
    df = _frame({"pos": 20, "neg": 20})
    conflict = pd.DataFrame(
        {
            "text": [
                "the same words",
                "the same words",
                "the same words",
                "Great film!",
                "great film",
            ],
            "label": ["pos", "neg", "pos", "pos", "neg"],
        }
    )
    data = _prepare(tmp_path, pd.concat([df, conflict]))
    removed = data.card["removed"]
    assert removed["duplicates"] == 1  # the repeated (text, pos) row goes first
    assert removed["conflicting_labels"] == 4
    keys = {leakage_key(t) for t in _all_texts(data)}
    assert leakage_key("the same words") not in keys
    assert leakage_key("great film") not in keys
    assert data.card["rows_used"] == 40


def test_cross_split_leakage_removed(tmp_path: Path) -> None:
    # 30 base texts per label, each also written twice more with other case and punctuation:
    # not exact duplicates, same label, so they survive dedupe and reach the split.
    base = _frame({"pos": 30, "neg": 30})
    variants = pd.concat(
        [
            base.assign(text=base["text"].str.upper() + "!"),
            base.assign(text=base["text"].str.replace(" ", ", ") + "."),
        ]
    )
    df = pd.concat([base, variants], ignore_index=True)
    data = _prepare(tmp_path, df)
    removed = data.card["removed"]
    assert removed["duplicates"] == 0
    assert removed["conflicting_labels"] == 0
    leaked = removed["leakage_validation"] + removed["leakage_test"]
    assert leaked > 0
    assert removed["leakage_validation"] > 0
    assert removed["leakage_test"] > 0
    train = set(data.train["text"].map(leakage_key))
    validation = set(data.validation["text"].map(leakage_key))
    test = set(data.test["text"].map(leakage_key))
    assert not train & validation
    assert not train & test
    assert not validation & test
    assert data.card["rows_used"] + leaked == len(df)
    assert data.card["splits"]["validation"]["rows"] == len(data.validation)
    assert data.card["splits"]["test"]["rows"] == len(data.test)


def test_no_leakage_counts_zero_on_clean_data(tmp_path: Path) -> None:
    data = _prepare(tmp_path, _frame({"pos": 30, "neg": 30}))
    removed = data.card["removed"]
    assert removed["leakage_validation"] == removed["leakage_test"] == 0
    assert removed["duplicates"] == removed["conflicting_labels"] == 0
    assert removed["too_short"] == removed["too_long"] == removed["missing_text_or_label"] == 0


# --- splits ------------------------------------------------------------------------------------


def test_split_is_deterministic_and_stratified(tmp_path: Path) -> None:
    path = _write(_frame({"a": 40, "b": 30, "c": 30}), tmp_path / "rows.parquet")
    first = prepare_data(_config(path, seed=7))
    again = prepare_data(_config(path, seed=7))
    other = prepare_data(_config(path, seed=8))
    for split in ("train", "validation", "test"):
        pd.testing.assert_frame_equal(getattr(first, split), getattr(again, split))
    assert set(first.test["text"]) != set(other.test["text"])
    assert first.labels == ["a", "b", "c"]
    assert first.label_to_id == {"a": 0, "b": 1, "c": 2}
    for data in (first, other):
        for split in ("train", "validation", "test"):
            part = getattr(data, split)
            assert set(part["label"]) == {"a", "b", "c"}, split
            assert list(part.columns) == ["text", "label"]
            assert isinstance(part.index, pd.RangeIndex)
        assert (len(data.train), len(data.validation), len(data.test)) == (80, 10, 10)
        assert data.card["splits"]["test"]["labels"] == {"a": 4, "b": 3, "c": 3}
        assert sorted(_all_texts(data)) == sorted(_frame({"a": 40, "b": 30, "c": 30})["text"])


def test_split_shares_follow_config(tmp_path: Path) -> None:
    path = _write(_frame({"a": 100, "b": 100}), tmp_path / "rows.csv")
    cfg = DataConfig(
        source=SourceConfig(path=path), split=SplitConfig(validation=0.2, test=0.3, seed=1)
    )
    data = prepare_data(cfg)
    assert (len(data.train), len(data.validation), len(data.test)) == (100, 40, 60)


@pytest.mark.parametrize("other", [MIN_ROWS_PER_LABEL, 20, 100])
def test_label_with_minimum_rows_splits_or_gives_data_error(tmp_path: Path, other: int) -> None:
    # MIN_ROWS_PER_LABEL promises one row of each label in each split after an 80/10/10 cut;
    # failing that, the user must get a DataError, never a scikit-learn traceback.
    df = _frame({"a": MIN_ROWS_PER_LABEL, "b": other})
    try:
        data = _prepare(tmp_path, df)
    except DataError:
        return
    for split in ("train", "validation", "test"):
        assert set(getattr(data, split)["label"]) == {"a", "b"}, split


def test_ten_rows_per_label_gives_every_split_each_label(tmp_path: Path) -> None:
    data = _prepare(tmp_path, _frame({"a": 10, "b": 10, "c": 40}))
    for split in ("train", "validation", "test"):
        assert set(getattr(data, split)["label"]) == {"a", "b", "c"}, split


def test_limit_keeps_label_balance(tmp_path: Path) -> None:
    df = _frame({"big": 200, "small": 100})
    path = _write(df, tmp_path / "rows.csv")
    data = prepare_data(_config(path, limit=60))
    labels = pd.Series([*data.train["label"], *data.validation["label"], *data.test["label"]])
    assert len(labels) == 60
    assert labels.value_counts().to_dict() == {"big": 40, "small": 20}
    assert data.card["rows_raw"] == 300
    # the sample is seeded
    again = prepare_data(_config(path, limit=60))
    assert sorted(_all_texts(again)) == sorted(_all_texts(data))
    other = prepare_data(_config(path, limit=60, seed=3))
    assert sorted(_all_texts(other)) != sorted(_all_texts(data))


def test_limit_above_row_count_keeps_everything(tmp_path: Path) -> None:
    data = _prepare(tmp_path, _frame({"a": 20, "b": 20}), limit=1000)
    assert data.card["rows_used"] == 40


# --- filtering ---------------------------------------------------------------------------------


def test_min_and_max_chars(tmp_path: Path) -> None:
    df = _frame({"pos": 20, "neg": 20})  # texts of 21..30 characters
    short = pd.DataFrame({"text": ["ab", "abc", "  a  "], "label": ["pos", "neg", "pos"]})
    long = pd.DataFrame({"text": ["x" * 41, "y " * 30], "label": ["pos", "neg"]})
    cleaning = CleaningConfig(min_chars=4, max_chars=40)
    data = _prepare(tmp_path, pd.concat([df, short, long]), cleaning=cleaning)
    assert data.card["removed"]["too_short"] == 3
    assert data.card["removed"]["too_long"] == 2
    assert all(4 <= len(t) <= 40 for t in _all_texts(data))
    assert data.card["rows_used"] == 40


def test_empty_texts_and_labels_dropped(tmp_path: Path) -> None:
    df = _frame({"pos": 20, "neg": 20})
    blanks = pd.DataFrame(
        {"text": ["   ", "", "fine text", "another"], "label": ["pos", "neg", "", " "]}
    )
    data = _prepare(tmp_path, pd.concat([df, blanks]))
    removed = data.card["removed"]
    assert removed["missing_text_or_label"] == 2  # empty / blank label
    assert removed["too_short"] == 2  # empty after stripping
    assert data.card["rows_used"] == 40


def test_nulls_in_jsonl_dropped(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    rows = [{"text": _text(lbl, i), "label": lbl} for lbl in ("x", "y") for i in range(10)]
    rows += [{"text": None, "label": "x"}, {"text": "no label", "label": None}, {"text": "gone"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    data = prepare_data(_config(path))
    assert data.card["removed"]["missing_text_or_label"] == 3
    assert data.card["rows_used"] == 20


def test_labels_are_strings(tmp_path: Path) -> None:
    df = _frame({"1": 20, "0": 20}).assign(label=lambda d: d["label"].astype(int))
    data = _prepare(tmp_path, df, name="rows.parquet")
    assert data.labels == ["0", "1"]
    assert set(data.train["label"]) == {"0", "1"}


def test_integer_labels_with_a_missing_value_keep_their_names(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    rows = [{"text": _text(str(lbl), i), "label": lbl} for lbl in (0, 1) for i in range(10)]
    rows.append({"text": "unlabelled row", "label": None})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    data = prepare_data(_config(path))
    assert data.labels == ["0", "1"]


def test_custom_columns(tmp_path: Path) -> None:
    df = _frame({"a": 20, "b": 20}).rename(columns={"text": "review", "label": "stars"})
    df["other"] = "x"
    data = _prepare(tmp_path, df, text_column="review", label_column="stars")
    assert list(data.train.columns) == ["text", "label"]
    assert data.card["text_column"] == "review"
    assert data.card["label_column"] == "stars"


def test_unlabelled_data_without_label_column(tmp_path: Path) -> None:
    df = _frame({"a": 20, "b": 20})[["text"]]
    data = prepare_data(_config(_write(df, tmp_path / "rows.csv")), require_labels=False)
    assert data.labels == []
    assert data.card["rows_used"] == 40


# --- errors ------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        prepare_data(_config(tmp_path / "absent.csv"))
    message = _one_line_error(info)
    assert "absent.csv" in message
    assert "not found" in message


def test_unknown_format_suffix(tmp_path: Path) -> None:
    path = tmp_path / "rows.tsv"
    path.write_text("text\tlabel\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        prepare_data(_config(path))
    assert "format" in _one_line_error(info)


def test_explicit_format(tmp_path: Path) -> None:
    path = tmp_path / "rows.data"
    _frame({"a": 20, "b": 20}).to_csv(path, index=False)
    assert prepare_data(_config(path, format="csv")).card["rows_used"] == 40


@pytest.mark.parametrize("missing", ["text", "label"])
def test_missing_column_lists_columns(tmp_path: Path, missing: str) -> None:
    df = _frame({"a": 20, "b": 20}).rename(columns={missing: "something_else"})
    df["extra"] = 1
    with pytest.raises(DataError) as info:
        _prepare(tmp_path, df)
    message = _one_line_error(info)
    assert f"column '{missing}'" in message
    for column in df.columns:
        assert column in message
    assert "text_column" in message


def test_configured_column_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="column 'review'"):
        _prepare(tmp_path, _frame({"a": 20, "b": 20}), text_column="review")


def test_empty_after_cleaning(tmp_path: Path) -> None:
    df = _frame({"a": 20, "b": 20})
    with pytest.raises(DataError) as info:
        _prepare(tmp_path, df, cleaning=CleaningConfig(max_chars=5))
    message = _one_line_error(info)
    assert "no rows left" in message
    assert "from 40" in message
    assert "min_chars" in message


@pytest.mark.parametrize(
    "content",
    ["text,label\n", "text,label\nhello there,\nanother one, \n"],
    ids=["header", "no-labels"],
)
def test_empty_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "rows.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match="no rows left"):
        prepare_data(_config(path))


def test_single_class(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        _prepare(tmp_path, _frame({"only": 30}))
    message = _one_line_error(info)
    assert "single label" in message
    assert "'only'" in message


def test_single_class_after_cleaning(tmp_path: Path) -> None:
    df = pd.concat([_frame({"a": 20}), pd.DataFrame({"text": ["x" * 100] * 5, "label": ["b"] * 5})])
    with pytest.raises(DataError, match="single label"):
        _prepare(tmp_path, df, cleaning=CleaningConfig(max_chars=50))


def test_rare_label(tmp_path: Path) -> None:
    df = _frame({"a": 20, "b": 20, "rare": MIN_ROWS_PER_LABEL - 1})
    with pytest.raises(DataError) as info:
        _prepare(tmp_path, df)
    message = _one_line_error(info)
    assert "'rare'" in message
    assert f"only {MIN_ROWS_PER_LABEL - 1} rows" in message
    assert "at least 10 rows" in message  # 2 / (0.1 + 0.1): two held out per label


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    path.write_bytes(b"PAR1 garbage garbage")
    with pytest.raises(DataError) as info:
        prepare_data(_config(path))
    message = _one_line_error(info)
    assert "cannot read" in message
    assert str(path) in message


def test_load_source_reads_the_file(tmp_path: Path) -> None:
    df = _frame({"a": 3, "b": 3})
    path = _write(df, tmp_path / "rows.jsonl")
    got = load_source(SourceConfig(path=path))
    assert got["text"].tolist() == df["text"].tolist()


# --- the data card -----------------------------------------------------------------------------


def test_data_card_markdown_contains_counts(tmp_path: Path) -> None:
    df = _frame({"neg": 30, "pos": 20})
    df = pd.concat([df, df.iloc[[0, 1, 2]]])
    data = _prepare(tmp_path, df)
    card = data.card
    text = data_card_markdown(card)
    assert text.startswith(f"# Data card — {card['source']}")
    assert f"rows in source: {card['rows_raw']}; rows used: {card['rows_used']}" in text
    assert card["rows_raw"] == 53
    assert "| split | rows | neg | pos | mean chars |" in text
    for split, info in card["splits"].items():
        per_label = f"{info['labels']['neg']} | {info['labels']['pos']}"
        assert f"| {split} | {info['rows']} | {per_label} | {info['mean_chars']} |" in text
    assert "| duplicates | 3 |" in text
    assert "| conflicting_labels | 0 |" in text
    assert "Cleaning: unicode_nfkc=True" in text
    assert text.endswith("\n")


def test_card_is_json_serialisable(tmp_path: Path) -> None:
    data = _prepare(tmp_path, _frame({"a": 20, "b": 20}))
    again = json.loads(json.dumps(data.card))
    assert again["labels"] == ["a", "b"]
    assert again["split"] == {"validation": 0.1, "test": 0.1, "seed": 42}
    assert sum(s["rows"] for s in again["splits"].values()) == again["rows_used"]
