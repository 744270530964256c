"""What k Chinese reviews can teach at most: the bound beside the closed loop's figure (issue 18,
measurement 2). The feedback rows a k-round of ``benchmarks/feedback_loop.py`` trains on (the
same first k streamed reviews, placed by the same seeded hash into training / validation /
held out) train the served recipe's adaptation **from the base encoder, on them alone**, for
several epochs with early stopping on the feedback validation rows; the result is scored on the
same 2,580 held-out Chinese reviews. The loop's challenger (one epoch over them beside 1,000
English rows, warm-started from the English model) can be read against it: if this bound stays
below the loop's goal, no weighting of the same feedback would reach it.

    LMFORGE_HOME=/tmp/fl PYTHONPATH=src:benchmarks .venv/bin/python benchmarks/feedback_bound.py \
        --k 1000 --epochs 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from feedback_loop import SERVED_RECIPE, ZH_TRAINED_ACCURACY, held_out_and_stream
from lmforge.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, nargs="+", default=[1000])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--before", type=float, default=None, help="the served model's accuracy")
    parser.add_argument("--out", type=Path, default=Path("feedback_bound.json"))
    args = parser.parse_args()
    if not os.environ.get("LMFORGE_HOME"):
        raise SystemExit("set LMFORGE_HOME to a folder of its own")

    from lmforge.data import PreparedData, prepare_data
    from lmforge.progress import resolve_progress
    from lmforge.recipe import load_recipe
    from lmforge.registry.refs import resolve_base
    from lmforge.tasks.base import RunContext
    from lmforge.tasks.classification import ClassificationTask
    from lmforge.tasks.retrain_data import Example, FeedbackExamples, assemble

    recipe = load_recipe(SERVED_RECIPE)
    training = recipe.training.model_copy(update={"epochs": args.epochs, "eval_every_steps": 10})
    recipe = recipe.model_copy(update={"training": training})
    english = prepare_data(recipe.data)
    held, held_labels, pool, pool_labels = held_out_and_stream()
    settings = Settings()
    progress = resolve_progress(None)
    base = resolve_base(recipe.model.base, "encoder", settings.cache_dir, progress)
    results = []
    for k in args.k:
        now = datetime.now(UTC)
        examples = [Example(t, y, now) for t, y in zip(pool[:k], pool_labels[:k], strict=True)]
        assembled = assemble(
            english, FeedbackExamples(examples, k), recipe.feedback, recipe.data.cleaning
        )
        test = pd.DataFrame({"text": held, "label": held_labels})
        data = PreparedData(  # the round's data card, for the run folder's records
            assembled.feedback_train,
            assembled.feedback_validation,
            test,
            english.labels,
            assembled.data.card,
        )
        ctx = RunContext(recipe, settings, progress)
        output = ClassificationTask().fit(ctx, data, base)
        accuracy = float(output.metrics["accuracy"])
        row = {
            "k": k,
            "train_rows": len(data.train),
            "validation_rows": len(data.validation),
            "epochs": args.epochs,
            "zh_held_out_accuracy": accuracy,
        }
        if args.before is not None:
            row["gap_closed_bound"] = (accuracy - args.before) / (ZH_TRAINED_ACCURACY - args.before)
        results.append(row)
        print(json.dumps(row), file=sys.stderr)
        shutil.rmtree(ctx.run_dir, ignore_errors=True)
        args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
