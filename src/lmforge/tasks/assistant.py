"""task: assistant — index an FAQ, measure retrieval on its own questions beside BM25 and
TF-IDF, tune (or check) the answer-or-refuse threshold of each question language against real
off-topic questions, and
hand over the assistant folder (served by POST /v1/assistant/ask with
``assistant: {model: NAME}``). Nothing is trained: the FAQ's card stands for the data card.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from lmforge.assistant.assistant import (
    encoder_key,
    index_cache_dir,
    resolve_encoder,
    save_assistant,
)
from lmforge.assistant.evaluation import AssistantEvaluation, evaluate_assistant
from lmforge.assistant.faq import FaqEntry, load_faq
from lmforge.evaluate.plots import plot_refusal_scores
from lmforge.models.meta import AssistantMeta
from lmforge.recipe import Recipe
from lmforge.registry import Registry
from lmforge.registry.card import percent
from lmforge.runtime.embedder import Embedder
from lmforge.tasks.base import (
    Report,
    ReportLine,
    ReportTable,
    RunContext,
    TaskOutput,
    check_encoder_base,
)
from lmforge.tasks.similarity import retrieval_cells


@dataclass(kw_only=True)
class AssistantOutput(TaskOutput):
    evaluation: AssistantEvaluation
    entries: list[FaqEntry]


class AssistantTask:
    name: ClassVar[str] = "assistant"
    resumable: ClassVar[bool] = False
    compressible: ClassVar[bool] = False
    registered: ClassVar[str] = "registered [bold]{ref}[/bold]; serve with --assistant {name}"

    def check(self, recipe: Recipe) -> None:
        check_encoder_base(recipe)

    def run(self, ctx: RunContext) -> AssistantOutput:
        recipe, progress = ctx.recipe, ctx.progress
        source = recipe.data.source
        faq = source.builtin or str(source.path)
        entries = load_faq(faq, source.text_column, source.pair_column or "answer")
        encoder = resolve_encoder(recipe.model.base, ctx.settings.cache_dir, Registry(ctx.settings))
        if recipe.model.text_prefix is not None:
            query = recipe.model.text_prefix
            passage = "passage: " if query == "query: " else query
            encoder = dataclasses.replace(encoder, query_prefix=query, passage_prefix=passage)
        languages = sorted({e.lang for e in entries})
        progress.note(f"FAQ: {len(entries)} entries ({', '.join(languages)}) from {faq}")
        card = _faq_card(faq, entries)
        run_dir = ctx.open_run_dir(card, _faq_card_markdown)
        progress.note("asking the FAQ its own questions and off-topic ones")
        evaluation = evaluate_assistant(
            entries,
            Embedder(encoder.path).embed,
            query_prefix=encoder.query_prefix,
            passage_prefix=encoder.passage_prefix,
            threshold=recipe.assistant.threshold,
            index_cache=index_cache_dir(ctx.settings.cache_dir),
            encoder_key=encoder_key(encoder.path),
        )
        plots = []
        for lang, refusal in evaluation.languages.items():
            plots.append(f"refusal_scores_{lang}.png")
            plot_refusal_scores(
                refusal.in_domain, refusal.off_topic, refusal.threshold, run_dir / plots[-1]
            )
        metrics, baselines = _assistant_metrics(evaluation)
        report = {"test": metrics, "baselines": baselines, **evaluation.to_json()}
        (run_dir / "metrics.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
        model_dir = run_dir / "assistant"
        save_assistant(model_dir, entries, encoder, evaluation.thresholds, recipe.assistant.top_k)
        return AssistantOutput(
            model_dir=model_dir,
            meta=AssistantMeta(task="assistant", labels=[], base_model=encoder.ref),
            metrics=metrics,
            baselines=baselines,
            card=card,
            reports=("data_card.md", *plots),
            summary={"entries": card["rows_used"], **evaluation.to_json()},
            report=_report(recipe, evaluation, run_dir),
            evaluation=evaluation,
            entries=entries,
        )


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
        **{f"threshold_{lang}": t for lang, t in refusal["thresholds"].items()},
        "balanced_accuracy": refusal["held_out_balanced_accuracy"],
        "answered_in_domain": refusal["held_out_answered_in_domain"],
        "refused_off_topic": refusal["held_out_refused_off_topic"],
    }
    return metrics, {name.lower().replace("-", ""): m for name, m in averaged.items()}


def _faq_card(source: str, entries: list[FaqEntry]) -> dict[str, Any]:
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


def _report(recipe: Recipe, evaluation: AssistantEvaluation, run_dir: Path) -> Report:
    table = ReportTable(
        f"{recipe.name}: the FAQ's questions, asked as a customer would",
        ["questions → entries", "retriever", "n", "hit@1", "hit@5", "MRR"],
        [
            [r["probe"], r["retriever"], str(r["queries"]), *retrieval_cells(r)]
            for r in evaluation.retrieval
        ],
        text_columns=2,
    )
    r = evaluation.to_json()["refusal"]
    lines = [
        ReportLine(
            f"{lang} questions: refusal threshold {row['threshold']:.3f} "
            f"({'tuned on half' if r['tuned'] else 'given'}); held out: FAQ questions answered "
            f"{percent(row['held_out_answered_in_domain'])} "
            f"({percent(row['held_out_answered_with_right_entry'])} with the right entry), "
            f"off-topic refused {percent(row['held_out_refused_off_topic'])}",
            highlight=False,
        )
        for lang, row in r["languages"].items()
    ]
    lines.append(ReportLine(f"run folder {run_dir}", highlight=False))
    return Report([table], lines)
