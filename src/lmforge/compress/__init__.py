"""Compression: ONNX export, graph optimisation, int8 quantisation, pruning and distillation,
and the stage that tries them all and registers the fastest variant within an accuracy budget."""

from lmforge.compress._finetune import CompressionError, DistillReport
from lmforge.compress.distill import distill, make_student
from lmforge.compress.onnx import (
    export_onnx,
    optimize_onnx,
    quantize_dynamic_int8,
    quantize_static_int8,
)
from lmforge.compress.prune import PruneReport, prune_classifier, recover
from lmforge.compress.stage import CompressResult, compress_version
from lmforge.compress.variants import Variant

__all__ = [
    "CompressResult",
    "CompressionError",
    "DistillReport",
    "PruneReport",
    "Variant",
    "compress_version",
    "distill",
    "export_onnx",
    "make_student",
    "optimize_onnx",
    "prune_classifier",
    "quantize_dynamic_int8",
    "quantize_static_int8",
    "recover",
]
