"""Deleting a version's folder and its row as one step: the folder is first renamed to a
tombstone inside the registry root (atomic on one file system), then the row is deleted in a
transaction, then the tombstone is removed.

A crash between these steps leaves a tombstone beside a note of what it was. :func:`settle`,
run whenever a registry is opened, finishes the job either way: a tombstone whose row is gone
is removed (the delete committed), one whose row still exists is renamed back (it did not). So
a version is either whole — folder and row — or gone, never one without the other.

A delete holds :func:`graveyard_lock` from burying to removing; :func:`settle` only runs when it
can take that lock at once, so it never restores a tombstone another process is deleting (and
opening a registry never waits for a delete).
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock, Timeout

TOMBSTONES = ".tombstones"


def graveyard_lock(root: Path) -> FileLock:
    """The lock a delete holds (every process deleting in this registry root takes the same)."""
    root.mkdir(parents=True, exist_ok=True)
    return FileLock(str(root / f"{TOMBSTONES}.lock"))


@dataclass(frozen=True)
class Tombstone:
    """A version folder being deleted: where it lies now, where it came from and which row it
    belonged to (``created_at`` tells that row from a later version given the same number)."""

    folder: Path
    name: str
    version: int
    path: str  # the version's folder before the delete
    created_at: str  # the row's creation time, ISO 8601

    @property
    def note(self) -> Path:
        return self.folder.with_suffix(".json")


def bury(root: Path, folder: Path, *, name: str, version: int, created_at: str) -> Tombstone:
    """Move a version's folder out of sight, after writing the note :func:`settle` reads."""
    (root / TOMBSTONES).mkdir(parents=True, exist_ok=True)
    tomb = Tombstone(root / TOMBSTONES / uuid.uuid4().hex, name, version, str(folder), created_at)
    fields = {k: v for k, v in asdict(tomb).items() if k != "folder"}
    tomb.note.write_text(json.dumps(fields), encoding="utf-8")
    if folder.exists():
        folder.rename(tomb.folder)
    return tomb


def restore(tomb: Tombstone) -> None:
    """Put a tombstone's folder back where it was (its row was not deleted)."""
    if tomb.folder.exists() and not Path(tomb.path).exists():
        tomb.folder.rename(tomb.path)
    tomb.note.unlink(missing_ok=True)


def remove(tomb: Tombstone) -> None:
    """Remove a tombstone for good (its row is gone); the note goes last, so a crash half-way
    through leaves a note that the next :func:`settle` finishes."""
    shutil.rmtree(tomb.folder, ignore_errors=True)
    tomb.note.unlink(missing_ok=True)


def settle(root: Path, row_exists: Callable[[Tombstone], bool]) -> None:
    """Finish every delete a crash interrupted: restore a tombstone whose row still exists,
    remove one whose row is gone; a note cut short (a crash while writing it, before the folder
    moved) is dropped, and so is a folder left without its note by a removal cut short."""
    graveyard = root / TOMBSTONES
    if not graveyard.is_dir():
        return
    try:
        with graveyard_lock(root).acquire(timeout=0):
            _settle(graveyard, row_exists)
    except Timeout:
        return  # a delete is under way; it finishes its own tombstone


def _settle(graveyard: Path, row_exists: Callable[[Tombstone], bool]) -> None:
    for note in graveyard.glob("*.json"):
        try:
            fields = json.loads(note.read_text(encoding="utf-8"))
            tomb = Tombstone(note.with_suffix(""), **fields)
        except (ValueError, TypeError):  # a note cut short: written before any folder moved
            note.unlink(missing_ok=True)
            continue
        if row_exists(tomb):
            restore(tomb)
        else:
            remove(tomb)
    for folder in graveyard.iterdir():
        if folder.is_dir() and not folder.with_suffix(".json").exists():
            shutil.rmtree(folder, ignore_errors=True)
