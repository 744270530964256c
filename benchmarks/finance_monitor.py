"""The finance monitor on the 2020 Guardian replay (issue 20, "Measured"):

1. every surge alert of the replay with its date and figures — the rule and its thresholds are
   the defaults of ``lmforge.finance.SurgeConfig``, fixed from first principles before this was
   first run (docs/finance.md, "The surge rule"); goal: the first alert between 24 February and
   13 March 2020, at most one in January;
2. the model's negative share per month beside the hand-labelled subset's (and the model's on
   those same labelled headlines), so a reader sees whether the model tracks human judgement;
3. replay throughput through the whole monitor (score + entities + store + rule, per day)
   beside the runtime's raw throughput on the same headlines in the same daily batches (goal
   ≥ 80 %); the raw figure is the mean of a run before and a run after the monitor's, so a
   change in the machine's load during the run shows as their spread;
4. the gazetteer's entity precision and recall on the 100 hand-labelled headlines.

The replay goes into a fresh SQLite database in a temporary folder, so every run starts empty.

``--scorer weak`` replays with the lexicons' weak labels (``lmforge.data.finance.weak_labels``:
the Loughran–McDonald and VADER vote) in the model's place: the same rule on a tone signal that
needs no trained model (no throughput figure then: there is no runtime to compare with).

    PYTHONPATH=src LMFORGE_HOME=/work/h-finmon/home .venv/bin/python \
        benchmarks/finance_monitor.py --model finance-sentiment --json /tmp/finance_monitor.json
    PYTHONPATH=src .venv/bin/python benchmarks/finance_monitor.py --scorer weak
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmforge.data.finance import load_labelled, weak_labels
from lmforge.finance import (
    FinanceMonitor,
    Headline,
    ScoredHeadline,
    Scorer,
    SurgeConfig,
    replay_days,
    run_stream,
)
from lmforge.finance.entities import entity_accuracy, load_entity_labels, load_gazetteer
from lmforge.registry.db import make_engine


class WeakScorer:
    """The lexicons' vote as the scorer: probability 1 for the voted label."""

    ref = "weak-labels"

    def __init__(self) -> None:
        self.gazetteer = load_gazetteer()

    def score(self, headlines: Sequence[Headline]) -> list[ScoredHeadline]:
        labels = weak_labels([h.text for h in headlines])
        return [
            ScoredHeadline(
                *(h.id, h.time, h.text, label, 1.0),
                {name: float(name == label) for name in ("negative", "neutral", "positive")},
                "weak-labels",
                None,
                self.gazetteer.find(h.text),
            )
            for h, label in zip(headlines, labels, strict=True)
        ]


def raw_seconds(scorer: Scorer, days: list[Any]) -> float:
    """The runtime alone on the same daily batches: the seconds its predict calls take."""
    spent = 0.0
    for _, rows in days:
        texts = [h.text for h in rows]
        start = time.perf_counter()
        scorer.predictor.predict(texts)
        spent += time.perf_counter() - start
    return spent


def monthly(rows: list[Any]) -> list[dict[str, Any]]:
    """Per month: the model's negative share on every headline, the hand labels' on the
    labelled subset, and the model's on that same subset."""
    hand = load_labelled()
    pairs = zip(hand["id"], hand["label"], strict=True)
    hand_label = {f"guardian_headlines:{i}": lab for i, lab in pairs}
    out = []
    for month in sorted({r.time.strftime("%Y-%m") for r in rows}):
        mine = [r for r in rows if r.time.strftime("%Y-%m") == month]
        subset = [r for r in mine if r.id in hand_label]
        out.append(
            {
                "month": month,
                "headlines": len(mine),
                "model_negative_share": sum(r.label == "negative" for r in mine) / len(mine),
                "labelled": len(subset),
                "hand_negative_share": sum(hand_label[r.id] == "negative" for r in subset)
                / max(1, len(subset)),
                "model_negative_share_on_labelled": sum(r.label == "negative" for r in subset)
                / max(1, len(subset)),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="finance-sentiment", help="registered model ref")
    parser.add_argument("--backend", default=None, help="runtime backend (default: its own)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--scorer", choices=["model", "weak"], default="model")
    args = parser.parse_args()

    days = replay_days("guardian_headlines")
    scorer: Scorer | WeakScorer
    if args.scorer == "weak":
        scorer, name = WeakScorer(), "weak-labels"
    else:
        scorer = Scorer(args.model, backend=args.backend)
        name = scorer.model
        scorer.predictor.predict([h.text for h in days[0][1]])  # warm-up: first-call costs
        raw_before = raw_seconds(scorer, days)
    with tempfile.TemporaryDirectory() as folder:
        engine = make_engine(f"sqlite:///{Path(folder) / 'replay.db'}")
        monitor = FinanceMonitor(name, engine, SurgeConfig())
        result = run_stream(monitor, scorer, days, "replay:guardian_headlines")
        engine.dispose()
    n = result.headlines
    alerts = [
        {
            "fired": a.fired_at.date().isoformat(),
            "window": [a.details["window_start"][:10], a.details["window_end"][:10]],
            "negative_share": a.value,
            "baseline_mean": a.details["baseline_mean"],
            "threshold": a.threshold,
            "z": a.details.get("z"),
            "volume": a.details["volume"],
            "resolved": a.resolved_at.date().isoformat() if a.resolved_at else None,
            "top_headlines": [h["text"] for h in a.details["top_headlines"][:3]],
        }
        for a in result.timeline.alerts
    ]
    accuracy = entity_accuracy(load_gazetteer(), load_entity_labels())
    figures: dict[str, Any] = {
        "model": result.model,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "rule": SurgeConfig().model_dump(mode="json"),
        "headlines": n,
        "days": len(days),
        "labels": dict(Counter(r.label for r in result.rows)),
        "alerts": alerts,
        "alerts_in_january": sum(a["fired"].startswith("2020-01") for a in alerts),
        "first_alert_in_goal_window": bool(alerts)
        and "2020-02-24" <= alerts[0]["fired"] <= "2020-03-13",
        "monthly": monthly(result.rows),
        "monitor_headlines_per_s": n / result.seconds,
        "entities": accuracy.to_json(),
    }
    if isinstance(scorer, Scorer):
        raw_after = raw_seconds(scorer, days)
        raw = (raw_before + raw_after) / 2
        figures["backend"] = scorer.predictor.backend.name
        figures["raw_headlines_per_s"] = n / raw
        figures["raw_headlines_per_s_before_after"] = [n / raw_before, n / raw_after]
        figures["monitor_share_of_raw"] = raw / result.seconds
    text = json.dumps(figures, indent=1)
    print(text)
    if args.json is not None:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
