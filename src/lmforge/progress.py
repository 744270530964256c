"""How long-running library calls report progress without printing.

The library calls a :class:`ProgressReporter` that its caller chooses: the CLI passes one that
draws on its console, tests pass :class:`SilentProgress`, the server :class:`LoggingProgress`.
A Python user who passes nothing to :func:`lmforge.run_recipe` gets :class:`BarProgress` — a
progress bar on stderr, or a live one in a Jupyter notebook, as Hugging Face's ``Trainer``
shows — unless they silence it with ``progress=False`` or by setting the ``lmforge`` logger
above INFO (``logging.getLogger("lmforge").setLevel(logging.WARNING)``); :func:`resolve_progress`
is that rule. One-time preparations (converting a base model, compiling a kernel) report
through the same interface, so whoever waits sees what is being done.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

__all__ = [
    "BarProgress",
    "LoggingProgress",
    "ProgressArg",
    "ProgressReporter",
    "SilentProgress",
    "resolve_progress",
]


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


class BarProgress:
    """A rich progress bar on stderr (rich renders a live widget in a notebook), with notes
    printed above it: what a Python caller gets by default. Where stderr is neither a terminal
    nor a notebook (a log file, CI, ``nohup``) a live bar would show nothing until the end, so
    it prints a line per tenth done instead."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self._bar: Any = None
        self._task: Any = None
        self._lines: tuple[str, int, int] | None = None  # description, total, done

    def start(self, description: str, total: int, completed: int = 0) -> None:
        if not (self.console.is_terminal or self.console.is_jupyter):
            self.stop()
            self._lines = (description, total, completed)
            self.console.print(f"{description}: {completed}/{total}", markup=False)
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.stop()
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[metrics]}"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, completed=completed, metrics="")

    def advance(self, steps: int = 1, **metrics: float) -> None:
        shown = " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        if self._bar is not None:
            self._bar.update(self._task, advance=steps, metrics=shown)
        elif self._lines is not None:
            description, total, before = self._lines
            done = before + steps
            self._lines = (description, total, done)
            tenth = max(1, total // 10)
            if done // tenth > before // tenth and done < total:
                self.console.print(f"{description}: {done}/{total} {shown}".rstrip(), markup=False)

    def note(self, message: str) -> None:
        (self._bar.console if self._bar is not None else self.console).print(
            message, markup=False, highlight=False
        )

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if self._lines is not None:
            description, total, done = self._lines
            self.console.print(f"{description}: {done}/{total} done", markup=False)
            self._lines = None


class LoggingProgress:
    """Progress as log records (a server has no terminal to draw on): notes at INFO, and a bar
    as one record when it starts, one per tenth done and one when it stops."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._description = ""
        self._total = 0
        self._done = 0

    def start(self, description: str, total: int, completed: int = 0) -> None:
        self._description, self._total, self._done = description, total, completed
        self.logger.info("%s: %d/%d", description, completed, total)

    def advance(self, steps: int = 1, **metrics: float) -> None:
        before, self._done = self._done, self._done + steps
        tenth = max(1, self._total // 10)
        if self._done // tenth > before // tenth and self._done < self._total:
            self.logger.info("%s: %d/%d", self._description, self._done, self._total)

    def note(self, message: str) -> None:
        self.logger.info("%s", message)

    def stop(self) -> None:
        if self._description:
            self.logger.info("%s: %d/%d done", self._description, self._done, self._total)
            self._description = ""


#: What a public function's ``progress`` argument takes: a reporter, True (a bar), False
#: (silence) or None (a bar unless the ``lmforge`` logger is set above INFO).
ProgressArg = ProgressReporter | bool | None


def resolve_progress(progress: ProgressArg) -> ProgressReporter:
    """The reporter a ``progress`` argument stands for (see :data:`ProgressArg`)."""
    if progress is None:
        level = logging.getLogger("lmforge").level  # set by the user, not inherited
        progress = not (level > logging.INFO)
    if progress is True:
        return BarProgress()
    if progress is False:
        return SilentProgress()
    return progress
