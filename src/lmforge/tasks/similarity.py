"""task: similarity — fine-tune an encoder into a sentence-embedding model on positive pairs
(contrastive, in-batch negatives) and measure retrieval on the test split (each text → its
partner among all test partners) beside the untuned encoder and BM25. Served by /v1/embed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from lmforge.assistant.retrieval import Bm25Retriever, DenseRetriever, evaluate_retrieval
from lmforge.data.prepare import PairData, prepare_pairs
from lmforge.models.meta import SimilarityMeta
from lmforge.recipe import Recipe
from lmforge.registry.card import percent
from lmforge.registry.refs import resolve_base
from lmforge.runtime.embedder import Embedder
from lmforge.tasks.base import (
    Report,
    ReportLine,
    ReportTable,
    RunContext,
    TaskOutput,
    check_encoder_base,
    check_loss_validation,
    loss_patience,
)
from lmforge.train.contrastive import EmbeddingFit, fit_embeddings, save_encoder


@dataclass(kw_only=True)
class SimilarityOutput(TaskOutput):
    data: PairData
    fit: EmbeddingFit


def retrieval_cells(m: dict[str, Any]) -> list[str]:
    """hit@1, hit@5 and MRR as report cells."""
    return [percent(m["hit@1"]), percent(m["hit@5"]), f"{m['mrr']:.3f}"]


class SimilarityTask:
    name: ClassVar[str] = "similarity"
    resumable: ClassVar[bool] = True
    compressible: ClassVar[bool] = False
    registered: ClassVar[str] = "registered [bold]{ref}[/bold] ({stage}); embed with POST /v1/embed"

    def check(self, recipe: Recipe) -> None:
        check_encoder_base(recipe)
        check_loss_validation(recipe)

    def run(self, ctx: RunContext) -> SimilarityOutput:
        recipe, progress = ctx.recipe, ctx.progress
        data = prepare_pairs(recipe.data)
        base = resolve_base(recipe.model.base, "encoder", ctx.settings.cache_dir, progress)
        query_prefix = (
            base.text_prefix if recipe.model.text_prefix is None else recipe.model.text_prefix
        )
        passage_prefix = "passage: " if query_prefix == "query: " else query_prefix
        max_length = recipe.training.max_length
        progress.note(
            f"data: {len(data.train)} train / {len(data.validation)} validation / "
            f"{len(data.test)} test pairs"
        )
        run_dir = ctx.open_run_dir(data.card)
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
        patience = loss_patience(recipe)
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
            validation=PairData.pairs(data.validation) if patience else None,
            watch="loss",
            patience=patience,
            eval_every_steps=recipe.training.eval_every_steps,
            run_dir=run_dir,
            resume=ctx.resume is not None,
        )
        model_dir = save_encoder(fit.model, base.path, run_dir / "model")
        meta = SimilarityMeta(
            task="similarity",
            labels=[],
            base_model=base.name,
            text_prefix=query_prefix,
            passage_prefix=passage_prefix,
            max_length=max_length,
            cleaning=recipe.data.cleaning,
        )
        progress.note("scoring the fine-tuned encoder on the test pairs")
        metrics = retrieval(model_dir)
        report = {"test": metrics, "baselines": baselines, "losses": fit.losses}
        (run_dir / "metrics.json").write_text(json.dumps(report, indent=1))
        training = {
            "steps": fit.steps,
            "train_seconds": round(fit.seconds, 1),
            "first_loss": round(fit.losses[0], 4) if fit.losses else None,
            "last_loss": round(fit.losses[-1], 4) if fit.losses else None,
        }
        table = ReportTable(
            f"{recipe.name}: test pairs, each text → its partner",
            ["model", "hit@1", "hit@5", "MRR"],
            [
                [name, *retrieval_cells(m)]
                for name, m in [("fine-tuned", metrics), *baselines.items()]
            ],
        )
        line = ReportLine(f"trained {fit.steps} steps; run folder {run_dir}")
        return SimilarityOutput(
            model_dir=model_dir,
            meta=meta,
            metrics=metrics,
            baselines=baselines,
            card=data.card,
            reports=("data_card.md",),
            summary={"training": training},
            report=Report([table], [line]),
            data=data,
            fit=fit,
        )
