"""ONNX export of a registered classifier and ONNX Runtime int8 quantisation.

``torch.onnx.export`` runs with ``dynamo=False``: the dynamo exporter's graphs break ONNX
Runtime's quantiser. Attention is exported in eager form so ONNX Runtime's transformer optimiser
can recognise and fuse it. optimum's ONNX tools pin an old transformers, so this calls
``onnxruntime.quantization`` directly.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification

from lmforge.errors import LmforgeError
from lmforge.models.classifier import quiet_transformers

OPSET = 17
INPUTS = ("input_ids", "attention_mask")


def export_onnx(model_dir: Path, out_path: Path) -> Path:
    """Export the classifier in ``model_dir`` to ``out_path`` (logits output, dynamic shapes)."""
    with quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(
            str(model_dir), attn_implementation="eager"
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
        with torch.inference_mode():
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
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise LmforgeError(
            f"cannot export {type(model).__name__} to ONNX ({first})",
            "use the torch backends for this architecture",
        ) from exc
    os.replace(tmp, out_path)
    return out_path


def quantize_dynamic_int8(onnx_path: Path, out_path: Path, *, per_channel: bool = True) -> Path:
    """Weights int8 (per output channel by default), activations quantised at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = out_path.with_name(out_path.name + ".tmp")
    quantize_dynamic(
        str(onnx_path),
        str(tmp),
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
    )
    shutil.move(str(tmp), str(out_path))
    return out_path
