"""Retraining a classifier on its users' feedback, behind a promotion gate (`lmforge retrain`).

:func:`retrain` runs one round: the production version's original splits, rebuilt from the
recipe it was trained from, plus its feedback (:mod:`lmforge.tasks.retrain_data`); a
fine-tune through the one training loop, warm-started from the production weights (or from the
base); then champion and challenger scored through the runtime that serves them, on the
original test split and on the held-out feedback slice. The feedback rows count ``feedback.weight``
times beside a sample of the original training rows (``feedback.replay``); ``weight: auto``
trains one challenger per weight of a small grid and keeps the one that does best on the
validation slices (:mod:`lmforge.tasks.retrain_weight`). The gate (:mod:`lmforge.tasks.gate`,
the recipe's ``feedback.gate``) promotes the challenger through :func:`promote_version` only
when it gains enough, significantly, on the feedback slice and loses little enough on the test
split; otherwise it stays a candidate with the gate's reason. Either way the decision, both
models' scores on both slices and the feedback counts are stored with the challenger in the
registry (``metrics["retrain"]``, shown by ``lmforge models show``). A compressed production
version has its challenger compressed with the same variant before the two are compared.

Everything a user can get wrong — no feedback, only unknown labels, not a classifier, an
original data reference that no longer rebuilds — fails before anything is written.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lmforge.compress.stage import compress_version
from lmforge.data import PreparedData, prepare_data
from lmforge.errors import DataError, LmforgeError, ModelNotFoundError, RecipeError
from lmforge.models.catalogue import CATALOGUE, ResolvedBase
from lmforge.models.meta import ClassificationMeta, read_model_meta, write_model_meta
from lmforge.monitor import FeedbackStore
from lmforge.progress import ProgressArg, ProgressReporter, resolve_progress
from lmforge.recipe import Recipe, load_recipe
from lmforge.recipe.schema import CompressConfig, GateConfig
from lmforge.registry import ModelVersion, Registry, parse_ref
from lmforge.registry.refs import resolve_base
from lmforge.settings import Settings, get_settings
from lmforge.tasks.base import RunContext
from lmforge.tasks.classification import ClassificationOutput, ClassificationTask
from lmforge.tasks.gate import Evaluation, GateDecision, with_changes
from lmforge.tasks.promote import promote_version
from lmforge.tasks.retrain_data import (
    RetrainData,
    assemble,
    check_usable,
    feedback_examples,
    weighted,
)
from lmforge.tasks.retrain_recommendation import retrain_recommender
from lmforge.tasks.retrain_record import RECORD, RetrainResult, WarmStart, recipe_of
from lmforge.tasks.retrain_weight import Choice, choose_folder
from lmforge.tasks.run import _register_folder


def retrain(
    model: str,
    *,
    recipe: Recipe | Path | None = None,
    warm_start: WarmStart | None = None,
    gate: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
    progress: ProgressArg = None,
) -> RetrainResult:
    """Retrain the production version of ``model`` on its feedback and let the gate decide.

    ``recipe`` (a Recipe or a recipe file) gives the training, adaptation and ``feedback``
    sections (default: the recipe the production version was trained from); its data section,
    if it has one of its own, must be that version's — the original split is never changed.
    ``warm_start`` and ``gate`` (keys of ``feedback.gate``) override the recipe's.
    """
    started, tick = datetime.now(UTC), time.perf_counter()
    settings = settings or get_settings()
    progress = resolve_progress(progress)
    registry = Registry(settings)
    champion = _champion(registry, model)
    if champion.task == "recommendation":
        if warm_start is not None:
            raise LmforgeError(
                "a recommender is refitted whole on each round: there is no warm start to choose",
                "leave out --warm-start",
            )
        return retrain_recommender(
            champion, recipe=recipe, gate=gate, settings=settings, progress=progress
        )
    root = _uncompressed(registry, champion)
    original_recipe = recipe_of(root)
    recipe = _retrain_recipe(recipe, original_recipe, root, champion.name)
    config = recipe.feedback
    warm = warm_start or config.warm_start
    gate_config = with_changes(config.gate, gate)

    original = _original_data(original_recipe, root)
    rows = FeedbackStore(registry).list(champion.name)
    examples = feedback_examples(rows, champion.labels, registry)
    check_usable(champion.name, examples, champion.labels)
    assembled = assemble(original, examples, config, original_recipe.data.cleaning)
    if not assembled.counts["train_rows"]:
        raise DataError(
            f"none of the {assembled.counts['usable']} usable feedback rows for "
            f"'{champion.name}' is left to train on (held out for the gate, or an original "
            "validation/test text)",
            "send more feedback, or lower feedback.holdout_share",
        )
    assembled.counts["latest_feedback_at"] = (
        examples.latest.isoformat() if examples.latest is not None else None
    )
    if warm == "production":
        base = ResolvedBase(root.base_model, root.path, CATALOGUE.get(root.base_model))
    else:
        base = resolve_base(recipe.model.base, "encoder", settings.cache_dir, progress)
    progress.note(
        f"retraining {champion.ref} from {warm}: {assembled.counts['train_rows']} feedback rows "
        f"to train on, {assembled.counts['holdout_rows']} held out"
    )

    # Nothing is written before this point.
    ctx, output, weighting = _train(
        recipe, gate_config, settings, progress, assembled, base, champion
    )

    progress.note("scoring production and challenger on the test split and the feedback slice")
    champion_eval = Evaluation(champion.path, assembled)
    scores = {"champion": champion_eval.scores}
    variant = _variant(champion)
    decision = None
    if variant is None:
        challenger_eval = Evaluation(output.model_dir, assembled)
        scores["challenger"] = challenger_eval.scores
        decision = champion_eval.judge(challenger_eval, gate_config)
    result = RetrainResult(
        model=champion.name,
        champion=champion,
        trained=champion,  # replaced once registered
        challenger=champion,
        decision=decision or GateDecision(False, "not judged yet", gate_config.metric, 0, 0, 1, 0),
        promoted=False,
        scores=scores,
        counts=assembled.counts,
        weighting=weighting,
        warm_start=warm,
        run_dir=ctx.run_dir,
        started_at=started,
        wall_seconds=0.0,
    )
    if variant is None:
        output.metrics[RECORD] = result.record()
    trained = _register_folder(ctx, output)
    result.trained = result.challenger = trained
    if variant is not None:
        progress.note(f"compressing {trained.ref} as production was: {variant}")
        # the settings production was compressed with (its recipe.yaml records them)
        compress = recipe_of(champion).compress.model_copy(update={"stage": "candidate"})
        try:
            compressed = compress_version(
                trained.ref, compress, settings=settings, progress=progress, variant_name=variant
            )
        except BaseException as exc:
            # the trained version stays a candidate; its record says why it was not judged
            reason = f"not judged: compressing it as {variant} failed ({exc})"
            result.decision = replace(result.decision, reason=reason)
            result.wall_seconds = time.perf_counter() - tick
            registry.annotate(trained.ref, RECORD, result.record())
            raise
        assert compressed.version is not None  # a named variant is registered or an error
        result.challenger = compressed.version
        challenger_eval = Evaluation(compressed.version.path, assembled)
        scores["challenger"] = challenger_eval.scores
        result.decision = champion_eval.judge(challenger_eval, gate_config)
    if result.decision.promote:
        try:
            promote_version(result.challenger.ref, settings, registry=registry)
            result.promoted = True
        except LmforgeError as exc:
            reason = f"passed the gate but was not promoted: {exc.problem}"
            result.decision = replace(result.decision, promote=False, reason=reason)
    result.wall_seconds = time.perf_counter() - tick
    record = result.record()
    (ctx.run_dir / "retrain.json").write_text(json.dumps(record, indent=1, ensure_ascii=False))
    for version in {result.trained.ref, result.challenger.ref}:
        registry.annotate(version, RECORD, record)
    result.challenger = registry.get(result.challenger.ref)
    result.trained = registry.get(result.trained.ref)
    return result


def _train(
    recipe: Recipe,
    gate: GateConfig,
    settings: Settings,
    progress: ProgressReporter,
    assembled: RetrainData,
    base: ResolvedBase,
    champion: ModelVersion,
) -> tuple[RunContext, ClassificationOutput, dict[str, Any]]:
    """Train the challenger with the recipe's feedback weight; with ``weight: auto``, one per
    value of the grid, keeping the one :func:`choose` takes on the validation slices (the other
    runs' folders are removed) — see :mod:`lmforge.tasks.retrain_weight`. ``gate`` is the
    round's gate (the recipe's with the caller's changes): its guard on the original task is
    read on validation for the choice."""
    config = recipe.feedback
    if config.weight != "auto":
        weights, mode, reason = [float(config.weight)], "fixed", "set by feedback.weight"
    elif assembled.feedback_validation.empty:  # nothing to choose on: the least change
        weights, mode = [min(config.weight_grid)], "auto (no feedback validation rows)"
        reason = "no feedback validation row to choose on: the grid's smallest weight"
    else:
        weights, mode, reason = sorted(set(config.weight_grid)), "auto", ""
    runs: dict[float, tuple[RunContext, ClassificationOutput]] = {}
    try:
        for weight in weights:
            progress.note(f"training the challenger with feedback weight {weight:g}")
            ctx = RunContext(recipe, settings, progress)
            data = weighted(assembled, weight, config.replay, config.seed)
            output = ClassificationTask().fit(ctx, data, base)
            runs[weight] = ctx, output
            write_model_meta(output.model_dir, output.meta)
            if output.model_card is not None:
                (output.model_dir / "README.md").write_text(output.model_card, encoding="utf-8")
        if len(weights) > 1:
            progress.note("scoring each weight's challenger on the validation slices")
            folders = {weight: output.model_dir for weight, (_, output) in runs.items()}
            choice = choose_folder(champion.path, folders, assembled, gate)
            progress.note(f"feedback weight {choice.weight:g}: {choice.reason}")
        else:
            choice = Choice(weights[0], reason, [], None)
    except BaseException:
        for ctx, _ in runs.values():  # an unfinished round leaves no run folders behind
            shutil.rmtree(ctx.run_dir, ignore_errors=True)
        raise
    for weight, (ctx, _) in runs.items():
        if weight != choice.weight:
            shutil.rmtree(ctx.run_dir, ignore_errors=True)
    ctx, output = runs[choice.weight]
    record = choice.to_json(mode, config.replay)
    record["train_rows"] = len(weighted(assembled, choice.weight, config.replay, config.seed).train)
    return ctx, output, record


def production_recipe(registry: Registry, model: str) -> tuple[ModelVersion, Recipe]:
    """The production version of ``model`` (a classifier or recommender) and the recipe of the
    run that trained it (the uncompressed version's, where production is compressed)."""
    champion = _champion(registry, model)
    return champion, recipe_of(_uncompressed(registry, champion))


def _champion(registry: Registry, model: str) -> ModelVersion:
    name, version = parse_ref(model)
    if version not in (None, "production"):
        raise LmforgeError(
            f"retrain compares a challenger with the production version; '{model}' names a version",
            f"give the model name, e.g. `lmforge retrain {name}`",
        )
    champion = registry.get(f"{name}:production")
    if champion.task not in ("classification", "recommendation"):
        raise LmforgeError(
            f"{champion.ref} is a {champion.task} model; retraining on feedback is for "
            "classifiers and recommenders",
            "give a model registered by a classification or recommendation recipe",
        )
    return champion


def _uncompressed(registry: Registry, version: ModelVersion) -> ModelVersion:
    """The version a compressed one was made from (itself when not compressed): its weights
    are the ones to train on, and its recipe the original run's."""
    if version.task != "classification":  # only a classifier is compressed
        return version
    seen = {version.ref}
    while isinstance(meta := _meta(version), ClassificationMeta) and meta.compression:
        if version.parent is None or version.parent in seen:
            break
        seen.add(version.parent)
        try:
            version = registry.get(version.parent)
        except ModelNotFoundError as exc:
            raise DataError(
                f"{version.ref} was compressed from {version.parent}, which is no longer "
                "registered",
                "retrain from the base with a recipe (`lmforge run`), then promote it",
            ) from exc
    return version


def _meta(version: ModelVersion) -> ClassificationMeta:
    meta = read_model_meta(version.path)
    if not isinstance(meta, ClassificationMeta):
        raise DataError(f"{version.ref} is not a classifier folder", "re-register the version")
    return meta


def _variant(champion: ModelVersion) -> str | None:
    """The compressed variant production is (``structure/format``), or None."""
    compression = _meta(champion).compression
    return compression.variant if compression is not None else None


def _retrain_recipe(
    given: Recipe | Path | None, original: Recipe, root: ModelVersion, name: str
) -> Recipe:
    recipe = load_recipe(given) if isinstance(given, Path) else (given or original)
    if recipe.task != "classification":
        raise RecipeError(f"a retraining recipe is a classification recipe, not {recipe.task}", "")
    if recipe.data != original.data:
        raise RecipeError(
            f"the recipe's data section is not the one {root.ref} was trained on",
            "retraining keeps the original split: copy the data section from its recipe.yaml",
        )
    # The challenger registers under the production model's name, as a candidate; the gate
    # (not the recipe) decides whether it is promoted, and the compress stage is production's.
    registry = recipe.registry.model_copy(
        update={"name": name, "stage": "candidate", "enabled": True}
    )
    return recipe.model_copy(update={"registry": registry, "compress": CompressConfig()})


def _original_data(recipe: Recipe, version: ModelVersion) -> PreparedData:
    """The splits ``version`` was trained on, rebuilt from its recipe; refused when the data
    no longer rebuilds to the same split sizes its data card recorded."""
    try:
        data = prepare_data(recipe.data)
    except LmforgeError as exc:
        raise DataError(
            f"the original data of {version.ref} cannot be rebuilt ({exc.problem})",
            f"restore {recipe.data.source.path or recipe.data.source.builtin}, or retrain with "
            "`lmforge run`",
        ) from exc
    card_file = version.path / "data_card.json"
    if card_file.is_file():
        try:
            recorded = json.loads(card_file.read_text(encoding="utf-8"))["splits"]
            rows = {k: int(v["rows"]) for k, v in recorded.items()}
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{card_file} is damaged", "re-register the version") from exc
        now = {k: v["rows"] for k, v in data.card["splits"].items()}
        if rows != now:
            raise DataError(
                f"the original data of {version.ref} changed since it was trained (split rows "
                f"{now}, recorded {rows})",
                "restore the data it was trained on, or retrain with `lmforge run`",
            )
    if data.labels != version.labels:
        raise DataError(
            f"the original data of {version.ref} has labels {data.labels}, the version "
            f"{version.labels}",
            "restore the data it was trained on, or retrain with `lmforge run`",
        )
    return data
