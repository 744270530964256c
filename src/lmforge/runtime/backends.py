"""Inference backends: one call, token ids in, logits out, over torch or ONNX Runtime.

Every backend takes ``input_ids`` and ``attention_mask`` as int64 arrays of shape
(batch, length) and returns float32 logits of shape (batch, labels). torch and transformers are
imported only by the torch backends, so an ONNX model starts without them.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Protocol

import numpy as np

from lmforge.errors import LmforgeError
from lmforge.models.loading import unavailable_on_failure

TORCH_BACKENDS = ("torch-fp32", "torch-bf16", "torch-int8")
ONNX_FILES = {"onnx-fp32": "model.onnx", "onnx-int8": "model.int8.onnx"}
BACKENDS = TORCH_BACKENDS + tuple(ONNX_FILES)


class Backend(Protocol):
    name: str

    def size_mb(self) -> float:
        """Megabytes (10^6 bytes) of the weights this backend computes with."""
        ...

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...


def cpu_threads() -> int:
    """All cores this process may use (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def available_backends(folder: Path) -> list[str]:
    found = []
    if (folder / "model.safetensors").is_file() and (folder / "config.json").is_file():
        found += list(TORCH_BACKENDS)
    found += [name for name, file in ONNX_FILES.items() if (folder / file).is_file()]
    return found


def check_backend(folder: Path, name: str) -> None:
    """A one-line error unless ``name`` is a backend this model folder can run."""
    if name not in BACKENDS:
        raise LmforgeError(f"unknown backend '{name}'", f"choose one of {', '.join(BACKENDS)}")
    have = available_backends(folder)
    if name not in have:
        raise LmforgeError(
            f"backend '{name}' is not available for {folder.name} "
            f"(available: {', '.join(have) or 'none'})",
            "pick an available backend, or compress the model with `lmforge compress`",
        )


def load_backend(folder: Path, name: str, *, threads: int | None = None) -> Backend:
    check_backend(folder, name)
    threads = threads or cpu_threads()
    if name in ONNX_FILES:
        return OnnxBackend(folder / ONNX_FILES[name], name=name, threads=threads)
    return TorchBackend(folder, name=name, threads=threads)


class OnnxBackend:
    def __init__(self, path: Path, *, name: str = "onnx", threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        with unavailable_on_failure(
            f"the ONNX model {path}",
            "the file is corrupt or incomplete; re-run `lmforge compress` or use another version",
            errors=(Exception,),  # onnxruntime raises its own exception types for bad files
        ):
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        self.name = name
        self.path = path
        self._inputs = {i.name for i in self.session.get_inputs()}

    def size_mb(self) -> float:
        return self.path.stat().st_size / 1e6

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        (logits,) = self.session.run(["logits"], feed)
        return np.asarray(logits, dtype=np.float32)


class TorchBackend:
    def __init__(self, folder: Path, *, name: str = "torch-fp32", threads: int = 1) -> None:
        import torch

        from lmforge.models.classifier import load_classifier

        torch.set_num_threads(threads)
        with unavailable_on_failure(
            f"the model in {folder} (config.json, model.safetensors)",
            "the version folder is damaged; re-register it or use another version",
            errors=(Exception,),  # transformers and huggingface_hub raise their own types too
        ):
            model = load_classifier(folder)
        model.eval()
        module: torch.nn.Module = model
        if name == "torch-bf16":
            module = torch.nn.Module.to(model, torch.bfloat16)
        elif name == "torch-int8":
            with warnings.catch_warnings():  # deprecated for torchao, still the stock CPU path
                warnings.simplefilter("ignore")
                module = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
                    model, {torch.nn.Linear}, dtype=torch.qint8
                )
        self.name = name
        self.model = module
        self._torch = torch

    def size_mb(self) -> float:
        """The serialised state: bf16 is half of fp32, int8 shows its quantised layers."""
        buffer = io.BytesIO()
        self._torch.save(self.model.state_dict(), buffer)
        return buffer.tell() / 1e6

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self.model(
                input_ids=torch.from_numpy(input_ids),
                attention_mask=torch.from_numpy(attention_mask),
            )
        return np.asarray(out.logits.float().numpy(), dtype=np.float32)
