"""Retraining on feedback behind the promotion gate, and the loop around it, on a tiny model.

The feedback is a new "domain" the production model never saw: texts about zorp gadgets are
positive, about blick gadgets negative. A challenger trained on it is promoted; one trained on
the same texts with shuffled labels is refused by the gate (judged on the true labels of the
held-out slice); bad input is refused in one line with the registry unchanged; the loop retrains
on each trigger and outlives a failing round."""

from __future__ import annotations

import json
import random
import shutil
import threading
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import numpy as np
import pytest

from conftest import lmforge, register_copy, toy_recipe
from lmforge.compress.stage import compress_version
from lmforge.data.text import leakage_key
from lmforge.errors import DataError, LmforgeError, RecipeError
from lmforge.models.meta import ClassificationMeta, read_model_meta
from lmforge.monitor import FeedbackEvent, record_feedback
from lmforge.recipe import Recipe, dump_recipe, load_recipe, parse_recipe
from lmforge.recipe.schema import CompressConfig, FeedbackConfig, GateConfig
from lmforge.registry import Registry
from lmforge.settings import Settings
from lmforge.tasks import loop as loop_module
from lmforge.tasks import run_recipe
from lmforge.tasks.gate import judge, mcnemar_p
from lmforge.tasks.loop import RoundResult, parse_interval, run_loop, run_round
from lmforge.tasks.retrain import retrain
from lmforge.tasks.retrain_data import placement
from lmforge.tasks.retrain_record import RetrainResult

GATE = {"min_eval_rows": 10}


@pytest.fixture(scope="module")
def champion_dir(
    tmp_path_factory: pytest.TempPathFactory, tiny_base: Path
) -> Path:  # trained once for the module; each test registers a copy in its own home
    import pandas as pd
    import torch

    from conftest import NEGATIVE, POSITIVE

    folder = tmp_path_factory.mktemp("champion")
    rows = []
    for i in range(5):
        rows += [{"review": f"{t} ({i})", "sentiment": "positive"} for t in POSITIVE]
        rows += [{"review": f"{t} [{i}]", "sentiment": "negative"} for t in NEGATIVE]
    csv = folder / "reviews.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    raw = toy_recipe(csv, tiny_base, epochs=4)
    raw["registry"] = {"allow_below_baseline": True}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_recipe(
            parse_recipe(raw), settings=Settings(home=folder / "home"), progress=False
        )
    finally:
        torch.set_num_threads(threads)
    assert result.version is not None
    return result.version.path


@pytest.fixture
def settings(tmp_path: Path, champion_dir: Path, one_thread: None) -> Settings:
    settings = Settings(home=tmp_path / "home", database_url=None)
    register_copy(settings, champion_dir, "toy", stage="production")
    return settings


def fast_recipe(settings: Settings, **feedback: object) -> Recipe:
    """The production version's recipe, with a short training and the test gate."""
    recipe = load_recipe(Registry(settings).get("toy").path / "recipe.yaml")
    training = recipe.training.model_copy(
        update={"max_steps": 14, "batch_size": 16, "learning_rate": 3e-3}
    )
    config = FeedbackConfig.model_validate({"gate": GATE, **feedback})
    return recipe.model_copy(update={"training": training, "feedback": config})


def domain(n: int) -> list[tuple[str, str]]:
    rows = []
    for i in range(n):
        rows += [(f"zorp gadget model {i}", "positive"), (f"blick gadget model {i}", "negative")]
    return rows


def send(settings: Settings, rows: list[tuple[str, str]]) -> None:
    for text, label in rows:
        record_feedback(FeedbackEvent(text=text, label=label, model="toy"), settings)


def state(settings: Settings) -> list[tuple[str, str]]:
    return [(v.ref, v.stage) for v in Registry(settings).list()]


def test_a_challenger_that_learned_the_feedback_is_promoted(settings: Settings) -> None:
    send(settings, domain(60))
    result = retrain("toy", recipe=fast_recipe(settings), settings=settings, progress=False)
    assert result.promoted and result.decision.promote, result.decision.reason
    assert result.decision.feedback_gain >= 1 and result.decision.p_value <= 0.05
    assert result.decision.test_drop <= 1
    assert state(settings) == [("toy:v1", "archived"), ("toy:v2", "production")]
    record = Registry(settings).get("toy:v2").metrics["retrain"]
    assert record["decision"] == "promoted" and record["champion"] == "toy:v1"
    assert (
        record["scores"]["challenger"]["feedback"]["accuracy"]
        > (record["scores"]["champion"]["feedback"]["accuracy"])
    )
    assert record["feedback"]["usable"] == 120
    # weight: auto trained one challenger per weight of the grid and kept one, chosen on the
    # validation slices; the other's run folder is gone
    weight = record["weight"]
    assert weight["mode"] == "auto" and weight["chosen"] in (1.0, 4.0)
    assert [c["weight"] for c in weight["candidates"]] == [1.0, 4.0]
    assert weight["candidates"][0]["scores"]["feedback_validation"]["rows"] > 0
    assert len(list(settings.runs_dir.iterdir())) == 1
    assert record["run_dir"] == str(next(settings.runs_dir.iterdir()))
    assert record["feedback"]["holdout_rows"] == result.decision.holdout_rows >= 10
    assert record["wall_seconds"] > 0
    shown = lmforge("models", "show", "toy:v2", home=settings.home)
    assert shown.returncode == 0, shown.stderr
    assert "retraining on feedback" in shown.stdout and "toy:v2 promoted" in shown.stdout
    # the next round starts from the retrained version and rebuilds the same original split
    assert load_recipe(Registry(settings).get("toy:v2").path / "recipe.yaml").feedback.gate == (
        GateConfig.model_validate(GATE)
    )


def test_a_challenger_trained_on_shuffled_feedback_labels_is_refused(settings: Settings) -> None:
    """The labels of the rows it trains on are shuffled; the held-out rows keep their true
    labels, as the benchmark's held-out reviews do: the challenger learned nothing to gain."""
    recipe = fast_recipe(settings)
    rows = domain(60)
    train_rows = [
        i
        for i, (t, _) in enumerate(rows)
        if placement(leakage_key(t), recipe.feedback) != "holdout"
    ]
    labels = [rows[i][1] for i in train_rows]
    random.Random(7).shuffle(labels)
    for i, label in zip(train_rows, labels, strict=True):
        rows[i] = (rows[i][0], label)
    send(settings, rows)
    result = retrain("toy", recipe=recipe, settings=settings, progress=False)
    assert not result.promoted and not result.decision.promote
    assert "feedback slice" in result.decision.reason
    assert state(settings) == [("toy:v1", "production"), ("toy:v2", "candidate")]
    record = Registry(settings).get("toy:v2").metrics["retrain"]
    assert record["decision"] == "candidate" and record["gate"]["reason"] == result.decision.reason


def test_the_gate_rules() -> None:
    gate = GateConfig(min_gain=1, max_test_drop=1, min_eval_rows=30, max_p_value=0.05)

    def scores(test: float, feedback: float) -> dict[str, dict[str, float]]:
        return {"test": {"accuracy": test}, "feedback": {"accuracy": feedback}}

    champion = scores(0.90, 0.50)
    assert judge(champion, scores(0.895, 0.70), gate, 100, 0.001).promote
    few = judge(champion, scores(0.90, 0.70), gate, 20, 0.001)
    assert not few.promote and "fewer than feedback.gate.min_eval_rows 30" in few.reason
    small = judge(champion, scores(0.90, 0.505), gate, 100, 0.001)
    assert not small.promote and "under +1" in small.reason
    chance = judge(champion, scores(0.90, 0.70), gate, 100, 0.2)
    assert not chance.promote and "not significant" in chance.reason
    worse = judge(champion, scores(0.88, 0.70), gate, 100, 0.001)
    assert not worse.promote and "fell 2.00 points" in worse.reason
    right = np.array([True] * 10 + [False] * 10)
    assert mcnemar_p(right, np.ones(20, dtype=bool)) < 0.01
    assert mcnemar_p(right, right) == 1.0
    assert mcnemar_p(np.ones(20, dtype=bool), right) == 1.0  # the challenger only lost rows


def test_bad_input_is_refused_in_one_line_and_nothing_is_registered(
    settings: Settings, tmp_path: Path
) -> None:
    registry = Registry(settings)
    # the version's recipe points at a copy of the data, which this test damages
    production = registry.get("toy").path
    recipe = load_recipe(production / "recipe.yaml")
    assert recipe.data.source.path is not None
    csv = shutil.copy(recipe.data.source.path, tmp_path / "reviews.csv")
    source = recipe.data.source.model_copy(update={"path": Path(csv)})
    data = recipe.data.model_copy(update={"source": source})
    (production / "recipe.yaml").write_text(dump_recipe(recipe.model_copy(update={"data": data})))
    before = state(settings)
    with pytest.raises(DataError, match="no labelled feedback for 'toy'") as none:
        retrain("toy", settings=settings, progress=False)
    # feedback whose labels the production version lacks (an older version had a third one)
    staging = registry.new_staging_dir()
    shutil.copytree(registry.get("toy").path, staging, dirs_exist_ok=True)
    registry.register(
        "toy",
        staging,
        task="classification",
        base_model="tiny",
        labels=["negative", "neutral", "positive"],
        metrics={},
        baselines={},
    )
    for i in range(3):
        record_feedback(FeedbackEvent(text=f"meh {i}", label="neutral", model="toy:v2"), settings)
    with pytest.raises(DataError, match=r"only labels the model lacks \(neutral\)") as unknown:
        retrain("toy", settings=settings, progress=False)
    # not a classifier
    staging = registry.new_staging_dir()
    (staging / "config.json").write_text("{}")
    registry.register(
        "enc",
        staging,
        task="similarity",
        base_model="tiny",
        labels=[],
        metrics={},
        baselines={},
        stage="production",
    )
    before = [*before, ("toy:v2", "candidate"), ("enc:v1", "production")]
    assert state(settings) == sorted(before)
    with pytest.raises(LmforgeError, match="enc:v1 is a similarity model") as other:
        retrain("enc", settings=settings, progress=False)
    # the original data is gone, or changed
    send(settings, domain(10))
    csv = Path(csv)
    kept = csv.read_text()
    csv.write_text(kept.splitlines()[0] + "\n" + "\n".join(kept.splitlines()[1:-8]) + "\n")
    with pytest.raises(DataError, match="changed since it was trained") as changed:
        retrain("toy", settings=settings, progress=False)
    csv.unlink()
    try:
        with pytest.raises(DataError, match="cannot be rebuilt") as missing:
            retrain("toy", settings=settings, progress=False)
    finally:
        csv.write_text(kept)
    # a pinned version, and a recipe with another data section
    with pytest.raises(LmforgeError, match="names a version") as pinned:
        retrain("toy:v1", settings=settings, progress=False)
    other_data = fast_recipe(settings).model_copy(
        update={"data": parse_recipe(toy_recipe(tmp_path / "x.csv", Path("."))).data}
    )
    with pytest.raises(RecipeError, match="data section is not the one") as moved:
        retrain("toy", recipe=other_data, settings=settings, progress=False)
    for error in (none, unknown, other, changed, missing, pinned, moved):
        assert "\n" not in error.value.message
    assert state(settings) == sorted(before)
    assert not (settings.runs_dir).exists() or not any(settings.runs_dir.iterdir())


def test_a_round_retrains_on_enough_new_feedback_and_then_waits_for_more(
    settings: Settings,
) -> None:
    recipe = fast_recipe(settings)
    send(settings, domain(5))
    quiet = run_round("toy", min_new_feedback=50, recipe=recipe, settings=settings, progress=False)
    assert quiet.triggers == [] and quiet.retrain is None and quiet.new_feedback == 10
    assert quiet.drifted is None
    send(settings, domain(60)[10:])
    fired = run_round("toy", min_new_feedback=50, recipe=recipe, settings=settings, progress=False)
    assert fired.triggers == ["feedback"] and fired.retrain is not None
    assert fired.retrain.promoted, fired.retrain.decision.reason
    assert fired.to_json()["retrain"]["challenger"] == "toy:v2"
    again = run_round("toy", min_new_feedback=1, recipe=recipe, settings=settings, progress=False)
    assert again.new_feedback == 0 and again.retrain is None  # nothing arrived since


def test_a_round_retrains_when_drift_fired(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trigger alone (retraining itself is the test above): drift fires, feedback is short."""
    send(settings, domain(3))
    calls: list[tuple[str, datetime, datetime]] = []
    retrained: list[str] = []

    def fake_retrain(model: str, **_: object) -> RetrainResult:
        retrained.append(model)
        return cast(RetrainResult, SimpleNamespace(promoted=True))

    monkeypatch.setattr(loop_module, "retrain", fake_retrain)

    def drifted(model: str, start: datetime, end: datetime) -> bool:
        calls.append((model, start, end))
        return True

    result = run_round(
        "toy",
        min_new_feedback=10_000,
        drift_check=drifted,
        recipe=fast_recipe(settings),
        settings=settings,
        progress=False,
    )
    assert result.triggers == ["drift"] and result.drifted is True and result.new_feedback == 6
    assert retrained == ["toy"] and result.promoted
    ((model, start, end),) = calls
    assert model == "toy" and start == Registry(settings).get("toy:v1").created_at
    assert start < end


def test_the_loop_outlives_a_failing_round_and_stops_when_asked(settings: Settings) -> None:
    seen: list[RoundResult] = []
    stop = threading.Event()
    attempts = iter([RuntimeError("the drift detector broke"), False, False])

    def drift(model: str, start: datetime, end: datetime) -> bool:
        outcome = next(attempts)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def on_round(result: RoundResult) -> None:
        seen.append(result)
        if len(seen) == 2:
            stop.set()

    rounds = run_loop(
        "toy",
        every=0.01,
        min_new_feedback=5,
        drift_check=drift,
        settings=settings,
        progress=False,
        on_round=on_round,
        stop=stop,
    )
    assert rounds == 2 and len(seen) == 2
    assert seen[0].error is not None and "the drift detector broke" in seen[0].error
    assert seen[1].error is None and seen[1].drifted is False and seen[1].retrain is None
    assert json.loads(json.dumps(seen[0].to_json()))["error"] == seen[0].error


def test_intervals() -> None:
    assert parse_interval("1h") == 3600 and parse_interval("1h30m") == 5400
    assert parse_interval("90s") == 90 and parse_interval("2d") == 172800
    for bad in ("", "5x", "h", "0m", "1h 5"):
        with pytest.raises(LmforgeError, match="is not an interval"):
            parse_interval(bad)


def test_cli_errors_are_one_line(settings: Settings, tmp_path: Path) -> None:
    recipe = load_recipe(Registry(settings).get("toy").path / "recipe.yaml")
    heavy = tmp_path / "heavy.yaml"
    heavy.write_text(dump_recipe(recipe).replace("  weight: auto\n", "  weight: 0.5\n"))
    assert "weight: 0.5" in heavy.read_text()
    cases = [
        (("retrain", "toy", "--recipe", str(heavy)), "feedback.weight"),
        (("retrain", "nosuch"), "no registered model named 'nosuch'"),
        (("loop", "toy", "--once", "--every", "1h"), "give one of --once or --every"),
        (("loop", "toy", "--every", "5x"), "'5x' is not an interval"),
        (("retrain", "toy", "--max-test-drop", "-1"), "feedback.gate.max_test_drop"),
    ]
    for args, message in cases:
        done = lmforge(*args, home=settings.home)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    quiet = lmforge("loop", "toy", "--once", "--json", home=settings.home)
    assert quiet.returncode == 0, quiet.stderr
    assert json.loads(quiet.stdout)["retrain"] is None


def test_a_compressed_production_version_is_judged_against_a_challenger_compressed_alike(
    settings: Settings,
) -> None:
    fast = CompressConfig(
        structures=["original"], formats=["torch-int8"], bench_seconds=0.1, latency_runs=3
    )
    compressed = compress_version(
        "toy:v1",
        fast.model_copy(update={"stage": "production"}),
        settings=settings,
        progress=False,
        variant_name="original/torch-int8",
    )
    assert compressed.version is not None and compressed.version.ref == "toy:v2"
    send(settings, domain(60))
    result = retrain("toy", recipe=fast_recipe(settings), settings=settings, progress=False)
    assert result.champion.ref == "toy:v2" and result.trained.ref == "toy:v3"
    assert result.challenger.ref == "toy:v4" and result.challenger.parent == "toy:v3"
    meta = read_model_meta(result.challenger.path)
    assert isinstance(meta, ClassificationMeta) and meta.compression is not None
    assert meta.compression.variant == "original/torch-int8" and meta.backend == "torch-int8"
    for ref in ("toy:v3", "toy:v4"):
        record = Registry(settings).get(ref).metrics["retrain"]
        assert record["champion"] == "toy:v2" and record["gate"] == result.decision.to_json()
    assert result.promoted, result.decision.reason
    assert Registry(settings).get("toy").ref == "toy:v4"
