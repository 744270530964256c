"""The compress stage: build variants of a registered classifier (compress/variants.py),
evaluate and time each one (compress/tradeoff.py), and register the fastest that stays within
the accuracy budget.

Every variant runs on the same test split through the same runtime backends the server uses, so
the trade-off table is what users will get. The reference is the source version in torch fp32,
measured in this run.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lmforge.compress.onnx import MIN_CALIBRATION_ROWS
from lmforge.compress.tradeoff import (
    choose_variant,
    evaluate_variant,
    time_variants,
    tradeoff_markdown,
    write_tradeoff,
)
from lmforge.compress.variants import (
    REFERENCE,
    TokenisedSplit,
    Variant,
    build_distilled,
    build_formats,
    build_pruned,
    copy_model_folder,
    default_formats,
)
from lmforge.data import prepare_data
from lmforge.errors import DataError, LmforgeError, RecipeError
from lmforge.hardware import cpu_has_int8_dot
from lmforge.models.meta import read_model_meta, require_classifier
from lmforge.models.tokenizer import TextTokenizer
from lmforge.progress import ProgressReporter, SilentProgress
from lmforge.recipe import dump_recipe, load_recipe
from lmforge.recipe.schema import CompressConfig, Recipe
from lmforge.registry import ModelVersion, Registry
from lmforge.runtime.backends import ONNX_FILES, Backend
from lmforge.settings import Settings, get_settings


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


def compress_version(
    ref: str,
    config: CompressConfig | None = None,
    *,
    settings: Settings | None = None,
    register: bool = True,
    progress: ProgressReporter | None = None,
    variant_name: str | None = None,
) -> CompressResult:
    """Compress the registered version ``ref`` (``name[:version]``) as ``config`` says; the
    config defaults to the ``compress`` section of the version's own recipe.

    ``variant_name`` (``structure/format``, e.g. ``original/onnx-int8-dynamic``) takes that
    variant instead of the fastest within budget (retraining repeats production's choice), and
    only it is built beside the reference; a variant that cannot be built is an error.

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
    if variant_name is not None:
        structure, _, fmt = variant_name.partition("/")
        config = config.model_copy(update={"structures": [structure], "formats": [fmt]})
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
    split = TokenisedSplit(data, tokenizer)
    notes: list[str] = []

    folders = {"original": copy_model_folder(source.path, run_dir / "original")}
    if "pruned" in config.structures:
        progress.note("pruning attention heads and FFN neurons, then a recovery fine-tune")
        folders["pruned"] = build_pruned(source.path, run_dir / "pruned", config, split, progress)
    if "distilled" in config.structures:
        progress.note(f"distilling into a {config.distill.layers}-layer student")
        folders["distilled"] = build_distilled(
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
        variants += build_formats(
            structure, folders[structure], wanted, config, split, reduce_range, notes
        )

    backends: dict[str, Backend] = {}
    progress.start("evaluating variants", total=len(variants))
    for variant in variants:
        if variant.error is None:
            backend = evaluate_variant(variant, config, split)
            if backend is not None:
                backends[variant.name] = backend
        progress.advance(1)
    progress.stop()
    time_variants(variants, backends, config, split, progress)
    backends.clear()

    reference = next(v for v in variants if v.name == REFERENCE)
    if reference.error is not None or reference.accuracy is None:
        raise LmforgeError(
            f"the source model {source.ref} could not be evaluated ({reference.error})",
            "check the version folder with `lmforge evaluate`",
        )
    chosen = choose_variant(variants, reference, config.max_accuracy_drop)
    if variant_name is not None:
        chosen = next((v for v in variants if v.name == variant_name and v.error is None), None)
        if chosen is None:
            raise LmforgeError(
                f"variant {variant_name} of {source.ref} could not be built",
                f"see the trade-off table in {run_dir}",
            )
    write_tradeoff(run_dir, variants, chosen, config.max_accuracy_drop, source.ref)
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
        copy_model_folder(
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
