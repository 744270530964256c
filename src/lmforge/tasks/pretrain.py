"""task: pretrain — self-supervised training on unlabelled text, scored before → after.

``objective: mlm`` trains an encoder's masked-LM head and body (whole-word masking for English,
character units for Chinese, BERT's 80/10/10 rule); ``objective: clm`` trains a decoder on
next-token prediction over packed blocks. The corpus is one or more sources mixed with weights,
with the held-out texts of named downstream sources removed (:mod:`lmforge.data.corpus`).
Scores on the held-out test texts: masked-token accuracy and pseudo-perplexity (mlm) or
perplexity (clm), for the model before and after. "Before" is the base as it is — or, for an
encoder shipped without a masked-LM head (MiniLM), the base with a head trained on the frozen
encoder for ``pretrain.head_steps`` steps. The registered version (task pretrain) is a base for
later recipes: ``model.base: NAME[:vN]``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

from lmforge.data.corpus import Corpus, corpus_card_markdown, prepare_corpus
from lmforge.errors import RecipeError
from lmforge.hardware import resolve_precision
from lmforge.models.catalogue import CATALOGUE
from lmforge.models.classifier import quiet_transformers
from lmforge.models.loading import from_pretrained
from lmforge.models.meta import PretrainMeta
from lmforge.recipe import Recipe
from lmforge.registry.refs import resolve_base
from lmforge.tasks.base import (
    Report,
    ReportLine,
    ReportTable,
    RunContext,
    TaskOutput,
    check_loss_validation,
    loss_patience,
)
from lmforge.train.loop import Schedule
from lmforge.train.masking import MaskingRule, encode_mlm
from lmforge.train.pretrain import (
    fine_tune_mlm,
    load_mlm,
    masked_scores,
    pack_texts,
    pseudo_perplexity,
    train_mlm_head,
)
from lmforge.train.sft import fine_tune_decoder, response_loss

_KIND: dict[str, Literal["encoder", "decoder"]] = {"mlm": "encoder", "clm": "decoder"}
_EXAMPLES = {"encoder": "minilm-l6, multilingual-e5-small", "decoder": "smollm2-135m-instruct"}


@dataclass(kw_only=True)
class PretrainOutput(TaskOutput):
    corpus: Corpus
    outcome: Any  # MlmOutcome (mlm) or SftOutcome (clm)


class PretrainTask:
    name: ClassVar[str] = "pretrain"
    resumable: ClassVar[bool] = True
    compressible: ClassVar[bool] = False
    registered: ClassVar[str] = (
        "registered [bold]{ref}[/bold]; start a recipe from it with model.base: {ref}"
    )

    def check(self, recipe: Recipe) -> None:
        check_loss_validation(recipe)
        objective = recipe.pretrain.objective
        entry = CATALOGUE.get(recipe.model.base)
        if entry is not None and entry.kind != _KIND[objective]:
            raise _objective_error(objective, f"'{entry.name}' is {_a(entry.kind)}")

    def run(self, ctx: RunContext) -> PretrainOutput:
        recipe, progress = ctx.recipe, ctx.progress
        p = recipe.pretrain
        corpus = prepare_corpus(
            recipe.data, p.mix, language=p.language, exclude_test_of=p.exclude_test_of
        )
        kind = _KIND[p.objective]
        base = resolve_base(recipe.model.base, kind, ctx.settings.cache_dir, progress)
        _check_folder(base.path, p.objective)
        progress.note(
            f"corpus: {len(corpus.train)} train / {len(corpus.validation)} validation / "
            f"{len(corpus.test)} test texts"
        )
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(base.path)
        prefix = base.text_prefix
        texts = {
            split: [prefix + t for t in getattr(corpus, split)]
            for split in ("train", "validation", "test")
        }
        if p.objective == "mlm":
            return self._mlm(ctx, corpus, texts, base.path, base.name, prefix, tokenizer)
        return self._clm(ctx, corpus, texts, base.path, base.name, tokenizer)

    def _mlm(
        self,
        ctx: RunContext,
        corpus: Corpus,
        texts: dict[str, list[str]],
        folder: Path,
        base_name: str,
        prefix: str,
        tokenizer: Any,
    ) -> PretrainOutput:
        recipe, progress, p, t = ctx.recipe, ctx.progress, ctx.recipe.pretrain, ctx.recipe.training
        rows = {
            split: encode_mlm(tokenizer, part, t.max_length, whole_word=p.whole_word)
            for split, part in texts.items()
        }
        rule = MaskingRule.of(tokenizer, p.mask_probability)
        scored = rows["test"][: p.eval_texts]
        run_dir = ctx.open_run_dir(corpus.card, corpus_card_markdown)
        model, fresh_head = load_mlm(folder)
        before = "base"
        if fresh_head:
            before = f"base + head ({p.head_steps} steps)"
            progress.note(f"{base_name} has no masked-LM head: training one ({before})")
            model = train_mlm_head(
                model,
                rows["train"],
                rule,
                steps=p.head_steps,
                batch_size=t.batch_size,
                seed=t.seed,
                progress=progress,
            )

        def scores(m: Any) -> dict[str, Any]:
            masked = masked_scores(m, rows["test"], rule)
            return {**masked, "pseudo_perplexity": pseudo_perplexity(m, scored, rule)}

        progress.note("scoring the model before pretraining on the held-out texts")
        baselines = {before: _rounded(scores(model))}
        patience = loss_patience(recipe)
        outcome = fine_tune_mlm(
            model,
            rows["train"],
            rule,
            _schedule(recipe),
            method=recipe.adaptation.method,
            lora=recipe.adaptation.lora,
            batch_size=t.batch_size,
            seed=t.seed,
            validation=rows["validation"] if patience else None,
            patience=patience,
            run_dir=run_dir,
            resume=ctx.resume is not None,
            fingerprint={"recipe": recipe.model_dump(mode="json"), "head": fresh_head},
            progress=progress,
        )
        metrics = _rounded(scores(outcome.model))
        model_dir = run_dir / "model"
        with quiet_transformers():
            outcome.model.save_pretrained(model_dir)
            tokenizer.save_pretrained(model_dir)
        meta = PretrainMeta(
            task="pretrain",
            objective="mlm",
            base_model=base_name,
            text_prefix=prefix,
            max_length=t.max_length,
        )
        return self._output(ctx, corpus, model_dir, meta, metrics, baselines, outcome)

    def _clm(
        self,
        ctx: RunContext,
        corpus: Corpus,
        texts: dict[str, list[str]],
        folder: Path,
        base_name: str,
        tokenizer: Any,
    ) -> PretrainOutput:
        recipe, progress, t = ctx.recipe, ctx.progress, ctx.recipe.training
        blocks = {split: pack_texts(tokenizer, part, t.max_length) for split, part in texts.items()}
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        run_dir = ctx.open_run_dir(corpus.card, corpus_card_markdown)

        def scores(loss: float) -> dict[str, Any]:
            tokens = sum(len(b.input_ids) - 1 for b in blocks["test"])
            return {"loss": round(loss, 4), "perplexity": round(math.exp(loss), 3), "n": tokens}

        progress.note("scoring the base model on the held-out texts")
        with quiet_transformers():
            base_model = from_pretrained(AutoModelForCausalLM, folder, use_safetensors=True)
        baselines = {"base": scores(response_loss(base_model, blocks["test"], pad_id))}
        del base_model
        patience = loss_patience(recipe)
        outcome = fine_tune_decoder(
            folder,
            blocks["train"],
            method=recipe.adaptation.method,
            lora=recipe.adaptation.lora,
            epochs=t.epochs,
            batch_size=t.batch_size,
            learning_rate=t.learning_rate,
            warmup_ratio=t.warmup_ratio,
            seed=t.seed,
            progress=progress,
            validation=blocks["validation"] if patience else None,
            patience=patience,
            eval_every_steps=t.eval_every_steps,
            run_dir=run_dir,
            resume=ctx.resume is not None,
        )
        metrics = scores(response_loss(outcome.model, blocks["test"], pad_id))
        model_dir = run_dir / "model"
        with quiet_transformers():
            outcome.model.save_pretrained(model_dir)
            tokenizer.save_pretrained(model_dir)
        meta = PretrainMeta(
            task="pretrain", objective="clm", base_model=base_name, max_length=t.max_length
        )
        return self._output(ctx, corpus, model_dir, meta, metrics, baselines, outcome)

    def _output(
        self,
        ctx: RunContext,
        corpus: Corpus,
        model_dir: Path,
        meta: PretrainMeta,
        metrics: dict[str, Any],
        baselines: dict[str, dict[str, Any]],
        outcome: Any,
    ) -> PretrainOutput:
        training = {
            "objective": meta.objective,
            "steps": outcome.steps,
            "train_seconds": round(outcome.seconds, 1),
            "first_loss": round(outcome.losses[0], 4),
            "last_loss": round(outcome.losses[-1], 4),
            "trainable_parameters": outcome.trainable_parameters,
            "total_parameters": outcome.total_parameters,
        }
        report = {"test": metrics, "baselines": baselines, "training": training}
        (ctx.run_dir / "metrics.json").write_text(json.dumps(report, indent=1))
        return PretrainOutput(
            model_dir=model_dir,
            meta=meta,
            metrics=metrics,
            baselines=baselines,
            card=corpus.card,
            reports=("data_card.md",),
            summary={"training": training},
            report=_report(ctx.recipe, metrics, baselines, outcome.steps, ctx.run_dir),
            corpus=corpus,
            outcome=outcome,
        )


def _schedule(recipe: Recipe) -> Schedule:
    return Schedule.of(recipe.training, resolve_precision(recipe.training.precision))


def _check_folder(folder: Path, objective: str) -> None:
    """A folder's architecture must fit the objective: a masked-LM model type for mlm, any
    other (a causal LM) for clm."""
    model_type = AutoConfig.from_pretrained(folder).model_type
    encoder = model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    if encoder != (objective == "mlm"):
        raise _objective_error(objective, f"{folder} ({model_type}) is {_a(_KIND[objective])}")


def _objective_error(objective: str, what: str) -> RecipeError:
    other = "clm" if objective == "mlm" else "mlm"
    wanted = _KIND[objective]
    return RecipeError(
        f"model.base {what}, and pretrain.objective {objective} needs {_a(wanted)}",
        f"set pretrain.objective: {other}, or use {_a(wanted)} base ({_EXAMPLES[wanted]})",
    )


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _rounded(scores: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()}


def _report(
    recipe: Recipe,
    metrics: dict[str, Any],
    baselines: dict[str, dict[str, Any]],
    steps: int,
    run_dir: Path,
) -> Report:
    rows = [("pretrained", metrics), *baselines.items()]
    if recipe.pretrain.objective == "mlm":
        table = ReportTable(
            f"{recipe.name}: held-out texts (masked-LM)",
            ["model", "masked accuracy", "masked loss", "pseudo-perplexity"],
            [
                [
                    name,
                    f"{100 * m['masked_accuracy']:.2f}",
                    f"{m['loss']:.3f}",
                    f"{m['pseudo_perplexity']:.2f}",
                ]
                for name, m in rows
            ],
        )
    else:
        table = ReportTable(
            f"{recipe.name}: held-out texts (next token)",
            ["model", "loss per token", "perplexity"],
            [[name, f"{m['loss']:.3f}", f"{m['perplexity']:.2f}"] for name, m in rows],
        )
    return Report([table], [ReportLine(f"trained {steps} steps; run folder {run_dir}")])
