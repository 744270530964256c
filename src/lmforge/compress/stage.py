"""The compress stage: build variants of a registered classifier, evaluate and time each one,
and register the fastest that stays within the accuracy budget.

A variant is a *structure* (the trained model, a pruned copy, a distilled student) in a numeric
*format* (torch fp32/bf16/int8, ONNX Runtime fp32 or int8 three ways). Every variant runs on the
same test split through the same runtime backends the server uses, so the trade-off table is
what users will get. The reference is the source version in torch fp32, measured in this run.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import numpy as np

from lmforge.compress.onnx import (
    MIN_CALIBRATION_ROWS,
    export_onnx,
    optimize_onnx,
    quantize_dynamic_int8,
    quantize_static_int8,
)
from lmforge.data import PreparedData, prepare_data
from lmforge.errors import DataError, LmforgeError, RecipeError, describe_exception
from lmforge.evaluate.metrics import classification_metrics
from lmforge.hardware import cpu_has_int8_dot, cpu_has_native_bf16
from lmforge.models.meta import derived_meta, read_model_meta, require_classifier, write_model_meta
from lmforge.models.tokenizer import TextTokenizer
from lmforge.progress import ProgressReporter, SilentProgress
from lmforge.recipe import dump_recipe, load_recipe
from lmforge.recipe.schema import CompressConfig, CompressFormat, Recipe
from lmforge.registry import ModelVersion, Registry
from lmforge.runtime.backends import (
    ONNX_FILES,
    Backend,
    OnnxBackend,
    TorchBackend,
    cpu_threads,
)
from lmforge.runtime.measure import measure_latency, measure_throughput, packed_rows
from lmforge.runtime.predictor import length_buckets
from lmforge.settings import Settings, get_settings

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


@dataclass
class CompressResult:
    source: ModelVersion
    run_dir: Path
    variants: list[Variant]
    chosen: Variant | None
    version: ModelVersion | None
    max_accuracy_drop: float
    notes: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source.ref,
            "run_dir": str(self.run_dir),
            "max_accuracy_drop": self.max_accuracy_drop,
            "reference": REFERENCE,
            "variants": [v.to_json() for v in self.variants],
            "chosen": self.chosen.name if self.chosen else None,
            "version": self.version.to_json() if self.version else None,
            "notes": self.notes,
        }


def default_formats() -> list[str]:
    return [f for f in ALL_FORMATS if f != "torch-bf16" or cpu_has_native_bf16()]


def compress_version(
    ref: str,
    config: CompressConfig | None = None,
    *,
    settings: Settings | None = None,
    register: bool = True,
    progress: ProgressReporter | None = None,
) -> CompressResult:
    """Compress the registered version ``ref`` (``name[:version]``) as ``config`` says; the
    config defaults to the ``compress`` section of the version's own recipe.

    With ``register`` (the CLI's way) the chosen variant becomes a new version and the variant
    model files are deleted afterwards (the trade-off table and chart stay in the run folder);
    without it, nothing is registered and every variant's files are kept for inspection."""
    settings = settings or get_settings()
    progress = progress or SilentProgress()
    registry = Registry(settings)
    source = registry.get(ref)
    if source.task != "classification":
        raise LmforgeError(
            f"{source.ref} is a {source.task} model; compression handles classifiers",
            "give a classification model",
        )
    recipe = load_recipe(source.path / "recipe.yaml")
    config = config or recipe.compress
    formats = check_compress_config(config, source.path)

    data = prepare_data(recipe.data)
    if "onnx-int8-static" in formats and len(data.train) < MIN_CALIBRATION_ROWS:
        raise DataError(
            f"static int8 calibration needs at least {MIN_CALIBRATION_ROWS} training rows, "
            f"the train split of {source.ref} has {len(data.train)}",
            "drop onnx-int8-static from compress.formats",
        )
    run_dir = settings.runs_dir / (
        f"compress-{source.name}-v{source.version}-{datetime.now(UTC):%Y%m%d-%H%M%S-%f}"
    )
    run_dir.mkdir(parents=True)
    meta = require_classifier(read_model_meta(source.path), source.path)
    tokenizer = TextTokenizer(source.path, meta.max_length, meta.text_prefix)
    split = _TokenisedSplit(data, tokenizer)
    notes: list[str] = []

    folders = {"original": _copy_model_folder(source.path, run_dir / "original")}
    if "pruned" in config.structures:
        progress.note("pruning attention heads and FFN neurons, then a recovery fine-tune")
        folders["pruned"] = _build_pruned(source.path, run_dir / "pruned", config, split, progress)
    if "distilled" in config.structures:
        progress.note(f"distilling into a {config.distill.layers}-layer student")
        folders["distilled"] = _build_distilled(
            source.path, run_dir / "distilled", config, split, progress
        )

    variants: list[Variant] = []
    reduce_range = not cpu_has_int8_dot()
    if reduce_range and any(f.startswith("onnx-int8") for f in formats):
        notes.append("no VNNI on this CPU: int8 weights use 7 bits (ONNX Runtime's advice)")
    for structure in ["original", *(s for s in config.structures if s != "original")]:
        wanted = formats if structure in config.structures else []
        if structure == "original" and "torch-fp32" not in wanted:
            wanted = ["torch-fp32", *wanted]  # the reference is always measured
        variants += _build_formats(
            structure, folders[structure], wanted, config, split, reduce_range, notes
        )

    backends: dict[str, Backend] = {}
    progress.start("evaluating variants", total=len(variants))
    for variant in variants:
        if variant.error is None:
            backend = _evaluate(variant, config, split)
            if backend is not None:
                backends[variant.name] = backend
        progress.advance(1)
    progress.stop()
    _time(variants, backends, config, split, progress)
    backends.clear()

    reference = next(v for v in variants if v.name == REFERENCE)
    if reference.error is not None or reference.accuracy is None:
        raise LmforgeError(
            f"the source model {source.ref} could not be evaluated ({reference.error})",
            "check the version folder with `lmforge evaluate`",
        )
    chosen = _choose(variants, reference, config.max_accuracy_drop)
    _write_tradeoff(run_dir, variants, chosen, config.max_accuracy_drop, source.ref)
    if chosen is None:
        notes.append(
            f"no variant within {config.max_accuracy_drop:g} accuracy points is faster than "
            f"{REFERENCE}; nothing registered"
        )
    version = None
    if register:
        if chosen is not None:
            version = _register(registry, source, recipe, config, chosen, run_dir)
        for folder in folders.values():  # hundreds of MB of variants; the table stays
            shutil.rmtree(folder)
    return CompressResult(
        source, run_dir, variants, chosen, version, config.max_accuracy_drop, notes
    )


def check_compress_config(config: CompressConfig, folder: Path) -> list[str]:
    """Fail before any work on settings that cannot apply to the model in ``folder``; return
    the formats to try."""
    formats: list[str] = list(config.formats) if config.formats is not None else default_formats()
    if not formats and config.structures == ["original"]:
        raise RecipeError(
            "compress has nothing to try (no formats and only the original structure)",
            "list formats in compress.formats or add pruned/distilled to compress.structures",
        )
    if "distilled" in config.structures:
        layers = int(json.loads((folder / "config.json").read_text())["num_hidden_layers"])
        if config.distill.layers >= layers:
            raise RecipeError(
                f"compress.distill.layers is {config.distill.layers} but the model has only "
                f"{layers} layers",
                f"set compress.distill.layers below {layers}",
            )
    return formats


class _TokenisedSplit:
    """Train and test rows as token ids, tokenised once the way the runtime does it."""

    def __init__(self, data: PreparedData, tokenizer: TextTokenizer) -> None:
        self.labels = data.labels
        self.train_rows = tokenizer(data.train["text"].tolist())
        self.train_labels = data.label_ids("train").tolist()
        self.test_rows = tokenizer(data.test["text"].tolist())
        self.test_labels = data.label_ids("test")
        self.pad_id = tokenizer.pad_id


def _copy_model_folder(src: Path, dst: Path, *, weights: bool = True, **meta_updates: Any) -> Path:
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

    _copy_model_folder(source, dst, weights=False, structure=note)
    with quiet_transformers():
        model.save_pretrained(str(dst))
    return dst


def _build_pruned(
    source: Path,
    dst: Path,
    config: CompressConfig,
    split: _TokenisedSplit,
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


def _build_distilled(
    source: Path,
    dst: Path,
    config: CompressConfig,
    split: _TokenisedSplit,
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
    split: _TokenisedSplit,
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


def _build_formats(
    structure: str,
    folder: Path,
    formats: Sequence[str],
    config: CompressConfig,
    split: _TokenisedSplit,
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
    split: _TokenisedSplit, rows: int, batch_size: int = 16
) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    take = rng.permutation(len(split.train_rows))[:rows]
    chosen = [split.train_rows[i] for i in take]
    return [(ids, mask) for _, ids, mask in length_buckets(chosen, batch_size, split.pad_id)]


def _backend(variant: Variant) -> Backend:
    threads = cpu_threads()
    if variant.onnx_file is not None:
        return OnnxBackend(variant.onnx_file, name=variant.format, threads=threads)
    return TorchBackend(variant.folder, name=variant.format, threads=threads)


def _evaluate(variant: Variant, config: CompressConfig, split: _TokenisedSplit) -> Backend | None:
    """Test-split metrics of one variant; its loaded backend, or None (error recorded)."""
    try:
        backend = _backend(variant)
    except LmforgeError as exc:
        variant.error = exc.message
        return None
    variant.size_mb = round(backend.size_mb(), 2)
    logits = np.zeros((len(split.test_rows), len(split.labels)), dtype=np.float32)
    for idx, ids, mask in length_buckets(split.test_rows, config.bench_batch_size, split.pad_id):
        logits[idx] = backend(ids, mask)
    variant.metrics = classification_metrics(split.test_labels, logits, split.labels)
    variant.accuracy = variant.metrics["accuracy"]
    variant.macro_f1 = variant.metrics["macro_f1"]
    return backend


TIMING_ROUNDS = 3


def _time(
    variants: Sequence[Variant],
    backends: dict[str, Backend],
    config: CompressConfig,
    split: _TokenisedSplit,
    progress: ProgressReporter,
) -> None:
    """Latency and throughput of every variant, interleaved over a few rounds and reduced by
    the median, so a noisy neighbour on a shared machine slows them all alike."""
    packed = packed_rows(split.test_rows, config.bench_length, 4 * config.bench_batch_size)
    timed = [v for v in variants if v.name in backends]
    p50: dict[str, list[float]] = {v.name: [] for v in timed}
    p99: dict[str, list[float]] = {v.name: [] for v in timed}
    speed: dict[str, list[float]] = {v.name: [] for v in timed}
    runs = max(1, config.latency_runs // TIMING_ROUNDS)
    progress.start("timing variants", total=TIMING_ROUNDS * len(timed))
    for _ in range(TIMING_ROUNDS):
        for v in timed:
            backend = backends[v.name]
            latency = measure_latency(backend, split.test_rows, runs=runs)
            p50[v.name].append(latency.p50_ms)
            p99[v.name].append(latency.p99_ms)
            throughput = measure_throughput(
                backend,
                packed,
                batch_size=config.bench_batch_size,
                min_seconds=config.bench_seconds / TIMING_ROUNDS,
            )
            speed[v.name].append(throughput.sequences_per_second)
            progress.advance(1)
    progress.stop()
    for v in timed:
        v.p50_ms = round(float(np.median(p50[v.name])), 3)
        v.p99_ms = round(float(np.median(p99[v.name])), 3)
        v.sequences_per_second = round(float(np.median(speed[v.name])), 1)


def _choose(variants: list[Variant], reference: Variant, max_drop: float) -> Variant | None:
    assert reference.accuracy is not None and reference.sequences_per_second is not None
    for v in variants:
        if v.accuracy is None or v.sequences_per_second is None:
            continue
        v.delta_points = round(100 * (v.accuracy - reference.accuracy), 2)
        v.speedup = round(v.sequences_per_second / reference.sequences_per_second, 2)
        # Compare in points with a little slack for float noise in the subtraction above.
        v.within_budget = v.delta_points >= -max_drop - 1e-9
    candidates = [
        v for v in variants if v.within_budget and v is not reference and (v.speedup or 0) > 1.0
    ]
    return max(candidates, key=lambda v: v.sequences_per_second or 0.0, default=None)


def tradeoff_markdown(
    variants: Sequence[Variant], chosen: Variant | None, max_drop: float, source: str
) -> str:
    lines = [
        f"# Compression of {source}",
        "",
        f"Accuracy budget: at most {max_drop:g} points below {REFERENCE} (measured in this run). "
        "Throughput: batch-32 sequences/s at a fixed length; latency: batch 1, real test texts.",
        "",
        "| variant | size MB | batch-1 p50 ms | batch-32 seq/s | × ref | accuracy | Δ points "
        "| within budget |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for v in variants:
        mark = " **(chosen)**" if v is chosen else ""
        if v.error is not None:
            lines.append(f"| {v.name} | – | – | – | – | – | – | failed: {v.error} |")
            continue
        lines.append(
            f"| {v.name}{mark} | {v.size_mb:.1f} | {v.p50_ms:.2f} | "
            f"{v.sequences_per_second:.1f} | {v.speedup:.2f} | {100 * (v.accuracy or 0):.2f} | "
            f"{v.delta_points:+.2f} | {'yes' if v.within_budget else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def _write_tradeoff(
    folder: Path, variants: Sequence[Variant], chosen: Variant | None, max_drop: float, ref: str
) -> None:
    from lmforge.evaluate.plots import plot_tradeoff

    rows = [v.to_json() for v in variants]
    (folder / "tradeoff.json").write_text(json.dumps({"variants": rows}, indent=1))
    (folder / "tradeoff.md").write_text(tradeoff_markdown(variants, chosen, max_drop, ref))
    plot_tradeoff(
        [row for row in rows if row["error"] is None],
        chosen.name if chosen else None,
        max_drop,
        folder / "tradeoff.png",
    )


def _register(
    registry: Registry,
    source: ModelVersion,
    recipe: Recipe,
    config: CompressConfig,
    chosen: Variant,
    run_dir: Path,
) -> ModelVersion:
    staging = registry.new_staging_dir()
    try:
        _copy_model_folder(
            chosen.folder,
            staging,
            runtime={"backend": chosen.runtime_backend},
            compression={"variant": chosen.name, "parent": source.ref},
        )
        if chosen.onnx_file is not None:
            shutil.copy2(chosen.onnx_file, staging / ONNX_FILES[chosen.runtime_backend])
        merged = recipe.model_copy(update={"compress": config})
        (staging / "recipe.yaml").write_text(dump_recipe(merged), encoding="utf-8")
        for name in ("data_card.json", "data_card.md"):
            if (source.path / name).is_file():
                shutil.copy2(source.path / name, staging / name)
        for name in ("tradeoff.json", "tradeoff.md", "tradeoff.png"):
            shutil.copy2(run_dir / name, staging / name)
        report = {
            "test": chosen.metrics,
            "baselines": source.baselines,
            "compression": {
                "variant": chosen.to_json(),
                "parent": source.ref,
            },
        }
        (staging / "metrics.json").write_text(json.dumps(report, indent=1))
        (staging / "README.md").write_text(
            f"# {source.name} — compressed ({chosen.name})\n\n"
            f"Compressed from {source.ref}; served by the `{chosen.runtime_backend}` backend.\n\n"
            + tradeoff_markdown([chosen], chosen, config.max_accuracy_drop, source.ref)
            + "\nThe full trade-off table of every variant tried is in tradeoff.md.\n",
            encoding="utf-8",
        )
        return registry.register(
            source.name,
            staging,
            task=source.task,
            base_model=source.base_model,
            labels=source.labels,
            metrics=chosen.metrics,
            baselines=source.baselines,
            stage=config.stage,
            parent=source.ref,
        )
    except BaseException:
        registry.discard_staging(staging)
        raise
