"""The versions a server could not load: why, and the state of their files when it tried.

A damaged version is answered 503 model_unavailable with the one-line reason of its failed load,
at once and without loading it again, for as long as its files stay as they were; once any file
of its folder changes (its modification time or size, or a file added or removed), the next
request loads it again, so a fixed version serves without a restart.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import LmforgeError, ModelUnavailableError, describe_exception

logger = logging.getLogger("lmforge.serve")

#: (path inside the folder, modification time in ns, size) of every file, sorted by path.
Stamp = tuple[tuple[str, int, int], ...]


def files_stamp(folder: Path) -> Stamp:
    """The state of a version folder's files, to tell whether any changed since a load."""
    entries = []
    for path in folder.rglob("*"):
        try:
            stat = path.stat()
        except OSError:  # removed while walking: the next stamp will differ anyway
            continue
        if path.is_file():
            entries.append((path.relative_to(folder).as_posix(), stat.st_mtime_ns, stat.st_size))
    return tuple(sorted(entries))


@dataclass(frozen=True)
class Failure:
    error: ModelUnavailableError
    stamp: Stamp | None  # None: not a version folder (a catalogue encoder), loaded again on ask


class UnavailableModels:
    """The pool's record of failed loads, by pool key (``NAME:vN``, ``embed:NAME:vN``)."""

    def __init__(self) -> None:
        self._failed: dict[str, Failure] = {}

    def check(self, key: str, stamp: Stamp | None) -> None:
        """Raise the failure of ``key`` again if its files are as they were when it failed."""
        failure = self._failed.get(key)
        if failure is not None and stamp is not None and failure.stamp == stamp:
            raise ModelUnavailableError(failure.error.problem, failure.error.fix)

    def record(self, key: str, stamp: Stamp | None, exc: Exception) -> ModelUnavailableError:
        """Remember why ``key`` failed to load (logged once), as the one-line 503 to answer."""
        if isinstance(exc, LmforgeError):
            error = ModelUnavailableError(exc.problem, exc.fix)
            logger.error("cannot serve %s: %s", key, error.message)
        else:  # not a failure the loaders know: keep the traceback in the log
            error = ModelUnavailableError(
                f"cannot load {key} ({describe_exception(exc)})",
                "the version folder is damaged; re-register it or use another version",
            )
            logger.error("cannot serve %s", key, exc_info=exc)
        self._failed[key] = Failure(error, stamp)
        return error

    def forget(self, key: str) -> None:
        self._failed.pop(key, None)

    def reason(self, key: str) -> str | None:
        """Why ``key`` is not served (its last load failed), or None."""
        failure = self._failed.get(key)
        return failure.error.message if failure is not None else None
