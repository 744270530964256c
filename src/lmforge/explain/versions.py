"""Registered versions explained: which weights explain a version, and ``lmforge explain``.

A version with torch weights (``model.safetensors``) is explained with them, whatever backend
serves it (an int8 or bf16 backend is the same weights rounded); a compressed version without
them (ONNX only) with the weights of the version it was compressed from (its ``parent``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.explain.explainer import Explainer
from lmforge.explain.explanation import METHODS, Explanation, Method
from lmforge.registry import Registry
from lmforge.registry.refs import resolve_model
from lmforge.runtime.backends import available_backends
from lmforge.settings import Settings


@dataclass(frozen=True)
class ExplainTarget:
    """Where a version's files are: what serves it and which torch weights explain it."""

    ref: str
    folder: Path
    torch_ref: str | None
    torch_folder: Path | None


def explain_target(
    ref: str, settings: Settings | None = None, *, registry: Registry | None = None
) -> ExplainTarget:
    """Resolve ``ref`` (a registered classifier, ``NAME[:VERSION]``) and find the torch weights
    its gradient methods run on: its own, else its parent's (None when neither has them).
    ``registry`` reuses an open registry."""
    registry = registry or Registry(settings)
    found = resolve_model(ref, "classifier", settings, registry=registry)
    version = found.version
    if version is None:  # resolve_model gives a classifier only from the registry
        raise AssertionError(f"{ref} resolved to a classifier outside the registry")
    torch_ref: str | None = None
    torch_folder: Path | None = None
    if "torch-fp32" in available_backends(version.path):
        torch_ref, torch_folder = version.ref, version.path
    elif version.parent is not None:
        parent = registry.get(version.parent)
        if "torch-fp32" in available_backends(parent.path):
            torch_ref, torch_folder = parent.ref, parent.path
    return ExplainTarget(version.ref, version.path, torch_ref, torch_folder)


def load_explainer(
    ref: str,
    settings: Settings | None = None,
    *,
    backend: str | None = None,
    threads: int | None = None,
) -> Explainer:
    """An :class:`Explainer` for the registered version ``ref`` on ``backend`` (default: its
    registered one)."""
    found = explain_target(ref, settings)
    return Explainer(
        found.folder,
        found.ref,
        backend=backend,
        torch_folder=found.torch_folder,
        torch_ref=found.torch_ref,
        threads=threads,
    )


def explain_version(
    ref: str,
    texts: Sequence[str],
    method: Method = "ig",
    *,
    steps: int | None = None,
    target: str | None = None,
    settings: Settings | None = None,
) -> list[Explanation]:
    """``lmforge explain``: each text's explanation by the registered version ``ref``."""
    if not texts:
        raise LmforgeError("no texts to explain", "pass one or more texts after the model")
    if method not in METHODS:  # before the model loads
        raise LmforgeError(f"unknown method '{method}'", f"choose one of {', '.join(METHODS)}")
    explainer = load_explainer(ref, settings)
    return [explainer.explain(t, method, steps=steps, target=target) for t in texts]
