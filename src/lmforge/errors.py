"""Errors a user can act on.

Every failure caused by the user's input (recipe, data, model name, checkpoint) is raised as
:class:`LmforgeError` with a one-line message naming the problem and the fix. The CLI turns it
into that line and exit code 2; the HTTP layer into a 4xx. Anything else is a bug.
"""

from __future__ import annotations


class LmforgeError(Exception):
    """A problem with the user's input, with a hint on how to fix it."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return f"{self.problem} — {self.fix}" if self.fix else self.problem


class RecipeError(LmforgeError):
    """The recipe file is missing, unparsable or invalid."""


class DataError(LmforgeError):
    """The data source is missing, malformed, or unusable after cleaning."""


class ModelNotFoundError(LmforgeError):
    """An unknown base model, or an unknown registered model name/version."""


class ModelUnavailableError(LmforgeError):
    """A model that exists but cannot be used: an unsupported architecture, a damaged or
    incomplete folder, a missing package file. Not the caller's fault: the server answers 503."""


class CheckpointError(LmforgeError):
    """A checkpoint is missing, incomplete or corrupt."""


def first_line(exc: BaseException, limit: int | None = 200) -> str:
    """The first line of an exception's message (cut to ``limit``), or its type's name when the
    message is empty: what a one-line error can quote of a library's failure."""
    text = str(exc)
    return text.splitlines()[0][:limit] if text.strip() else type(exc).__name__


def describe_exception(exc: BaseException, limit: int | None = 200) -> str:
    """``Type: first line`` (or just ``Type``), for reports that list failures side by side."""
    text = str(exc)
    if not text.strip():
        return type(exc).__name__
    return f"{type(exc).__name__}: {first_line(exc, limit)}"
