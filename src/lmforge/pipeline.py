"""The lifecycle, end to end: recipe → data → model → train → evaluate → registry.

Each stage is a library call of its own; this module only threads their results through and
writes the run folder. Everything a user could get wrong is checked before training starts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lmforge.assistant.evaluation import AssistantEvaluation
from lmforge.compress.stage import CompressResult, check_compress_config, compress_version
from lmforge.data import PreparedData, data_card_markdown, prepare_data
from lmforge.data.prepare import PairData, prepare_pairs
from lmforge.errors import RecipeError
from lmforge.evaluate import evaluate_classifier, score_baselines
from lmforge.evaluate.baselines import check_baselines
from lmforge.evaluate.plots import plot_confusion_matrix, plot_training_curve
from lmforge.models.catalogue import CATALOGUE, resolve_base
from lmforge.models.classifier import quiet_transformers
from lmforge.models.loading import from_pretrained
from lmforge.progress import ProgressReporter, SilentProgress
from lmforge.recipe import Recipe, dump_recipe
from lmforge.registry import ModelVersion, Registry
from lmforge.registry.card import model_card
from lmforge.settings import Settings, get_settings
from lmforge.train.contrastive import EmbeddingFit
from lmforge.train.loop import TrainOutcome, fine_tune, read_checkpoint_state
from lmforge.train.sft import SftOutcome


@dataclass
class RunResult:
    recipe: Recipe
    run_dir: Path
    data: PreparedData
    outcome: TrainOutcome
    metrics: dict[str, Any]
    baselines: dict[str, dict[str, Any]]
    version: ModelVersion | None
    compression: CompressResult | None = None

    def summary(self) -> dict[str, Any]:
        return {
            **_reported(self.run_dir, self.version, self.metrics, self.baselines, self.data.card),
            "compression": self.compression.to_json() if self.compression else None,
            "training": training_summary(self.outcome),
        }


def training_summary(outcome: TrainOutcome) -> dict[str, Any]:
    return {
        "steps": outcome.steps,
        "precision": outcome.precision,
        "stopped_early": outcome.stopped_early,
        "best": outcome.best,
        "train_seconds": round(outcome.train_seconds, 1),
        "samples_per_second": round(outcome.samples_per_second, 1),
        "trainable_parameters": outcome.trainable_parameters,
        "total_parameters": outcome.total_parameters,
    }


def _reported(
    run_dir: Path,
    version: ModelVersion | None,
    metrics: dict[str, Any],
    baselines: dict[str, Any],
    card: dict[str, Any],
) -> dict[str, Any]:
    """What every task's `--json` report starts with."""
    return {
        "run_dir": str(run_dir),
        "version": version.to_json() if version else None,
        "test_metrics": metrics,
        "baseline_metrics": baselines,
        "data": {k: card[k] for k in ("rows_raw", "rows_used", "removed")},
    }


@dataclass
class SimilarityResult:
    """A similarity run: retrieval on the test split (each text → its partner among all test
    partners) for the fine-tuned encoder, beside the untuned one and BM25."""

    recipe: Recipe
    run_dir: Path
    data: PairData
    fit: EmbeddingFit
    metrics: dict[str, Any]
    baselines: dict[str, dict[str, Any]]
    version: ModelVersion | None

    def summary(self) -> dict[str, Any]:
        return {
            **_reported(self.run_dir, self.version, self.metrics, self.baselines, self.data.card),
            "training": {
                "steps": self.fit.steps,
                "train_seconds": round(self.fit.seconds, 1),
                "first_loss": round(self.fit.losses[0], 4) if self.fit.losses else None,
                "last_loss": round(self.fit.losses[-1], 4) if self.fit.losses else None,
            },
        }


def run_similarity(
    recipe: Recipe,
    settings: Settings | None = None,
    register: bool | None = None,
    progress: ProgressReporter | None = None,
) -> SimilarityResult:
    """Fine-tune an encoder into a sentence-embedding model on positive pairs (contrastive,
    in-batch negatives), evaluate retrieval beside the untuned encoder and BM25, register it."""
    from lmforge.assistant.retrieval import Bm25Retriever, DenseRetriever, evaluate_retrieval
    from lmforge.runtime.embedder import Embedder
    from lmforge.train.contrastive import fit_embeddings, save_encoder

    settings = settings or get_settings()
    progress = progress or SilentProgress()
    register = recipe.registry.enabled if register is None else register
    _check_encoder_base(recipe)
    data = prepare_pairs(recipe.data)
    base = resolve_base(recipe.model.base, settings.cache_dir)
    query_prefix = (
        base.text_prefix if recipe.model.text_prefix is None else recipe.model.text_prefix
    )
    passage_prefix = "passage: " if query_prefix == "query: " else query_prefix
    max_length = recipe.training.max_length
    progress.note(
        f"data: {len(data.train)} train / {len(data.validation)} validation / "
        f"{len(data.test)} test pairs"
    )
    run_dir = _open_run_dir(settings, recipe, data.card)
    queries, partners = data.test["text"].tolist(), data.test["pair"].tolist()
    gold = list(range(len(queries)))

    def retrieval(folder: Path) -> dict[str, Any]:
        embed = Embedder(folder, max_length=max_length).embed
        dense = DenseRetriever(
            partners, embed, query_prefix=query_prefix, passage_prefix=passage_prefix
        )
        return evaluate_retrieval(dense, queries, gold).to_json()

    progress.note("scoring the untuned encoder and BM25 on the test pairs")
    baselines = {
        "untuned": retrieval(base.path),
        "bm25": evaluate_retrieval(Bm25Retriever(partners), queries, gold).to_json(),
    }
    fit = fit_embeddings(
        base.path,
        PairData.pairs(data.train),
        query_prefix=query_prefix,
        passage_prefix=passage_prefix,
        epochs=max(1, math.ceil(recipe.training.epochs)),
        batch_size=recipe.training.batch_size,
        learning_rate=recipe.training.learning_rate,
        max_length=max_length,
        seed=recipe.training.seed,
        progress=progress,
    )
    model_dir = save_encoder(fit.model, base.path, run_dir / "model")
    meta = {
        "task": "similarity",
        "labels": [],
        "base_model": base.name,
        "text_prefix": query_prefix,
        "passage_prefix": passage_prefix,
        "max_length": max_length,
        "cleaning": recipe.data.cleaning.model_dump(),
    }
    (model_dir / "lmforge.json").write_text(json.dumps(meta, indent=1))
    progress.note("scoring the fine-tuned encoder on the test pairs")
    metrics = retrieval(model_dir)
    report = {"test": metrics, "baselines": baselines, "losses": fit.losses}
    (run_dir / "metrics.json").write_text(json.dumps(report, indent=1))
    version = None
    if register:
        version = _register_folder(
            recipe, run_dir, model_dir, base.name, metrics, baselines, settings, "data_card.md"
        )
    return SimilarityResult(recipe, run_dir, data, fit, metrics, baselines, version)


@dataclass
class GenerationResult:
    """An instruction-tuning run: held-out response loss of the tuned decoder beside the base
    one, and a few held-out prompts answered by both."""

    recipe: Recipe
    run_dir: Path
    data: PairData
    outcome: SftOutcome
    metrics: dict[str, Any]
    baselines: dict[str, dict[str, Any]]
    samples: list[dict[str, str]]
    version: ModelVersion | None

    def summary(self) -> dict[str, Any]:
        o = self.outcome
        return {
            **_reported(self.run_dir, self.version, self.metrics, self.baselines, self.data.card),
            "training": {
                "steps": o.steps,
                "train_seconds": round(o.seconds, 1),
                "first_loss": round(o.losses[0], 4),
                "last_loss": round(o.losses[-1], 4),
                "trainable_parameters": o.trainable_parameters,
                "total_parameters": o.total_parameters,
            },
            "samples": self.samples,
        }


SAMPLE_PROMPTS = 3  # held-out prompts answered by the base and the tuned model in the report


def run_generation(
    recipe: Recipe,
    settings: Settings | None = None,
    register: bool | None = None,
    progress: ProgressReporter | None = None,
) -> GenerationResult:
    """Instruction-tune a decoder on prompt/response pairs (loss on the responses only), score
    the held-out responses' loss/perplexity beside the base model, answer a few held-out prompts
    with both, and register the merged model (served by /v1/chat/completions)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmforge.models.classifier import quiet_transformers
    from lmforge.runtime.generation import GenerationEngine, SamplingParams
    from lmforge.train.sft import chat_examples, fine_tune_decoder, response_loss

    settings = settings or get_settings()
    progress = progress or SilentProgress()
    register = recipe.registry.enabled if register is None else register
    entry = CATALOGUE.get(recipe.model.base)
    if entry is not None and entry.kind != "decoder":
        raise RecipeError(
            f"model.base '{entry.name}' is an {entry.kind}, and generation needs a decoder",
            "use smollm2-135m-instruct or a local causal-LM folder",
        )
    data = prepare_pairs(recipe.data)
    base = resolve_base(recipe.model.base, settings.cache_dir)
    max_length = recipe.training.max_length
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(base.path)
        base_model = from_pretrained(AutoModelForCausalLM, base.path, use_safetensors=True)
    train = chat_examples(tokenizer, PairData.pairs(data.train), max_length)
    test = chat_examples(tokenizer, PairData.pairs(data.test), max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    progress.note(f"data: {len(train)} train / {len(test)} test prompt-response pairs")
    run_dir = _open_run_dir(settings, recipe, data.card)

    def scores(loss: float) -> dict[str, Any]:
        return {"response_loss": round(loss, 4), "perplexity": round(math.exp(loss), 3)}

    progress.note("scoring the base model on the held-out responses")
    baselines = {"base": {**scores(response_loss(base_model, test, pad_id)), "n": len(test)}}
    del base_model
    t = recipe.training
    outcome = fine_tune_decoder(
        base.path,
        train,
        method=recipe.adaptation.method,
        lora=recipe.adaptation.lora,
        epochs=t.epochs,
        batch_size=t.batch_size,
        learning_rate=t.learning_rate,
        warmup_ratio=t.warmup_ratio,
        seed=t.seed,
        progress=progress,
    )
    metrics = {**scores(response_loss(outcome.model, test, pad_id)), "n": len(test)}
    model_dir = run_dir / "model"
    with quiet_transformers():
        outcome.model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
    meta = {"task": "generation", "labels": [], "base_model": base.name, "max_length": max_length}
    (model_dir / "lmforge.json").write_text(json.dumps(meta, indent=1))

    progress.note("answering held-out prompts with the base and the tuned model")
    greedy = SamplingParams(max_tokens=96, temperature=0, repetition_penalty=1.1)
    prompts = data.test.head(SAMPLE_PROMPTS)
    samples = [
        {"prompt": p, "reference": r} for p, r in zip(prompts["text"], prompts["pair"], strict=True)
    ]
    for label, folder in (("base", base.path), ("tuned", model_dir)):
        engine = GenerationEngine.from_folder(folder, "fp32")
        try:
            for sample in samples:
                chat = engine.encode_chat([{"role": "user", "content": sample["prompt"]}])
                sample[label] = engine.generate(chat, greedy, truncate=True).text
        finally:
            engine.close()
    report = {"test": metrics, "baselines": baselines, "losses": outcome.losses, "samples": samples}
    (run_dir / "metrics.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    (run_dir / "samples.md").write_text(_samples_markdown(samples), encoding="utf-8")

    version = None
    if register:
        version = _register_folder(
            recipe,
            run_dir,
            model_dir,
            base.name,
            metrics,
            baselines,
            settings,
            "data_card.md",
            "samples.md",
        )
    return GenerationResult(recipe, run_dir, data, outcome, metrics, baselines, samples, version)


def _samples_markdown(samples: list[dict[str, str]]) -> str:
    parts = ["# Held-out prompts, answered before and after fine-tuning\n"]
    for i, s in enumerate(samples, 1):
        parts.append(
            f"## {i}. {s['prompt']}\n\n**Reference:** {s['reference']}\n\n"
            f"**Base model:** {s['base']}\n\n**Fine-tuned:** {s['tuned']}\n"
        )
    return "\n".join(parts)


@dataclass
class AssistantResult:
    """An assistant run: retrieval on the FAQ's own questions beside BM25 and TF-IDF, and the
    refusal threshold measured on held-out in-domain and off-topic questions."""

    recipe: Recipe
    run_dir: Path
    card: dict[str, Any]
    evaluation: AssistantEvaluation
    metrics: dict[str, Any]
    baselines: dict[str, dict[str, Any]]
    version: ModelVersion | None

    def summary(self) -> dict[str, Any]:
        return {
            **_reported(self.run_dir, self.version, self.metrics, self.baselines, self.card),
            "entries": self.card["rows_used"],
            **self.evaluation.to_json(),
        }


def run_assistant(
    recipe: Recipe,
    settings: Settings | None = None,
    register: bool | None = None,
    progress: ProgressReporter | None = None,
) -> AssistantResult:
    """Index an FAQ, measure retrieval on its own questions beside BM25 and TF-IDF, tune (or
    check) the answer-or-refuse threshold against real off-topic questions, and register the
    assistant (served by POST /v1/assistant/ask with `assistant: {model: NAME}`)."""
    from lmforge.assistant.assistant import resolve_encoder, save_assistant
    from lmforge.assistant.evaluation import evaluate_assistant
    from lmforge.assistant.faq import load_faq
    from lmforge.evaluate.plots import plot_refusal_scores
    from lmforge.runtime.embedder import Embedder

    settings = settings or get_settings()
    progress = progress or SilentProgress()
    register = recipe.registry.enabled if register is None else register
    _check_encoder_base(recipe)
    source = recipe.data.source
    faq = source.builtin or str(source.path)
    entries = load_faq(faq, source.text_column, source.pair_column or "answer")
    encoder = resolve_encoder(recipe.model.base, settings.cache_dir, Registry(settings))
    if recipe.model.text_prefix is not None:
        query = recipe.model.text_prefix
        passage = "passage: " if query == "query: " else query
        encoder = dataclasses.replace(encoder, query_prefix=query, passage_prefix=passage)
    languages = sorted({e.lang for e in entries})
    progress.note(f"FAQ: {len(entries)} entries ({', '.join(languages)}) from {faq}")
    card = _faq_card(faq, entries)
    run_dir = _open_run_dir(settings, recipe, card, _faq_card_markdown)
    progress.note("asking the FAQ its own questions and off-topic ones")
    evaluation = evaluate_assistant(
        entries,
        Embedder(encoder.path).embed,
        query_prefix=encoder.query_prefix,
        passage_prefix=encoder.passage_prefix,
        threshold=recipe.assistant.threshold,
    )
    plot_refusal_scores(
        evaluation.in_domain,
        evaluation.off_topic,
        evaluation.threshold,
        run_dir / "refusal_scores.png",
    )
    metrics, baselines = _assistant_metrics(evaluation)
    report = {"test": metrics, "baselines": baselines, **evaluation.to_json()}
    (run_dir / "metrics.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    model_dir = run_dir / "assistant"
    save_assistant(model_dir, entries, encoder, evaluation.threshold, recipe.assistant.top_k)
    meta = {"task": "assistant", "labels": [], "base_model": encoder.ref}
    (model_dir / "lmforge.json").write_text(json.dumps(meta, indent=1))
    version = None
    if register:
        version = _register_folder(
            recipe,
            run_dir,
            model_dir,
            encoder.ref,
            metrics,
            baselines,
            settings,
            "data_card.md",
            "refusal_scores.png",
        )
    return AssistantResult(recipe, run_dir, card, evaluation, metrics, baselines, version)


def _assistant_metrics(
    evaluation: AssistantEvaluation,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Retrieval averaged over the probe sets, per retriever; the assistant's row also carries
    the refusal figures."""
    by_retriever: dict[str, list[dict[str, Any]]] = {}
    for row in evaluation.retrieval:
        by_retriever.setdefault(row["retriever"], []).append(row)
    averaged = {
        name: {k: round(sum(r[k] for r in rows) / len(rows), 4) for k in ("hit@1", "hit@5", "mrr")}
        for name, rows in by_retriever.items()
    }
    refusal = evaluation.to_json()["refusal"]
    metrics = {
        **averaged.pop("assistant"),
        "threshold": refusal["threshold"],
        "balanced_accuracy": refusal["held_out_balanced_accuracy"],
        "answered_in_domain": refusal["held_out_answered_in_domain"],
        "refused_off_topic": refusal["held_out_refused_off_topic"],
    }
    return metrics, {name.lower().replace("-", ""): m for name, m in averaged.items()}


def _faq_card(source: str, entries: list[Any]) -> dict[str, Any]:
    languages: dict[str, dict[str, Any]] = {}
    for lang in sorted({e.lang for e in entries}):
        group = [e for e in entries if e.lang == lang]
        languages[lang] = {
            "entries": len(group),
            "mean_question_chars": round(sum(len(e.question) for e in group) / len(group)),
            "mean_answer_chars": round(sum(len(e.answer) for e in group) / len(group)),
        }
    n = len(entries)
    return {"source": source, "rows_raw": n, "rows_used": n, "removed": {}, "languages": languages}


def _faq_card_markdown(card: dict[str, Any]) -> str:
    lines = [
        f"# FAQ card — {card['source']}",
        "",
        f"{card['rows_used']} entries, each indexed as its question and answer together.",
        "",
        "| language | entries | mean question chars | mean answer chars |",
        "|---|---:|---:|---:|",
    ]
    for lang, info in card["languages"].items():
        lines.append(
            f"| {lang} | {info['entries']} | {info['mean_question_chars']} | "
            f"{info['mean_answer_chars']} |"
        )
    return "\n".join(lines) + "\n"


def run_recipe(
    recipe: Recipe,
    *,
    settings: Settings | None = None,
    register: bool | None = None,
    resume: Path | None = None,
    progress: ProgressReporter | None = None,
) -> RunResult:
    settings = settings or get_settings()
    progress = progress or SilentProgress()
    register = recipe.registry.enabled if register is None else register

    _check_encoder_base(recipe)
    data = prepare_data(recipe.data)
    check_baselines(recipe.evaluation.baselines, data.labels)
    base = resolve_base(recipe.model.base, settings.cache_dir)
    if recipe.compress.enabled:
        check_compress_config(recipe.compress, base.path)
    if resume is not None:
        read_checkpoint_state(resume / "checkpoints", recipe)  # fail before touching the run
    progress.note(
        f"data: {len(data.train)} train / {len(data.validation)} validation / "
        f"{len(data.test)} test rows, labels {', '.join(data.labels)}"
    )

    run_dir = _open_run_dir(settings, recipe, data.card, resume=resume)

    outcome = fine_tune(recipe, data, base, run_dir, resume=resume is not None, progress=progress)
    progress.note("evaluating on the test split beside baselines")
    metrics = evaluate_classifier(
        outcome.model,
        outcome.tokenizer,
        data,
        max_length=recipe.training.max_length,
        text_prefix=outcome.text_prefix,
    )
    baselines = score_baselines(data, recipe.evaluation.baselines)
    report = {"test": metrics, "baselines": baselines, "training": training_summary(outcome)}
    (run_dir / "metrics.json").write_text(json.dumps(report, indent=1))
    if outcome.history:
        plot_training_curve(outcome.history, run_dir / "training_curve.png")
    plot_confusion_matrix(
        metrics["confusion_matrix"], data.labels, run_dir / "confusion_matrix.png"
    )

    model_dir = run_dir / "model"
    _save_model(model_dir, recipe, outcome, base.name, data.labels)
    if outcome.adapter_dir is not None:
        shutil.copytree(outcome.adapter_dir, model_dir / "adapter", dirs_exist_ok=True)
    (model_dir / "README.md").write_text(
        model_card(recipe, data.card, metrics, baselines, training_summary(outcome), base.name),
        encoding="utf-8",
    )
    version = None
    if register:
        plots = [
            n for n in ("training_curve.png", "confusion_matrix.png") if (run_dir / n).exists()
        ]
        version = _register_folder(
            recipe,
            run_dir,
            model_dir,
            base.name,
            metrics,
            baselines,
            settings,
            "data_card.md",
            *plots,
            labels=data.labels,
        )
    compression = None
    if version is not None and recipe.compress.enabled:
        progress.note(f"compressing {version.ref}")
        compression = compress_version(
            version.ref, recipe.compress, settings=settings, progress=progress
        )
    return RunResult(recipe, run_dir, data, outcome, metrics, baselines, version, compression)


def _register_folder(
    recipe: Recipe,
    run_dir: Path,
    model_dir: Path,
    base_name: str,
    metrics: dict[str, Any],
    baselines: dict[str, Any],
    settings: Settings,
    *reports: str,
    labels: list[str] | None = None,
) -> ModelVersion:
    """Register a run's finished model folder with the run's recipe, metrics, data card and the
    named reports. The folder moves into the registry (no second copy on disk); if registering
    fails it moves back, so the run folder keeps it."""
    registry = Registry(settings)
    staging = registry.new_staging_dir()
    staging.rmdir()
    shutil.move(model_dir, staging)
    added = ["recipe.yaml", "metrics.json", "data_card.json", *reports]
    try:
        for name in added:
            shutil.copy2(run_dir / name, staging / name)
        return registry.register(
            recipe.model_name,
            staging,
            task=recipe.task,
            base_model=base_name,
            labels=labels or [],
            metrics=metrics,
            baselines=baselines,
            stage=recipe.registry.stage,
        )
    except BaseException:
        if staging.exists():
            for name in added:
                (staging / name).unlink(missing_ok=True)
            shutil.move(staging, model_dir)
        raise


def _check_encoder_base(recipe: Recipe) -> None:
    entry = CATALOGUE.get(recipe.model.base)
    if entry is not None and entry.kind != "encoder":
        raise RecipeError(
            f"model.base '{entry.name}' is a {entry.kind}, and {recipe.task} needs an encoder",
            "use minilm-l6 or multilingual-e5-small (see `lmforge models catalogue`)",
        )


def _open_run_dir(
    settings: Settings,
    recipe: Recipe,
    card: dict[str, Any],
    markdown: Callable[[dict[str, Any]], str] = data_card_markdown,
    resume: Path | None = None,
) -> Path:
    """A new run folder (or the one resumed) with the recipe and the data card in it."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
    run_dir = resume or settings.runs_dir / f"{recipe.name}-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=resume is not None)
    (run_dir / "recipe.yaml").write_text(dump_recipe(recipe), encoding="utf-8")
    (run_dir / "data_card.json").write_text(json.dumps(card, indent=1, ensure_ascii=False))
    (run_dir / "data_card.md").write_text(markdown(card), encoding="utf-8")
    return run_dir


def _save_model(
    folder: Path, recipe: Recipe, outcome: TrainOutcome, base_name: str, labels: list[str]
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        outcome.model.save_pretrained(str(folder))
        outcome.tokenizer.save_pretrained(str(folder))
    meta = {
        "task": recipe.task,
        "labels": labels,
        "base_model": base_name,
        "text_prefix": outcome.text_prefix,
        "max_length": recipe.training.max_length,
        "cleaning": recipe.data.cleaning.model_dump(),
        "precision": outcome.precision,
    }
    (folder / "lmforge.json").write_text(json.dumps(meta, indent=1))
