"""task: generation — instruction-tune a decoder on prompt/response pairs (loss on the responses
only), score the held-out responses' loss and perplexity beside the base model, and answer a
few held-out prompts with both. The merged model is served by /v1/chat/completions.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from transformers import AutoModelForCausalLM, AutoTokenizer

from lmforge.data.prepare import PairData, prepare_pairs
from lmforge.models.classifier import quiet_transformers
from lmforge.models.loading import from_pretrained
from lmforge.models.meta import GenerationMeta
from lmforge.recipe import Recipe
from lmforge.registry.refs import resolve_base
from lmforge.runtime.generation import GenerationEngine, SamplingParams
from lmforge.tasks.base import (
    Report,
    ReportLine,
    ReportTable,
    RunContext,
    TaskOutput,
    check_decoder_base,
    check_loss_validation,
    loss_patience,
)
from lmforge.train.sft import SftOutcome, chat_examples, fine_tune_decoder, response_loss

SAMPLE_PROMPTS = 3  # held-out prompts answered by the base and the tuned model in the report


@dataclass(kw_only=True)
class GenerationOutput(TaskOutput):
    data: PairData
    outcome: SftOutcome
    samples: list[dict[str, str]]


class GenerationTask:
    name: ClassVar[str] = "generation"
    resumable: ClassVar[bool] = True
    compressible: ClassVar[bool] = False
    registered: ClassVar[str] = "registered [bold]{ref}[/bold]; serve with --decoder {name}"

    def check(self, recipe: Recipe) -> None:
        check_decoder_base(recipe)
        check_loss_validation(recipe)

    def run(self, ctx: RunContext) -> GenerationOutput:
        recipe, progress = ctx.recipe, ctx.progress
        data = prepare_pairs(recipe.data)
        base = resolve_base(recipe.model.base, "decoder", ctx.settings.cache_dir, progress)
        max_length = recipe.training.max_length
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(base.path)
            base_model = from_pretrained(AutoModelForCausalLM, base.path, use_safetensors=True)
        train = chat_examples(tokenizer, PairData.pairs(data.train), max_length)
        test = chat_examples(tokenizer, PairData.pairs(data.test), max_length)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        progress.note(f"data: {len(train)} train / {len(test)} test prompt-response pairs")
        run_dir = ctx.open_run_dir(data.card)

        def scores(loss: float) -> dict[str, Any]:
            return {"response_loss": round(loss, 4), "perplexity": round(math.exp(loss), 3)}

        progress.note("scoring the base model on the held-out responses")
        baselines = {"base": {**scores(response_loss(base_model, test, pad_id)), "n": len(test)}}
        del base_model
        t = recipe.training
        patience = loss_patience(recipe)
        validation = chat_examples(tokenizer, PairData.pairs(data.validation), max_length)
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
            validation=validation if patience else None,
            patience=patience,
            eval_every_steps=t.eval_every_steps,
            run_dir=run_dir,
            resume=ctx.resume is not None,
        )
        metrics = {**scores(response_loss(outcome.model, test, pad_id)), "n": len(test)}
        model_dir = run_dir / "model"
        with quiet_transformers():
            outcome.model.save_pretrained(model_dir)
            tokenizer.save_pretrained(model_dir)
        meta = GenerationMeta(
            task="generation", labels=[], base_model=base.name, max_length=max_length
        )

        progress.note("answering held-out prompts with the base and the tuned model")
        prompts = data.test.head(SAMPLE_PROMPTS)
        samples = [
            {"prompt": p, "reference": r}
            for p, r in zip(prompts["text"], prompts["pair"], strict=True)
        ]
        _answer(samples, {"base": base.path, "tuned": model_dir})
        report = {
            "test": metrics,
            "baselines": baselines,
            "losses": outcome.losses,
            "samples": samples,
        }
        (run_dir / "metrics.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
        (run_dir / "samples.md").write_text(_samples_markdown(samples), encoding="utf-8")
        training = {
            "steps": outcome.steps,
            "train_seconds": round(outcome.seconds, 1),
            "first_loss": round(outcome.losses[0], 4),
            "last_loss": round(outcome.losses[-1], 4),
            "trainable_parameters": outcome.trainable_parameters,
            "total_parameters": outcome.total_parameters,
        }
        return GenerationOutput(
            model_dir=model_dir,
            meta=meta,
            metrics=metrics,
            baselines=baselines,
            card=data.card,
            reports=("data_card.md", "samples.md"),
            summary={"training": training, "samples": samples},
            report=_report(recipe, metrics, baselines, samples, outcome.steps, run_dir),
            data=data,
            outcome=outcome,
            samples=samples,
        )


def _answer(samples: list[dict[str, str]], models: dict[str, Path]) -> None:
    """Each model's greedy answer to each sample's prompt, stored under the model's label."""
    greedy = SamplingParams(max_tokens=96, temperature=0, repetition_penalty=1.1)
    for label, folder in models.items():
        engine = GenerationEngine.from_folder(folder, "fp32")
        try:
            for sample in samples:
                chat = engine.encode_chat([{"role": "user", "content": sample["prompt"]}])
                sample[label] = engine.generate(chat, greedy, truncate=True).text
        finally:
            engine.close()


def _samples_markdown(samples: list[dict[str, str]]) -> str:
    parts = ["# Held-out prompts, answered before and after fine-tuning\n"]
    for i, s in enumerate(samples, 1):
        parts.append(
            f"## {i}. {s['prompt']}\n\n**Reference:** {s['reference']}\n\n"
            f"**Base model:** {s['base']}\n\n**Fine-tuned:** {s['tuned']}\n"
        )
    return "\n".join(parts)


def _report(
    recipe: Recipe,
    metrics: dict[str, Any],
    baselines: dict[str, dict[str, Any]],
    samples: list[dict[str, str]],
    steps: int,
    run_dir: Path,
) -> Report:
    table = ReportTable(
        f"{recipe.name}: held-out responses",
        ["model", "loss per response token", "perplexity"],
        [
            [name, f"{m['response_loss']:.3f}", f"{m['perplexity']:.2f}"]
            for name, m in [("fine-tuned", metrics), *baselines.items()]
        ],
    )
    lines = []
    for sample in samples:
        lines += [
            ReportLine(f"[bold]Q:[/bold] {sample['prompt']}", highlight=False),
            ReportLine(f"  base:  {sample['base']}", highlight=False),
            ReportLine(f"  tuned: {sample['tuned']}", highlight=False),
        ]
    lines.append(ReportLine(f"trained {steps} steps; run folder {run_dir}"))
    return Report([table], lines)
