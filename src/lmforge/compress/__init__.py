"""Compression: ONNX export and int8 quantisation (work in progress toward issue 3)."""

from lmforge.compress.onnx import export_onnx, quantize_dynamic_int8

__all__ = ["export_onnx", "quantize_dynamic_int8"]
