"""Compression variants: a *structure* (the trained model, a pruned copy, a distilled student)
in a numeric *format* (torch fp32/bf16/int8, ONNX Runtime fp32 or int8 three ways), and how each
one is built from a registered classifier's folder."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np

from lmforge.compress.onnx import (
    export_onnx,
    optimize_onnx,
    quantize_dynamic_int8,
    quantize_static_int8,
)
from lmforge.data import PreparedData
from lmforge.errors import LmforgeError, describe_exception
from lmforge.hardware import cpu_has_native_bf16
from lmforge.models.meta import derived_meta, read_model_meta, write_model_meta
from lmforge.models.tokenizer import TextTokenizer
from lmforge.progress import ProgressReporter
from lmforge.recipe.schema import CompressConfig, CompressFormat
from lmforge.runtime.predictor import length_buckets

ALL_FORMATS: tuple[str, ...] = get_args(CompressFormat)
REFERENCE = "original/torch-fp32"
# Files that make a model folder usable by every backend (the ONNX file is added per variant);
# lmforge.json is rewritten, not copied.
WEIGHTS = "model.safetensors"
FOLDER_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "sentencepiece.bpe.model",
)


@dataclass
class Variant:
    structure: str
    format: str
    folder: Path
    onnx_file: Path | None = None
    size_mb: float = 0.0
    accuracy: float | None = None
    macro_f1: float | None = None
    delta_points: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    sequences_per_second: float | None = None
    speedup: float | None = None
    within_budget: bool = False
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return f"{self.structure}/{self.format}"

    @property
    def runtime_backend(self) -> str:
        """The runtime backend that serves this variant once registered."""
        if self.format.startswith("onnx-int8"):
            return "onnx-int8"
        return self.format

    def to_json(self) -> dict[str, Any]:
        row = asdict(self)
        for key in ("folder", "onnx_file", "metrics"):
            row.pop(key)
        row["name"] = self.name
        return row


def default_formats() -> list[str]:
    return [f for f in ALL_FORMATS if f != "torch-bf16" or cpu_has_native_bf16()]


class TokenisedSplit:
    """Train and test rows as token ids, tokenised once the way the runtime does it."""

    def __init__(self, data: PreparedData, tokenizer: TextTokenizer) -> None:
        self.labels = data.labels
        self.train_rows = tokenizer(data.train["text"].tolist())
        self.train_labels = data.label_ids("train").tolist()
        self.test_rows = tokenizer(data.test["text"].tolist())
        self.test_labels = data.label_ids("test")
        self.pad_id = tokenizer.pad_id


def copy_model_folder(src: Path, dst: Path, *, weights: bool = True, **meta_updates: Any) -> Path:
    """Config, tokenizer and (unless the caller writes its own) weights of ``src`` into ``dst``,
    with lmforge.json rewritten: no registered backend, plus ``meta_updates``."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS, *FOLDER_FILES) if weights else FOLDER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    write_model_meta(dst, derived_meta(read_model_meta(src), **meta_updates))
    return dst


def _save_structure(model: Any, source: Path, dst: Path, note: dict[str, Any]) -> Path:
    from lmforge.models.classifier import quiet_transformers

    copy_model_folder(source, dst, weights=False, structure=note)
    with quiet_transformers():
        model.save_pretrained(str(dst))
    return dst


def build_pruned(
    source: Path,
    dst: Path,
    config: CompressConfig,
    split: TokenisedSplit,
    progress: ProgressReporter,
) -> Path:
    from lmforge.compress.prune import prune_classifier
    from lmforge.models.classifier import load_classifier

    teacher, student = load_classifier(source), load_classifier(source)
    report = prune_classifier(
        student,
        split.train_rows,
        split.train_labels,
        pad_id=split.pad_id,
        head_fraction=config.prune.head_fraction,
        ffn_fraction=config.prune.ffn_fraction,
    )
    # Recovery is distillation from the unpruned model: soft labels carry more than labels.
    recovery = _distill_from(
        teacher, student, config, config.prune.recovery_epochs, split, progress
    )
    note = {"kind": "pruned", "prune": report.to_json(), "recovery": recovery}
    return _save_structure(student, source, dst, note)


def build_distilled(
    source: Path,
    dst: Path,
    config: CompressConfig,
    split: TokenisedSplit,
    progress: ProgressReporter,
) -> Path:
    from lmforge.compress.distill import make_student
    from lmforge.models.classifier import load_classifier

    teacher = load_classifier(source)
    student = make_student(teacher, config.distill.layers)
    training = _distill_from(teacher, student, config, config.distill.epochs, split, progress)
    note = {"kind": "distilled", "layers": config.distill.layers, "training": training}
    return _save_structure(student, source, dst, note)


def _distill_from(
    teacher: Any,
    student: Any,
    config: CompressConfig,
    epochs: float,
    split: TokenisedSplit,
    progress: ProgressReporter,
) -> dict[str, Any]:
    from lmforge.compress.distill import distill

    report = distill(
        teacher,
        student,
        split.train_rows,
        split.train_labels,
        pad_id=split.pad_id,
        epochs=epochs,
        learning_rate=config.distill.learning_rate,
        temperature=config.distill.temperature,
        alpha=config.distill.alpha,
        progress=progress,
    )
    return report.to_json()


def build_formats(
    structure: str,
    folder: Path,
    formats: Sequence[str],
    config: CompressConfig,
    split: TokenisedSplit,
    reduce_range: bool,
    notes: list[str],
) -> list[Variant]:
    variants = [Variant(structure, fmt, folder) for fmt in formats]
    onnx_variants = [v for v in variants if v.format.startswith("onnx")]
    if not onnx_variants:
        return variants
    try:
        fp32 = export_onnx(folder, folder / "model.export.onnx")
        if config.optimize_graph:
            exported, fp32 = fp32, optimize_onnx(fp32, folder / "model.onnx", **_heads(folder))
            exported.unlink()
        else:
            fp32 = fp32.rename(folder / "model.onnx")
    except LmforgeError as exc:
        notes.append(f"{structure}: {exc.message}")
        for v in onnx_variants:
            v.error = exc.message
        return variants
    for v in onnx_variants:
        try:
            if v.format == "onnx-fp32":
                v.onnx_file = fp32
            elif v.format == "onnx-int8-static":
                calibration = _calibration_batches(split, config.calibration_rows)
                v.onnx_file = quantize_static_int8(
                    fp32, folder / "model.int8-static.onnx", calibration, reduce_range=reduce_range
                )
            else:
                per_channel = v.format == "onnx-int8-per-channel"
                v.onnx_file = quantize_dynamic_int8(
                    fp32,
                    folder / f"model.{v.format.removeprefix('onnx-')}.onnx",
                    per_channel=per_channel,
                    reduce_range=reduce_range,
                )
        except LmforgeError:
            raise
        except Exception as exc:  # a quantiser failing on one graph must not sink the others
            v.error = describe_exception(exc, 160)
    return variants


def _heads(folder: Path) -> dict[str, int]:
    """Attention heads and width for the ONNX optimiser, from the config (0: let it detect).
    Pruning masks heads rather than removing them, so the config's counts stay true."""
    config = json.loads((folder / "config.json").read_text())
    return {
        "num_heads": int(config.get("num_attention_heads", 0)),
        "hidden_size": int(config.get("hidden_size", 0)),
    }


def _calibration_batches(
    split: TokenisedSplit, rows: int, batch_size: int = 16
) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    take = rng.permutation(len(split.train_rows))[:rows]
    chosen = [split.train_rows[i] for i in take]
    return [(ids, mask) for _, ids, mask in length_buckets(chosen, batch_size, split.pad_id)]
