"""Progress from a converting child process: the child writes events on its stdout, the
parent relays them to its ProgressReporter as they come.

A base model's one-time conversion runs in a child process (see gguf_convert.py); without this,
its minute of work would be a silent wait. Each event is one line, ``@lmforge-progress`` and a
JSON object: ``{"start": description, "total": n}``, ``{"advance": steps}`` or
``{"note": message}``; any other output of the child is ignored, and its last line of stderr
names the problem when it fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from lmforge.progress import ProgressReporter

__all__ = ["report_to_parent", "reporting_iterable", "run_reporting_child"]

T = TypeVar("T")
_MARK = "@lmforge-progress "


def report_to_parent(**event: Any) -> None:
    """In the child: send one event to the parent."""
    sys.stdout.write(_MARK + json.dumps(event) + "\n")
    sys.stdout.flush()


def reporting_iterable(iterable: Iterable[T], *_: Any, desc: str = "", **__: Any) -> Iterator[T]:
    """In the child: tqdm's call shape, reporting a bar over the items to the parent instead
    of drawing one."""
    items = list(iterable)
    report_to_parent(start=desc.rstrip(". ") or "converting", total=len(items))
    for item in items:
        yield item
        report_to_parent(advance=1)


def run_reporting_child(
    command: list[str], progress: ProgressReporter, failure: Callable[[str], Exception]
) -> None:
    """Run `command`, relaying its events to `progress`; raise `failure(last stderr line)` when
    it exits with an error."""
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8") as errors:
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=errors, text=True, encoding="utf-8"
        ) as child:
            assert child.stdout is not None
            started = False
            try:
                for line in child.stdout:
                    if not line.startswith(_MARK):
                        continue
                    event = json.loads(line[len(_MARK) :])
                    if "start" in event:
                        if started:
                            progress.stop()
                        progress.start(str(event["start"]), int(event["total"]))
                        started = True
                    elif "advance" in event:
                        progress.advance(int(event["advance"]))
                    elif "note" in event:
                        progress.note(str(event["note"]))
            finally:
                if started:
                    progress.stop()
        if child.returncode != 0:
            errors.seek(0)
            lines = [line for line in errors.read().splitlines() if line.strip()]
            raise failure(lines[-1] if lines else "")
