"""The inference runtime: load a registered version and predict."""

from lmforge.runtime.predictor import Prediction, Predictor

__all__ = ["Prediction", "Predictor"]
