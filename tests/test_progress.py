"""Progress reporting: the default bar a Python caller gets, how it is silenced, and the events
a converting child process relays to its parent."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import pytest

from conftest import RecordedProgress
from lmforge.errors import ModelNotFoundError
from lmforge.models.reporting_child import run_reporting_child
from lmforge.progress import BarProgress, LoggingProgress, SilentProgress, resolve_progress


@pytest.fixture
def lmforge_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("lmforge")
    level = logger.level
    yield logger
    logger.setLevel(level)


def test_the_default_is_a_bar_on_stderr(
    capsys: pytest.CaptureFixture[str], lmforge_logger: logging.Logger
) -> None:
    bar = resolve_progress(None)
    assert isinstance(bar, BarProgress)
    bar.note("converting the base model — once")
    bar.start("training", total=3)
    bar.advance(1, loss=0.5)
    bar.advance(2)
    bar.stop()
    shown = capsys.readouterr()
    assert shown.out == ""
    assert "converting the base model — once" in shown.err
    assert "training" in shown.err and "3/3" in shown.err


def test_the_bar_prints_lines_where_stderr_is_a_file() -> None:
    """Under nohup or CI a live bar would show nothing until the end: a line per tenth."""
    import io

    from rich.console import Console

    log = io.StringIO()
    bar = BarProgress(Console(file=log, force_terminal=False, force_jupyter=False))
    bar.start("training", total=20)
    for _ in range(20):
        bar.advance(1, loss=0.25)
    bar.stop()
    lines = log.getvalue().splitlines()
    assert lines[0] == "training: 0/20"
    assert "training: 2/20 loss 0.2500" in lines
    assert lines[-1] == "training: 20/20 done"
    assert len(lines) == 11  # start, nine tenths, done


def test_progress_is_silenced_by_the_argument_or_the_logging_level(
    lmforge_logger: logging.Logger,
) -> None:
    assert isinstance(resolve_progress(False), SilentProgress)
    assert isinstance(resolve_progress(True), BarProgress)
    mine = RecordedProgress()
    assert resolve_progress(mine) is mine
    lmforge_logger.setLevel(logging.WARNING)
    assert isinstance(resolve_progress(None), SilentProgress)
    assert isinstance(resolve_progress(True), BarProgress)  # asked for explicitly
    lmforge_logger.setLevel(logging.INFO)
    assert isinstance(resolve_progress(None), BarProgress)


CHILD = """
from lmforge.models.reporting_child import report_to_parent, reporting_iterable
print("noise the parent ignores")
report_to_parent(note="reading the tokenizer")
for _ in reporting_iterable(range(3), desc="Converting tensors..."):
    pass
report_to_parent(note="writing")
"""


def test_a_converting_child_reports_its_progress_to_the_parent() -> None:
    events = RecordedProgress()
    run_reporting_child(
        [sys.executable, "-c", CHILD], events, lambda last: ModelNotFoundError(last, "")
    )
    assert events.calls == [
        ("note", "reading the tokenizer"),
        ("start", ("Converting tensors", 3)),
        ("advance", 1),
        ("advance", 1),
        ("advance", 1),
        ("note", "writing"),
        ("stop", None),
    ]


def test_a_failing_child_raises_with_its_last_error_line() -> None:
    failing = CHILD + "\nraise SystemExit('the GGUF file is truncated')\n"
    events = RecordedProgress()
    with pytest.raises(ModelNotFoundError, match="the GGUF file is truncated"):
        run_reporting_child(
            [sys.executable, "-c", failing], events, lambda last: ModelNotFoundError(last, "")
        )
    assert events.calls[-1] == ("stop", None)


def test_a_server_logs_progress(caplog: pytest.LogCaptureFixture) -> None:
    progress = LoggingProgress(logging.getLogger("lmforge.serve"))
    with caplog.at_level(logging.INFO, logger="lmforge.serve"):
        progress.note("converting smollm2 — once")
        progress.start("dequantising tensors", total=100)
        for _ in range(100):
            progress.advance()
        progress.stop()
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0] == "converting smollm2 — once"
    assert messages[1] == "dequantising tensors: 0/100"
    assert messages[2:11] == [f"dequantising tensors: {n}/100" for n in range(10, 100, 10)]
    assert messages[-1] == "dequantising tensors: 100/100 done" and len(messages) == 12
