"""``lmforge retrain`` (one round of retraining on feedback behind the promotion gate) and
``lmforge loop`` (the triggers, then retrain → gate → promote, once or every interval), and the
retraining record ``lmforge models show`` prints."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from lmforge.cli.output import RichProgress, out, print_json, print_table
from lmforge.errors import LmforgeError
from lmforge.registry.card import percent

if TYPE_CHECKING:  # the tasks import torch: loaded only when a command runs
    from lmforge.tasks.loop import RoundResult


class WarmStartChoice(StrEnum):
    production = "production"
    base = "base"


RecipeOption = Annotated[
    Path | None,
    typer.Option(
        "--recipe",
        help="Training and feedback settings (default: the production version's own recipe).",
    ),
]
WarmStartOption = Annotated[
    WarmStartChoice | None,
    typer.Option("--warm-start", help="Start from production's weights or the recipe's base."),
]
MinGain = Annotated[
    float | None,
    typer.Option("--min-gain", help="Points to gain on the feedback slice (feedback.gate)."),
]
MaxTestDrop = Annotated[
    float | None,
    typer.Option("--max-test-drop", help="Points the original test split may lose."),
]
MinEvalRows = Annotated[
    int | None,
    typer.Option("--min-eval-rows", help="Fewest held-out feedback rows to decide on."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _gate(min_gain: float | None, max_test_drop: float | None, rows: int | None) -> dict[str, Any]:
    given = {"min_gain": min_gain, "max_test_drop": max_test_drop, "min_eval_rows": rows}
    return {k: v for k, v in given.items() if v is not None}


def retrain(
    model: Annotated[
        str, typer.Argument(help="The registered classifier's or recommender's NAME.")
    ],
    recipe: RecipeOption = None,
    warm_start: WarmStartOption = None,
    min_gain: MinGain = None,
    max_test_drop: MaxTestDrop = None,
    min_eval_rows: MinEvalRows = None,
    json_output: JsonOption = False,
) -> None:
    """Retrain the production version on its feedback; promote only if the gate passes."""
    from lmforge.tasks.retrain import retrain as run_retrain

    result = run_retrain(
        model,
        recipe=recipe,
        warm_start=warm_start.value if warm_start else None,
        gate=_gate(min_gain, max_test_drop, min_eval_rows),
        progress=False if json_output else RichProgress(),
    )
    if json_output:
        print_json(result.to_json())
        return
    print_record(result.record(), result.challenger.ref)


def print_record(record: dict[str, Any], ref: str) -> None:
    """A retraining record: both models on both slices, the feedback counts, the decision."""
    scores, counts = record["scores"], record["feedback"]
    recommender = "interactions" in counts  # a recommender's round (hit rates, interactions)
    metrics = ("hr@10", "ndcg@10") if recommender else ("accuracy", "macro_f1")
    rows = [
        [
            f"{who} ({record['champion'] if who == 'production' else ref})",
            *(percent(scores[key][part][m]) for part in ("test", "feedback") for m in metrics),
        ]
        for who, key in (("production", "champion"), ("challenger", "challenger"))
        if key in scores
    ]
    names = {"accuracy": "acc", "macro_f1": "macro-F1", "hr@10": "HR@10", "ndcg@10": "NDCG@10"}
    columns = ["model", *(f"{part} {names[m]}" for part in ("test", "feedback") for m in metrics)]
    print_table("retraining on feedback", columns, rows)
    if recommender:
        out.print(
            f"interactions: {counts['usable']} usable of {counts['interactions']} — "
            f"{counts['train_rows']} trained on, {counts['holdout_rows']} held out",
            highlight=False,
        )
    else:
        skipped = ", ".join(f"{n} {k}" for k, n in counts.get("skipped", {}).items()) or "none"
        out.print(
            f"feedback: {counts['usable']} usable of {counts['feedback_rows']} rows — "
            f"{counts['train_rows']} trained on, {counts['validation_rows']} validation, "
            f"{counts['holdout_rows']} held out; {counts['corrected']} corrections, "
            f"{counts['leakage']} left out as original validation/test texts; skipped: {skipped}",
            highlight=False,
        )
    gate = record["gate"]
    verdict = "promoted" if record["decision"] == "promoted" else "kept as a candidate"
    out.print(f"[bold]{ref} {verdict}[/bold]: {gate['reason']}", highlight=False)


def loop(
    model: Annotated[
        str, typer.Argument(help="The registered classifier's or recommender's NAME.")
    ],
    once: Annotated[bool, typer.Option("--once", help="Run one round and exit.")] = False,
    every: Annotated[
        str | None, typer.Option("--every", help="Run a round every interval, e.g. 30m or 1h.")
    ] = None,
    min_new_feedback: Annotated[
        int | None,
        typer.Option("--min-new-feedback", help="Labelled rows since the last round to retrain."),
    ] = None,
    recipe: RecipeOption = None,
    warm_start: WarmStartOption = None,
    min_gain: MinGain = None,
    max_test_drop: MaxTestDrop = None,
    min_eval_rows: MinEvalRows = None,
    no_drift: Annotated[
        bool, typer.Option("--no-drift", help="Retrain on the feedback trigger only.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON line per round.")] = False,
) -> None:
    """Retrain → gate → promote when enough new feedback arrived or the traffic drifted: once,
    or every interval."""
    if once == (every is not None):  # checked before the tasks (and torch) are imported
        raise LmforgeError("give one of --once or --every INTERVAL", "e.g. --every 1h")
    from lmforge.tasks.loop import parse_interval, report_drift, run_loop, run_round

    options: dict[str, Any] = {
        "min_new_feedback": min_new_feedback,
        "drift_check": None if no_drift else report_drift(),
        "recipe": recipe,
        "warm_start": warm_start.value if warm_start else None,
        "gate": _gate(min_gain, max_test_drop, min_eval_rows),
        "progress": False if json_output else RichProgress(),
    }

    def show(result: RoundResult) -> None:
        if json_output:
            print_json(result.to_json())
        else:
            print_round(result)

    if every is None:
        show(run_round(model, **options))
        return
    run_loop(model, every=parse_interval(every), on_round=show, **options)


def print_round(result: RoundResult) -> None:
    when = f"{result.started_at:%Y-%m-%d %H:%M:%S}"
    drift = {None: "not checked", True: "fired", False: "quiet"}[result.drifted]
    head = (
        f"{when} {result.model}: {result.new_feedback} new labelled rows "
        f"(retrain at {result.min_new_feedback}), drift {drift}"
    )
    if result.error is not None:
        out.print(f"{head}; [red]round failed:[/red] {result.error}", highlight=False)
    elif result.retrain is None:
        out.print(f"{head}; nothing to do", highlight=False)
    else:
        out.print(f"{head}; retrained ({', '.join(result.triggers)})", highlight=False)
        print_record(result.retrain.record(), result.retrain.challenger.ref)
