"""lmforge: adapt, evaluate and register language models from one declarative recipe.

The public façade; everything else lives in one folder per lifecycle stage. Names are imported
on first use, so ``import lmforge`` (and the CLI's start-up) stays fast.

- :func:`load_recipe` / :func:`parse_recipe` → a validated :class:`Recipe` (a YAML file, or a
  mapping); :func:`run_recipe` runs it → a :class:`RunResult` (metrics, baselines, the
  registered :class:`ModelVersion`);
- :class:`Registry` lists, gets, promotes, archives and deletes versions;
- :class:`Predictor` classifies texts with a registered version → :class:`Prediction`;
- :class:`Settings` says where state lives; every error a user can fix is an
  :class:`LmforgeError` with a one-line message.

Example::

    import lmforge

    result = lmforge.run_recipe(lmforge.load_recipe("examples/sentiment-en.yaml"))
    print(lmforge.Predictor(result.version.path).predict(["What a film!"]))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmforge.errors import LmforgeError
    from lmforge.recipe import Recipe, load_recipe, parse_recipe
    from lmforge.registry import ModelVersion, Registry
    from lmforge.runtime import Prediction, Predictor
    from lmforge.settings import Settings
    from lmforge.tasks import RunResult, run_recipe

__version__ = "0.1.0"
_EXPORTS = {
    "LmforgeError": "lmforge.errors",
    "ModelVersion": "lmforge.registry",
    "Prediction": "lmforge.runtime",
    "Predictor": "lmforge.runtime",
    "Recipe": "lmforge.recipe",
    "Registry": "lmforge.registry",
    "RunResult": "lmforge.tasks",
    "Settings": "lmforge.settings",
    "load_recipe": "lmforge.recipe",
    "parse_recipe": "lmforge.recipe",
    "run_recipe": "lmforge.tasks",
}
__all__ = [
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


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lmforge' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The public names are imported on first use, so they are not in globals() yet: list them
    # too, so that dir(lmforge), help(lmforge) and tab completion show the API.
    return sorted({*globals(), *__all__})
