"""The finance monitor's loop on 200 analyst corrections (issue 20): the served headline model
(``examples/finance-sentiment.yaml``, its compressed variant promoted to production), 200
hand-labelled headlines outside its labelled set sent back through the feedback store as
``{text, label}`` rows (``lmforge.data.finance.load_corrections``: what an analyst correcting
the monitor's labels sends), one ``lmforge loop`` round (retrain → gate → promote), and the
held-out macro-F1 — the 224 hand-labelled test headlines, never trained or tuned on — of the
version served before and after, beside the challenger's own.

    LMFORGE_HOME=/tmp/finloop PYTHONPATH=src .venv/bin/python benchmarks/finance_loop.py \
        --json /tmp/finance_loop.json

The home is the script's own: the recipe is run there first when it has no ``finance-sentiment``
(a few minutes on two cores, compression included); an earlier round's feedback is removed
first, so each run starts from the same production version.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from lmforge.settings import Settings

HERE = Path(__file__).resolve().parent
RECIPE = HERE.parent / "examples" / "finance-sentiment.yaml"
MODEL = "finance-sentiment"


def held_out_scores(ref: str, texts: list[str], labels: list[str]) -> dict[str, float]:
    """Accuracy and macro-F1 of the registered ``ref`` (through its backend) on the test part."""
    from lmforge.registry import Registry
    from lmforge.runtime import Predictor

    predicted = [p.label for p in Predictor(Registry().get(ref).path).predict(texts)]
    return {
        "accuracy": round(float(accuracy_score(labels, predicted)), 4),
        "macro_f1": round(float(f1_score(labels, predicted, average="macro")), 4),
    }


def production() -> str:
    """The served version: the recipe run once (registered and compressed) and its compressed
    variant promoted, as an operator would before serving it."""
    from lmforge import run_recipe
    from lmforge.recipe import load_recipe
    from lmforge.registry import Registry
    from lmforge.tasks.promote import promote_version

    registry = Registry()
    if not registry.list(MODEL):
        result = run_recipe(load_recipe(RECIPE))
        chosen = result.compression.version if result.compression is not None else None
        promote_version((chosen or result.version).ref)  # type: ignore[union-attr]
    return registry.get(f"{MODEL}:production").ref


def _forget_feedback() -> None:
    from sqlalchemy import text

    from lmforge.monitor.tables import create_tables
    from lmforge.registry import Registry

    engine = Registry().engine
    create_tables(engine)
    with engine.begin() as connection:
        gone = connection.execute(text("DELETE FROM feedback")).rowcount
    if gone:
        print(f"{gone} feedback rows of an earlier run removed", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=Path("finance_loop.json"))
    args = parser.parse_args()
    if not os.environ.get("LMFORGE_HOME"):
        raise SystemExit("set LMFORGE_HOME to a folder of its own")

    from lmforge.data.finance import load_corrections, load_labelled
    from lmforge.monitor import FeedbackEvent, record_feedback
    from lmforge.tasks.loop import run_round

    served = production()
    _forget_feedback()
    test = load_labelled().query("split == 'test'")
    texts, labels = test["text"].tolist(), test["label"].tolist()
    before = held_out_scores(served, texts, labels)
    corrections = load_corrections()
    for row in corrections.itertuples():
        record_feedback(FeedbackEvent(model=MODEL, text=row.text, label=row.label))
    tick = time.perf_counter()
    round_ = run_round(MODEL, min_new_feedback=len(corrections), settings=Settings())
    wall = time.perf_counter() - tick
    if round_.retrain is None:
        raise SystemExit(f"the round did not retrain: {round_.error}")
    result = round_.retrain
    challenger = held_out_scores(result.challenger.ref, texts, labels)
    after = challenger if result.promoted else before
    report: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "served_before": served,
        "corrections": len(corrections),
        "corrections_labels": corrections["label"].value_counts().to_dict(),
        "triggers": round_.triggers,
        "decision": "promoted" if result.promoted else "candidate",
        "gate": result.decision.to_json(),
        "feedback": result.counts,
        "weight": result.weighting,
        "held_out_before": before,
        "held_out_challenger": challenger,
        "held_out_after": after,
        "served_after": result.challenger.ref if result.promoted else served,
        "scores": result.scores,
        "test_rows": len(test),
        "round_wall_seconds": round(wall, 1),
        "macro_f1_gain_points": round(100 * (after["macro_f1"] - before["macro_f1"]), 2),
        "challenger_macro_f1_gain_points": round(
            100 * (challenger["macro_f1"] - before["macro_f1"]), 2
        ),
        "label_share_test": {
            k: round(float(np.mean([y == k for y in labels])), 3) for k in set(labels)
        },
    }
    args.json.write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
