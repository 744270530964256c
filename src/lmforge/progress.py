"""How long-running library calls report progress without printing.

The library calls a :class:`ProgressReporter`; the CLI passes one that draws a rich progress bar,
tests and servers pass nothing and get the silent default.
"""

from __future__ import annotations

from typing import Protocol


class ProgressReporter(Protocol):
    def start(self, description: str, total: int, completed: int = 0) -> None: ...
    def advance(self, steps: int = 1, **metrics: float) -> None: ...
    def note(self, message: str) -> None: ...
    def stop(self) -> None: ...


class SilentProgress:
    def start(self, description: str, total: int, completed: int = 0) -> None:
        pass

    def advance(self, steps: int = 1, **metrics: float) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def stop(self) -> None:
        pass
