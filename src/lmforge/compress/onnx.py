"""ONNX export of a registered classifier and ONNX Runtime int8 quantisation.

``torch.onnx.export`` runs with ``dynamo=False``: the dynamo exporter's graphs break ONNX
Runtime's quantiser. Attention is exported in eager form so ONNX Runtime's transformer optimiser
can recognise and fuse it. optimum's ONNX tools pin an old transformers, so this calls
``onnxruntime.quantization`` directly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

from lmforge.errors import LmforgeError, first_line
from lmforge.models.classifier import quiet_transformers
from lmforge.models.loading import from_pretrained

OPSET = 17
INPUTS = ("input_ids", "attention_mask")
MIN_CALIBRATION_ROWS = 32


def export_onnx(model_dir: Path, out_path: Path) -> Path:
    """Export the classifier in ``model_dir`` to ``out_path`` (logits output, dynamic shapes)."""
    with quiet_transformers():
        model = from_pretrained(
            AutoModelForSequenceClassification, str(model_dir), attn_implementation="eager"
        )
    model.eval()
    example = {
        "input_ids": torch.ones((2, 16), dtype=torch.long),
        "attention_mask": torch.ones((2, 16), dtype=torch.long),
    }
    dynamic = {name: {0: "batch", 1: "sequence"} for name in INPUTS}
    dynamic["logits"] = {0: "batch"}
    tmp = out_path.with_name(out_path.name + ".tmp")
    try:
        # The tracer warns about every Python-level branch in transformers' masking code; the
        # parity tests are what tell us the graph is right.
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example["input_ids"], example["attention_mask"]),
                str(tmp),
                input_names=list(INPUTS),
                output_names=["logits"],
                dynamic_axes=dynamic,
                opset_version=OPSET,
                dynamo=False,
            )
    except Exception as exc:  # exporters fail in many ways on unsupported architectures
        tmp.unlink(missing_ok=True)
        raise LmforgeError(
            f"cannot export {type(model).__name__} to ONNX ({first_line(exc)})",
            "use the torch backends for this architecture",
        ) from exc
    os.replace(tmp, out_path)
    return out_path


def optimize_onnx(
    onnx_path: Path, out_path: Path, *, num_heads: int = 0, hidden_size: int = 0
) -> Path:
    """Fuse attention, GELU, layer norms and embeddings with ONNX Runtime's transformer optimiser.

    The graphs transformers 5 exports hide the head count from the optimiser's detection, so
    pass it (and the attention width) from the model's config; 0 means "detect".
    """
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(onnx_path), model_type="bert", num_heads=num_heads, hidden_size=hidden_size
    )
    tmp = out_path.with_name(out_path.name + ".tmp")
    optimized.save_model_to_file(str(tmp))
    os.replace(tmp, out_path)
    return out_path


def quantize_dynamic_int8(
    onnx_path: Path, out_path: Path, *, per_channel: bool = True, reduce_range: bool = False
) -> Path:
    """Weights int8 (per output channel by default), activations quantised at run time.

    ``reduce_range`` (7-bit weights) avoids u8×s8 saturation on CPUs without VNNI.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def run(typed: str, out: str) -> None:
        quantize_dynamic(
            typed,
            out,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            reduce_range=reduce_range,
        )

    return _quantize(onnx_path, out_path, run)


def _quantize(onnx_path: Path, out_path: Path, run: Callable[[str, str], None]) -> Path:
    """Run a quantiser ``run(typed_input, output)`` on a copy of the graph with every tensor's
    type, writing ``out_path`` atomically; the temporary files go whatever happens."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    typed = out_path.with_name(out_path.name + ".shapes.tmp")
    tmp = out_path.with_name(out_path.name + ".tmp")
    try:
        # The quantisers need every tensor's type, and fused transformer ops (Attention,
        # SkipLayerNormalization) only get them from symbolic inference. auto_merge: the
        # exported position-id slice (min(max_positions, sequence)) is otherwise an
        # unresolvable symbolic dimension.
        quant_pre_process(str(onnx_path), str(typed), skip_optimization=True, auto_merge=True)
        with _quiet_root_logger():
            run(str(typed), str(tmp))
        os.replace(tmp, out_path)
    finally:
        typed.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return out_path


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime's quantiser logs routine notes as root-logger warnings."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_static_int8(
    onnx_path: Path,
    out_path: Path,
    calibration: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    reduce_range: bool = False,
) -> Path:
    """Weights and activations int8, activation ranges calibrated on ``calibration`` batches
    of (input_ids, attention_mask); QDQ format, per-channel weights (ONNX Runtime's CPU advice).
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    rows = sum(len(ids) for ids, _ in calibration)
    if rows < MIN_CALIBRATION_ROWS:
        raise LmforgeError(
            f"static int8 calibration needs at least {MIN_CALIBRATION_ROWS} rows, got {rows}",
            "give more training rows, or drop onnx-int8-static from compress.formats",
        )

    class Batches(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._batches = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else dict(zip(INPUTS, batch, strict=True))

    def run(typed: str, out: str) -> None:
        quantize_static(
            typed,
            out,
            Batches(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )

    return _quantize(onnx_path, out_path, run)
