"""The monitoring report over a constructed prediction log: windows, live accuracy and its
Wilson interval against a hand computation, drift against a tiny version's cached validation
reference (fires on a shifted window, not on an unshifted one), the JSON contract, the HTML page
and the CLI's errors."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sqlalchemy import insert

from conftest import NEGATIVE, POSITIVE, lmforge, toy_recipe
from lmforge.data import prepare_data
from lmforge.errors import LmforgeError, ModelNotFoundError
from lmforge.monitor import FeedbackEvent, record_feedback
from lmforge.monitor import reference as reference_module
from lmforge.monitor.reference import load_reference
from lmforge.monitor.report import monitor_model, summarize_window
from lmforge.monitor.report_html import render_html
from lmforge.monitor.tables import PredictionLogRow, create_tables
from lmforge.recipe import load_recipe
from lmforge.registry import Registry
from lmforge.registry.db import make_engine
from lmforge.runtime import Predictor
from lmforge.settings import Settings
from lmforge.tasks.loop import report_drift

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path, tiny_model_dir: Path, tiny_base: Path) -> Settings:
    """tiny:v1 registered with a recipe whose validation split has 80 rows (400 reviews)."""
    rows = []
    for i in range(25):
        rows += [{"review": f"{t} ({i})", "sentiment": "positive"} for t in POSITIVE]
        rows += [{"review": f"{t} [{i}]", "sentiment": "negative"} for t in NEGATIVE]
    csv = tmp_path / "reviews.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    settings = Settings(home=tmp_path / "home", database_url=None)
    registry = Registry(settings)
    staging = registry.new_staging_dir()
    shutil.copytree(tiny_model_dir, staging, dirs_exist_ok=True)
    (staging / "recipe.yaml").write_text(yaml.safe_dump(toy_recipe(csv, tiny_base)))
    registry.register(
        "tiny",
        staging,
        task="classification",
        base_model="tiny",
        labels=["negative", "positive"],
        metrics={},
        baselines={},
        stage="production",
    )
    return settings


def log_rows(
    settings: Settings,
    rows: Sequence[tuple[datetime, str, float, float, str | None]],
    model: str = "tiny",
    version: int = 1,
) -> list[str]:
    """Write (time, label, score, latency_ms, text) rows into the prediction log; their ids."""
    engine = make_engine(settings.resolved_database_url)
    create_tables(engine)
    ids = [uuid.uuid4().hex for _ in rows]
    values = [
        {
            "created_at": when,
            "model": model,
            "version": version,
            "label": label,
            "score": score,
            "latency_ms": latency,
            "text": text,
            "prediction_id": pid,
        }
        for pid, (when, label, score, latency, text) in zip(ids, rows, strict=True)
    ]
    with engine.begin() as conn:
        conn.execute(insert(PredictionLogRow), values)
    engine.dispose()
    return ids


def test_windows_over_a_constructed_log(settings: Settings) -> None:
    first = [
        (
            T0 + timedelta(minutes=i),
            "positive" if i < 6 else "negative",
            0.5 + i / 20,
            10.0 * i,
            None,
        )
        for i in range(8)
    ]
    third = [(T0 + timedelta(hours=2, minutes=5), "negative", 0.9, 4.0, None)]
    log_rows(settings, first + third)
    log_rows(settings, [(T0, "positive", 0.9, 1.0, None)], model="other")  # another model
    report = monitor_model(
        "tiny", since=T0, until=T0 + timedelta(hours=3), settings=settings, with_drift=False
    )
    assert [w.volume for w in report.windows] == [8, 0, 1]
    one, empty, last = report.windows
    assert one.start == T0 and one.end == T0 + timedelta(hours=1) and one.version == 1
    assert one.label_shares == {"negative": 0.25, "positive": 0.75}
    latencies = [10.0 * i for i in range(8)]
    assert one.latency_p50_ms == pytest.approx(np.percentile(latencies, 50))
    assert one.latency_p99_ms == pytest.approx(np.percentile(latencies, 99))
    scores = [0.5 + i / 20 for i in range(8)]
    assert one.mean_confidence == pytest.approx(sum(scores) / 8)
    assert one.low_confidence_share == 2 / 8  # 0.5 and 0.55 are below 0.6
    assert empty.volume == 0 and empty.latency_p50_ms is None and empty.label_shares == {}
    assert empty.version is None and empty.mean_confidence is None
    # every label of the registered version has a share, 0 where no prediction had it
    assert last.label_shares == {"negative": 1.0, "positive": 0.0}
    figures = one.figures()
    assert figures["volume"] == 8 and figures["label_share.positive"] == 0.75
    assert "live_accuracy" not in figures and "drift.any" not in figures  # None: left out
    assert empty.figures() == {"volume": 0.0, "feedback_count": 0.0}
    # one window alone is the same summary (the alert engine's call)
    alone = summarize_window(
        "tiny", start=T0, end=T0 + timedelta(hours=1), settings=settings, with_drift=False
    )
    assert alone.to_dict() == one.to_dict()


def test_live_accuracy_and_its_interval_match_a_hand_computation(settings: Settings) -> None:
    # predicted labels; feedback: 6 labels (4 right), 3 'correct: true', 1 'correct: false'
    predicted = ["positive"] * 6 + ["negative"] * 4
    ids = log_rows(
        settings, [(T0 + timedelta(minutes=i), p, 0.8, 5.0, None) for i, p in enumerate(predicted)]
    )
    truth = {
        0: "positive",
        1: "positive",
        2: "negative",
        6: "negative",
        7: "negative",
        8: "positive",
    }
    for i, label in truth.items():
        record_feedback(FeedbackEvent(prediction_id=ids[i], label=label), settings)
    for i in (3, 4, 9):
        record_feedback(FeedbackEvent(prediction_id=ids[i], correct=True), settings)
    record_feedback(FeedbackEvent(prediction_id=ids[5], correct=False), settings)
    w = summarize_window(
        "tiny", start=T0, end=T0 + timedelta(hours=1), settings=settings, with_drift=False
    )
    assert w.feedback_count == 10 and w.labelled_count == 9
    # right: 0, 1, 6, 7 (labels) + 3, 4, 9 (correct) = 7 of 10
    assert w.live_accuracy == 0.7
    n, p, z = 10, 0.7, 1.959963984540054
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert w.live_accuracy_interval == pytest.approx((centre - half, centre + half), abs=1e-9)
    # macro-F1 over the 9 labelled rows (truth, predicted):
    # positive: predicted 0,1,3,4,8 -> truth positive at 0,1,3,4 (tp 4, fp 1: row 2 is
    # predicted positive -> truth negative, fp 2), fn: row 8 (predicted negative) -> 1
    pairs = [(truth.get(i, predicted[i]), predicted[i]) for i in (0, 1, 2, 3, 4, 6, 7, 8, 9)]
    f1s = []
    for c in ("negative", "positive"):
        tp = sum(t == c and q == c for t, q in pairs)
        fp = sum(t != c and q == c for t, q in pairs)
        fn = sum(t == c and q != c for t, q in pairs)
        f1s.append(2 * tp / (2 * tp + fp + fn))
    assert w.live_macro_f1 == pytest.approx(sum(f1s) / 2)
    figures = w.figures()
    assert figures["live_accuracy"] == 0.7 and figures["feedback_count"] == 10


def logged_predictions(settings: Settings, texts: list[str], start: datetime) -> None:
    """Log what tiny:v1 answers for ``texts`` (texts kept), a second apart from ``start``."""
    version = Registry(settings).get("tiny:v1")
    predictions = Predictor(version.path).predict(texts)
    log_rows(
        settings,
        [
            (start + timedelta(seconds=i), p.label, p.score, 3.0, text)
            for i, (text, p) in enumerate(zip(texts, predictions, strict=True))
        ],
    )


SHIFTED = [
    f"股市今天下跌了{i}个百分点，投资者担心经济衰退和通货膨胀的影响继续扩大" for i in range(60)
]


def test_drift_fires_on_a_shifted_window_and_not_on_an_unshifted_one(settings: Settings) -> None:
    # held out, from the same distribution as the reference (the validation split): the test
    # split of the same recipe
    recipe = load_recipe(Registry(settings).get("tiny:v1").path / "recipe.yaml")
    unshifted = prepare_data(recipe.data).test["text"].tolist()
    logged_predictions(settings, unshifted, T0)
    logged_predictions(settings, SHIFTED, T0 + timedelta(hours=1))
    report = monitor_model(
        "tiny",
        since=T0,
        until=T0 + timedelta(hours=2),
        settings=settings,
        window=timedelta(hours=1),
    )
    calm, shifted = report.windows
    assert calm.drift is not None and shifted.drift is not None
    names = [d.name for d in calm.drift.detectors]
    assert names == ["labels", "confidence", "embeddings", "length", "script", "unknown_tokens"]
    assert calm.drift_skipped is None and not calm.drift.drifted, calm.drift.to_dict()
    # MiniLM's WordPiece has no Chinese: the texts are unknown tokens, in another script
    assert shifted.drift.drifted and {"script", "unknown_tokens"} <= set(shifted.drift.fired)
    assert shifted.figures()["drift.any"] == 1.0 and calm.figures()["drift.any"] == 0.0
    assert "drift.embeddings.p_value" in shifted.figures()
    # the six detectors share the report's 5 % false-alarm rate
    assert calm.drift.alpha_per_detector == pytest.approx(0.05 / 6)
    (ref,) = report.references
    assert ref["rows"] == 80 and ref["embeddings"] and ref["encoder"] == "tiny:v1"
    # the loop's drift trigger is this test, window for window; no traffic is no drift
    drifted = report_drift(settings)
    assert drifted("tiny", T0 + timedelta(hours=1), T0 + timedelta(hours=2))
    assert not drifted("tiny", T0, T0 + timedelta(hours=1))
    assert not drifted("tiny", T0 + timedelta(hours=5), T0 + timedelta(hours=6))


def test_without_texts_only_prediction_drift_runs_and_says_so(settings: Settings) -> None:
    log_rows(
        settings, [(T0 + timedelta(seconds=i), "positive", 0.99, 3.0, None) for i in range(40)]
    )
    w = summarize_window("tiny", start=T0, end=T0 + timedelta(hours=1), settings=settings)
    assert w.drift is not None and [d.name for d in w.drift.detectors] == ["labels", "confidence"]
    assert w.drift_skipped is not None and "no texts retained" in w.drift_skipped
    few = summarize_window("tiny", start=T0, end=T0 + timedelta(seconds=10), settings=settings)
    assert few.drift is None and few.drift_skipped is not None and "fewer than" in few.drift_skipped


def test_the_reference_is_built_once_and_read_back_from_the_cache(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = Registry(settings).get("tiny:v1")
    built = load_reference(version, settings)
    assert built.cache_file is not None and built.cache_file.is_file()
    assert len(built.texts) == 80 and built.embeddings is not None

    def no_model(*_: object, **__: object) -> None:
        raise AssertionError("the cached reference must not run the model again")

    monkeypatch.setattr(reference_module, "Predictor", no_model)
    again = load_reference(version, settings)
    assert again.texts == built.texts and again.labels == built.labels
    assert np.array_equal(again.confidences, built.confidences)
    assert again.embeddings is not None and np.allclose(again.embeddings, built.embeddings)


def test_a_version_without_a_recipe_skips_drift_with_the_reason(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from conftest import register_copy

    settings = Settings(home=tmp_path / "home", database_url=None)
    register_copy(settings, tiny_model_dir, "bare")
    log_rows(settings, [(T0, "positive", 0.9, 1.0, None)] * 40, model="bare")
    report = monitor_model("bare", since=T0, until=T0 + timedelta(hours=1), settings=settings)
    (w,) = report.windows
    assert w.drift is None and w.drift_skipped is not None and "recipe.yaml" in w.drift_skipped
    assert report.reference_skipped is not None and report.references == []


WINDOW_KEYS = {
    "start", "end", "model", "version", "versions", "volume", "latency_p50_ms",
    "latency_p99_ms", "label_shares", "mean_confidence", "low_confidence_share",
    "low_confidence_threshold", "feedback_count", "labelled_count", "live_accuracy",
    "live_accuracy_interval", "live_macro_f1", "texts_retained", "drift", "drift_version",
    "drift_skipped",
}  # fmt: skip


def test_the_json_contract(settings: Settings) -> None:
    ids = log_rows(
        settings, [(T0 + timedelta(seconds=i), "positive", 0.7, 2.0, None) for i in range(3)]
    )
    record_feedback(FeedbackEvent(prediction_id=ids[0], correct=True), settings)
    report = monitor_model(
        "tiny", since=T0, until=T0 + timedelta(minutes=90), settings=settings, with_drift=False
    )
    doc = json.loads(report.to_json())
    assert set(doc) == {
        "model", "version", "since", "until", "window_seconds", "generated_at", "references",
        "reference_skipped", "windows",
    }  # fmt: skip
    assert doc["since"] == "2026-11-02T09:00:00Z" and doc["window_seconds"] == 3600.0
    first, second = doc["windows"]
    assert set(first) == WINDOW_KEYS and set(second) == WINDOW_KEYS
    assert second["end"] == "2026-11-02T10:30:00Z"  # the last window ends at until
    assert first["versions"] == {"1": 3} and first["live_accuracy"] == 1.0
    assert len(first["live_accuracy_interval"]) == 2 and first["drift"] is None
    assert second["volume"] == 0 and second["live_accuracy"] is None


def test_the_html_page_escapes_what_comes_from_data(settings: Settings) -> None:
    hostile = "<script>alert(1)</script>"
    log_rows(settings, [(T0 + timedelta(seconds=i), hostile, 0.7, 2.0, None) for i in range(3)])
    report = monitor_model(
        "tiny", since=T0, until=T0 + timedelta(hours=2), settings=settings, with_drift=False
    )
    page = render_html(report)
    assert "<script" not in page.lower() and "&lt;script&gt;" in page
    assert page.count("<svg") == 4 and "<metadata>" not in page
    assert re.search(r"(src|href)=[\"']?(https?:|//)", page) is None  # nothing fetched


def test_bad_periods_and_unknown_models_are_refused(settings: Settings) -> None:
    with pytest.raises(ModelNotFoundError, match="no model 'nosuch'"):
        monitor_model("nosuch", since=T0, until=T0 + timedelta(hours=1), settings=settings)
    with pytest.raises(ModelNotFoundError, match="tiny has no version 7"):
        monitor_model("tiny", version=7, since=T0, until=T0 + timedelta(hours=1), settings=settings)
    with pytest.raises(LmforgeError, match="not before its end"):
        monitor_model("tiny", since=T0, until=T0, settings=settings)
    with pytest.raises(LmforgeError, match="window must be positive"):
        monitor_model(
            "tiny", since=T0, until=T0 + timedelta(hours=1), window=timedelta(0), settings=settings
        )


def assert_one_line_error(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], lines


def test_the_cli(settings: Settings, tmp_path: Path) -> None:
    log_rows(settings, [(T0 + timedelta(seconds=i), "positive", 0.7, 2.0, None) for i in range(3)])
    home = settings.home
    period = ("--since", "2026-11-02T09:00", "--until", "2026-11-02T11:00")
    page = tmp_path / "report.html"
    ok = lmforge("monitor", "tiny", *period, "--json", "--no-drift", "--html", str(page), home=home)
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert [w["volume"] for w in doc["windows"]] == [3, 0]
    assert page.read_text().startswith("<!doctype html>")
    table = lmforge("monitor", "tiny", *period, "--window", "30m", "--no-drift", home=home)
    assert table.returncode == 0 and "4 windows" in table.stdout, table.stderr
    assert_one_line_error(lmforge("monitor", "nosuch", home=home), "no model 'nosuch'")
    assert_one_line_error(lmforge("monitor", "tiny", "--window", "soon", home=home), "--window")
    assert_one_line_error(
        lmforge("monitor", "tiny", "--since", "1h", "--until", "2h", home=home), "not before"
    )
    assert_one_line_error(lmforge("monitor", "tiny", "--since", "yesterday", home=home), "--since")


def test_registered_labels_are_read_through_the_cached_log_engine(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduled summary builds no Registry (a new engine and a tombstone settle) per call:
    the labels come through the one cached engine of the database."""
    from lmforge.monitor import windows
    from lmforge.registry import store

    log_rows(settings, [(T0 + timedelta(minutes=1), "positive", 0.9, 5.0, None)])

    def no_registry(*args: object, **kwargs: object) -> None:
        raise AssertionError("summarize_window built a Registry")

    built: list[str] = []
    make_engine_ = windows.make_engine
    monkeypatch.setattr(store.Registry, "__init__", no_registry)
    monkeypatch.setattr(windows, "make_engine", lambda url: built.append(url) or make_engine_(url))
    for _ in range(3):
        w = summarize_window(
            "tiny", start=T0, end=T0 + timedelta(hours=1), settings=settings, with_drift=False
        )
        # the registered label no prediction had is a share of 0
        assert w.label_shares == {"negative": 0.0, "positive": 1.0}
    assert len(built) <= 1  # at most the first call opens the database


def test_a_log_without_the_registry_table_has_no_registered_labels(tmp_path: Path) -> None:
    import sqlite3

    settings = Settings(home=tmp_path / "home", database_url=None)
    log_rows(settings, [(T0 + timedelta(minutes=1), "positive", 0.9, 5.0, None)], model="bot")
    database = settings.resolved_database_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as conn:
        conn.execute("DROP TABLE model_versions")
    w = summarize_window(
        "bot", start=T0, end=T0 + timedelta(hours=1), settings=settings, with_drift=False
    )
    assert w.volume == 1 and w.label_shares == {"positive": 1.0}
