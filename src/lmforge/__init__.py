"""lmforge: adapt, evaluate and register language models from one declarative recipe.

The public façade; everything else lives in one folder per lifecycle stage.
"""

from lmforge.errors import LmforgeError
from lmforge.pipeline import RunResult, run_recipe
from lmforge.recipe import Recipe, load_recipe, parse_recipe
from lmforge.registry import ModelVersion, Registry
from lmforge.runtime import Prediction, Predictor
from lmforge.settings import Settings

__version__ = "0.1.0"
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
