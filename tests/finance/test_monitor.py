"""The finance monitor's library: ingest → score → store → aggregate → surge alert → timeline."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fin_helpers import LABELS, KeywordScorer, build_sentiment_dir, register

from lmforge.errors import DataError, LmforgeError
from lmforge.finance import (
    FinanceMonitor,
    Headline,
    Scorer,
    by_day,
    check_sentiment_model,
    parse_speed,
    read_headlines,
    render_html,
    render_png,
    replay_days,
    run_stream,
)
from lmforge.registry import Registry
from lmforge.settings import Settings

START = date(2020, 1, 1)


@pytest.fixture(scope="module")
def sentiment_dir(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sentiment_dir(tiny_base, tmp_path_factory.mktemp("tiny-sentiment"))


def stream(shares: list[float], per_day: int = 20) -> list[tuple[date, list[Headline]]]:
    """One day per share: ``per_day`` headlines, that share of them negative ('crash')."""
    days = []
    for i, share in enumerate(shares):
        day = START + timedelta(days=i)
        when = datetime(day.year, day.month, day.day, tzinfo=UTC)
        negative = round(share * per_day)
        rows = [
            Headline(f"{i}-{j}", when, f"{'Shares crash' if j < negative else 'Tesco opens'} {j}")
            for j in range(per_day)
        ]
        days.append((day, rows))
    return days


def monitor(home: Settings) -> FinanceMonitor:
    return FinanceMonitor("kw", Registry(home).engine)


def test_a_constructed_surge_fires_once_with_its_window_and_headlines(home: Settings) -> None:
    days = stream([0.3] * 30 + [0.8] * 6)
    result = run_stream(monitor(home), KeywordScorer(), days, "test")
    assert result.headlines == result.stored == 36 * 20
    assert len(result.fired) == 1  # a sustained surge fires once
    alert = result.fired[0]
    assert date(2020, 1, 31) <= alert.fired_at.date() <= date(2020, 2, 2)
    assert alert.rule == "finance-surge" and alert.metric == "label_share.negative"
    details = alert.details
    assert details["baseline_mean"] == pytest.approx(0.3)
    assert details["volume"] >= 30 and details["negative_share"] > 0.5
    assert len(details["top_headlines"]) == 5
    assert all("crash" in h["text"] for h in details["top_headlines"])
    assert details["window_end"] == alert.fired_at.isoformat()
    # the timeline carries the alert, and each judged day the rule's figures
    days_json = result.to_json()["days"]
    assert len(days_json) == 36 and result.to_json()["alerts"][0]["id"] == alert.id
    judged = [d for d in days_json if "threshold" in d]
    assert judged and all(d["threshold"] >= d["baseline_mean"] + 0.1 - 1e-9 for d in judged)


def test_a_flat_stream_stays_quiet(home: Settings) -> None:
    shares = [0.3, 0.35, 0.25, 0.4, 0.3, 0.2, 0.35] * 8
    result = run_stream(monitor(home), KeywordScorer(), stream(shares), "test")
    assert result.fired == [] and result.timeline.alerts == []


def test_a_small_rise_under_min_change_stays_quiet(home: Settings) -> None:
    # +5 points with huge volume: significant by z, but below the 10-point minimum change
    result = run_stream(monitor(home), KeywordScorer(), stream([0.3] * 30 + [0.35] * 6, 200), "t")
    assert result.fired == []


def test_a_replayed_stream_is_stored_once(home: Settings) -> None:
    days = stream([0.3] * 30 + [0.8] * 6)
    first = run_stream(monitor(home), KeywordScorer(), days, "test")
    again = run_stream(monitor(home), KeywordScorer(), days, "test")
    assert again.stored == 0 and again.fired == []
    assert [a.id for a in again.timeline.alerts] == [a.id for a in first.fired]
    assert sum(d.volume for d in again.timeline.days) == 36 * 20


def test_speed_waits_out_each_simulated_day(home: Settings) -> None:
    waits: list[float] = []
    run_stream(
        monitor(home), KeywordScorer(), stream([0.3] * 3), "t", speed=5.0, sleep=waits.append
    )
    assert len(waits) == 3 and all(0 < w <= 5.0 for w in waits)


def test_aggregates_per_entity_and_hour(home: Settings) -> None:
    when = datetime(2020, 3, 2, 9, tzinfo=UTC)
    rows = [Headline(f"a{i}", when + timedelta(minutes=i), "Tesco shares crash") for i in range(12)]
    rows += [Headline(f"b{i}", when + timedelta(hours=1), "BP boom in oil") for i in range(12)]
    result = run_stream(monitor(home), KeywordScorer(), by_day(rows), "t")
    entities = {e.key: e for e in result.timeline.entities}
    assert entities["Tesco"].negative_share == 1 and entities["Tesco"].kind == "company"
    assert entities["BP"].positive_share == 1 and entities["stock markets"].volume == 12
    assert [h.volume for h in result.timeline.hours] == [12, 12]


# --- ingest ---------------------------------------------------------------------------------


def test_reads_jsonl_and_csv_files(tmp_path: Path) -> None:
    jsonl = tmp_path / "h.jsonl"
    jsonl.write_text('{"id": 7, "text": "BP cuts jobs", "time": "2020-03-02T09:30:00Z"}\n\n'
                     '{"text": "Oil falls", "time": "2020-03-02"}\n')  # fmt: skip
    rows = read_headlines(jsonl)
    assert rows[0].id == "7" and rows[1].id.startswith("h")
    assert rows[0].time == datetime(2020, 3, 2, 9, 30, tzinfo=UTC)
    csv = tmp_path / "h.csv"
    csv.write_text("text,date\nBP cuts jobs,2020-03-02\n")
    assert read_headlines(csv)[0].time == datetime(2020, 3, 2, tzinfo=UTC)
    stdin = io.StringIO('{"text": "x", "time": "2020-01-01"}\n')
    assert read_headlines(None, stdin)[0].text == "x"


def test_an_unparsable_date_names_its_row(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text('{"text": "a", "time": "2020-01-01"}\n{"text": "b", "time": "next Tuesday"}\n')
    with pytest.raises(DataError) as caught:
        read_headlines(path)
    assert f"{path} line 2: time 'next Tuesday' cannot be parsed" in caught.value.message
    assert "\n" not in caught.value.message
    csv = tmp_path / "h.csv"
    csv.write_text("text,time\nok,2020-01-01\nbad,31/02/2020\n")
    with pytest.raises(DataError, match="row 3: time '31/02/2020'"):
        read_headlines(csv)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"time": "2020-01-01"}', "'text' is missing"),
        ('{"text": "a"}', "'time' is missing"),
        ("[1, 2]", "not a JSON object"),
        ("{not json", "not JSON"),
        ('{"text": "a", "time": "2020-01-01", "id": [1]}', "'id' must be"),
    ],
)
def test_bad_rows_are_refused_by_line(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(DataError, match=f"line 1: {problem}"):
        read_headlines(path)


def test_unknown_replay_source_is_one_line() -> None:
    with pytest.raises(DataError) as caught:
        replay_days("reuters_2020")
    assert caught.value.message == (
        "unknown replay source 'reuters_2020' — use one of: guardian_headlines "
        "(or --file for your own headlines)"
    )


def test_speed() -> None:
    assert parse_speed("1day=1s") == 1.0
    assert parse_speed("1h=0.1s") == pytest.approx(2.4)
    assert parse_speed("max") == 0.0
    with pytest.raises(DataError, match="is not SPAN=SPAN"):
        parse_speed("fast")


# --- the model ------------------------------------------------------------------------------


def test_a_model_of_other_labels_or_task_is_refused_by_name(
    home: Settings, tiny_model_dir: Path
) -> None:
    ref = register(home, tiny_model_dir, "movies", ["negative", "positive"])
    with pytest.raises(LmforgeError) as caught:
        check_sentiment_model(ref, home)
    assert caught.value.message.startswith(
        "movies:v1 is not a three-class sentiment model: its labels are negative, positive"
    )
    with pytest.raises(LmforgeError, match="no-such"):
        check_sentiment_model("no-such", home)


def test_a_real_slice_through_the_tiny_model(home: Settings, sentiment_dir: Path) -> None:
    days = replay_days("guardian_headlines")[:6]
    scorer = Scorer(register(home, sentiment_dir, "fin", LABELS), home)
    result = run_stream(FinanceMonitor(scorer.model, Registry(home).engine), scorer, days, "g")
    assert result.stored == result.headlines == sum(len(r) for _, r in days) == 120
    assert {r.label for r in result.rows} <= {"negative", "neutral", "positive"}
    assert all(r.version == 1 and r.id.startswith("guardian_headlines:") for r in result.rows)
    assert any(r.entities for r in result.rows)
    assert [d.volume for d in result.timeline.days] == [20] * 6


def test_chart_files_open(home: Settings, tmp_path: Path) -> None:
    days = stream([0.3] * 30 + [0.8] * 6)
    days[0][1][0] = Headline("x", days[0][1][0].time, "<script>alert(1)</script> crash")
    result = run_stream(monitor(home), KeywordScorer(), days, "test")
    png = render_png(result.timeline)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    page = render_html(result.timeline, result.rows)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    parser = HTMLParser()
    parser.feed(page)
    parser.close()


def test_postgresql_holds_the_same_monitor(postgres_url: str) -> None:
    from lmforge.registry.db import make_engine

    engine = make_engine(postgres_url)
    days = stream([0.3] * 30 + [0.8] * 6)
    first = run_stream(FinanceMonitor("kw", engine), KeywordScorer(), days, "pg")
    again = run_stream(FinanceMonitor("kw", engine), KeywordScorer(), days, "pg")
    assert first.stored == 36 * 20 and again.stored == 0
    assert len(first.fired) == 1 and again.fired == []
    assert first.fired[0].details["top_headlines"][0]["text"].startswith("Shares crash")
    engine.dispose()


def test_an_alerts_headline_is_explained_by_the_version_that_scored_it(
    tmp_path: Path, sentiment_dir: Path
) -> None:
    """The words kept are those whose removal lowers the negative probability most, by exactly
    that drop (occlusion through the served backend), strongest first."""
    from lmforge.finance import HeadlineExplainer, ScoredHeadline
    from lmforge.runtime import Predictor

    settings = Settings(home=tmp_path / "home", database_url=None)
    register(settings, sentiment_dir, "fin", LABELS)
    text = "Tesco shares crash as profits fall sharply"
    when = datetime(2020, 3, 2, tzinfo=UTC)
    headline = ScoredHeadline("h1", when, text, "negative", 0.5, {}, "fin", 1)
    explain = HeadlineExplainer(settings, words=3)
    why = explain(headline)
    assert why is not None and why["method"] == "occlusion" and why["target"] == "negative"
    predictor = Predictor(Registry(settings).get("fin:v1").path)
    words = text.split()
    variants = [text] + [" ".join(words[:i] + words[i + 1 :]) for i in range(len(words))]
    negative = predictor.predict_proba(variants)[:, LABELS.index("negative")]
    drops = sorted(
        ((float(negative[0] - negative[i + 1]), w) for i, w in enumerate(words)), reverse=True
    )
    expected = [(w, d) for d, w in drops if d > 0][:3]
    assert [w["word"] for w in why["words"]] == [w for w, _ in expected]
    assert [w["score"] for w in why["words"]] == pytest.approx([d for _, d in expected], abs=1e-6)
    # a lexicon's verdict has no version to explain; a version gone is an error, not a crash
    assert explain(ScoredHeadline("h2", when, text, "negative", 0.5, {}, "weak", None)) is None
    gone = explain(ScoredHeadline("h3", when, text, "negative", 0.5, {}, "fin", 9))
    assert gone == {"error": "model 'fin' has no version 9"}
