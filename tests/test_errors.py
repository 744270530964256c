from __future__ import annotations

from lmforge.errors import LmforgeError, describe_exception, first_line


def test_first_line_quotes_a_library_failure_in_one_line() -> None:
    assert first_line(ValueError("bad header\nline 2\nline 3")) == "bad header"
    assert first_line(ValueError("x" * 300)) == "x" * 200
    assert first_line(ValueError("x" * 300), 10) == "x" * 10
    assert first_line(ValueError("x" * 300), None) == "x" * 300
    assert first_line(KeyError()) == "KeyError"  # an empty message names the type
    assert first_line(OSError("   ")) == "OSError"


def test_describe_exception_names_the_type() -> None:
    assert describe_exception(RuntimeError("boom\nmore")) == "RuntimeError: boom"
    assert describe_exception(RuntimeError()) == "RuntimeError"


def test_lmforge_error_message_joins_problem_and_fix() -> None:
    assert LmforgeError("no file", "give one").message == "no file — give one"
    assert str(LmforgeError("no file")) == "no file"
