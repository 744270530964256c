"""The inference runtime: load a registered version and predict, on torch or ONNX Runtime."""

from lmforge.runtime.backends import BACKENDS, available_backends, load_backend
from lmforge.runtime.predictor import Prediction, Predictor, length_buckets

__all__ = [
    "BACKENDS",
    "Prediction",
    "Predictor",
    "available_backends",
    "length_buckets",
    "load_backend",
]
