"""Write a model folder atomically: build it in a temporary sibling, then rename it into place;
and find the packages that ship model files, without importing them.

Concurrent converters (two servers starting at once) may race; the loser keeps the winner's
folder as long as it is complete, so a reader never sees a half-written model.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from lmforge.errors import ModelNotFoundError

__all__ = ["packaged_file", "require_package", "write_folder_atomically"]


def write_folder_atomically(
    dest: Path, write: Callable[[Path], None], is_complete: Callable[[Path], bool]
) -> Path:
    """Call `write(tmp)` on an empty temporary folder, then move it to `dest`; return dest."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:12]
    tmp = dest.with_name(f".{dest.name}.{tag}.tmp")
    old = dest.with_name(f".{dest.name}.{tag}.old")
    tmp.mkdir()
    try:
        write(tmp)
        if dest.exists():
            # a directory cannot be renamed over a non-empty one: move the stale one aside first
            with contextlib.suppress(FileNotFoundError):  # a concurrent converter moved it
                os.replace(dest, old)
        try:
            os.replace(tmp, dest)
        except OSError:
            if not is_complete(dest):  # lost a race to another converter only if it finished
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return dest


def require_package(module: str, what: str, package: str, install: str) -> None:
    """Raise ModelNotFoundError, naming the install command, when ``module`` is not installed
    (cheap: the package is found, never imported)."""
    if importlib.util.find_spec(module) is None:
        raise ModelNotFoundError(f"{what} needs the package {package}, not installed", install)


def packaged_file(package: str, filename: str, what: str, install: str) -> Path:
    """A data file shipped inside an installed package, found without importing the package
    (their own code may need heavy dependencies we never install)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"{what} needs the package {package}, not installed", install)
    return Path(next(iter(spec.submodule_search_locations))) / filename
