"""The public façade is pinned: a name added to or dropped from ``lmforge.__all__`` is a
deliberate change to what users import, made here as well as in the package."""

from __future__ import annotations

import inspect
import pydoc
import subprocess
import sys

import lmforge

PUBLIC = [
    "LmforgeError",
    "ModelVersion",
    "Prediction",
    "Predictor",
    "Recipe",
    "Registry",
    "RunResult",
    "Settings",
    "load_recipe",
    "parse_recipe",
    "run_recipe",
]


def test_all_is_pinned() -> None:
    assert lmforge.__all__ == PUBLIC


def test_every_public_name_resolves_to_what_its_module_defines() -> None:
    for name in lmforge.__all__:
        value = getattr(lmforge, name)
        assert getattr(value, "__name__", name) == name


def test_importing_lmforge_loads_no_heavy_library() -> None:
    # The façade imports its names on first use, so the CLI starts fast.
    code = (
        "import sys, lmforge; "
        "print(sorted(m for m in ('torch', 'transformers', 'fastapi') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_dir_and_help_show_the_public_api() -> None:
    # The names are imported on first use; dir() must list them before any is touched.
    code = "import lmforge; print(' '.join(dir(lmforge)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert set(PUBLIC) <= set(out.stdout.split())
    text = pydoc.render_doc(lmforge, renderer=pydoc.plaintext)
    for name in PUBLIC:
        assert name in text, name


def test_every_public_name_has_a_docstring_of_its_own() -> None:
    assert lmforge.__doc__ and "run_recipe" in lmforge.__doc__
    for name in PUBLIC:
        doc = inspect.getdoc(getattr(lmforge, name)) or ""
        # a dataclass without one gets its signature, "Name(field: type, ...)", as its doc
        assert len(doc) > 40 and not doc.startswith(f"{name}("), name
    run_doc = inspect.getdoc(lmforge.run_recipe) or ""
    assert "register" in run_doc and "RunResult" in run_doc
