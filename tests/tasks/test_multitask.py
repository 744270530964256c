"""task: multitask on a tiny model: one shared encoder learns two sub-tasks, each head answers
for its own sub-task, the version's lmforge.json names them, and recipe mistakes fail in one
line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

import lmforge
from conftest import lmforge as cli
from conftest import toy_recipe
from lmforge.errors import RecipeError
from lmforge.models.meta import MultitaskMeta, read_model_meta
from lmforge.recipe import load_recipe
from lmforge.runtime.multitask import MultitaskPredictor, UnknownTaskError
from lmforge.settings import Settings
from lmforge.tasks import TASKS
from lmforge.tasks.multitask import MultitaskOutput

TOPICS = {
    "sport": ["the team won the cup final", "a late goal in the derby", "the striker scored twice"],
    "food": ["a rich tomato soup recipe", "bake the bread for an hour", "fresh pasta with basil"],
    "weather": ["heavy rain and strong wind", "sunny skies all weekend", "snow falls in the north"],
}


def topics_csv(folder: Path) -> Path:
    """90 rows of three easy topics (a second sub-task with other labels)."""
    rows = [
        {"sentence": f"{t} ({i})", "topic": topic}
        for topic, texts in TOPICS.items()
        for t in texts
        for i in range(10)
    ]
    path = folder / "topics.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def multitask_recipe(folder: Path, csv: Path, base: Path, **section: Any) -> Path:
    recipe: dict[str, Any] = toy_recipe(csv, base, epochs=6, learning_rate=5e-3)
    recipe.update(name="tiny-multi", task="multitask")
    recipe["training"]["early_stopping"] = {"enabled": False}
    recipe["multitask"] = {
        "name": "sentiment",
        "tasks": [
            {
                "name": "topic",
                "path": "topics.csv",
                "text_column": "sentence",
                "label_column": "topic",
            }
        ],
        **section,
    }
    topics_csv(folder)
    path = folder / "multitask.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> Any:
    """One multi-task run, registered in a home of its own."""
    folder = tmp_path_factory.mktemp("multitask")
    from conftest import NEGATIVE, POSITIVE

    rows = []
    for i in range(5):
        rows += [{"review": f"{t} ({i})", "sentiment": "positive"} for t in POSITIVE]
        rows += [{"review": f"{t} [{i}]", "sentiment": "negative"} for t in NEGATIVE]
    csv = folder / "reviews.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LMFORGE_HOME", str(folder / "home"))
        settings = Settings()
        result = lmforge.run_recipe(
            load_recipe(multitask_recipe(folder, csv, tiny_base)), settings=settings
        )
    return result


def test_multitask_learns_both_subtasks_and_registers_one_version(trained: Any) -> None:
    output = trained.output
    assert isinstance(output, MultitaskOutput)
    assert set(trained.metrics["tasks"]) == {"sentiment", "topic"}
    # each head beats its own majority class on its own test split
    for name, m in trained.metrics["tasks"].items():
        assert m["accuracy"] > trained.baselines[f"{name}/majority"]["accuracy"], name
    meta = read_model_meta(trained.version.path)
    assert isinstance(meta, MultitaskMeta)
    assert [(h.name, h.labels) for h in meta.tasks] == [
        ("sentiment", ["negative", "positive"]),
        ("topic", ["food", "sport", "weather"]),
    ]
    assert trained.version.task == "multitask"


def test_heads_route_by_task_from_one_encoder_pass(trained: Any) -> None:
    predictor = MultitaskPredictor(trained.version.path)
    texts = ["a wonderful, moving film", "heavy rain and strong wind"]
    both = predictor.predict_tasks(texts)
    assert [set(p) for p in both] == [{"sentiment", "topic"}] * 2
    assert set(both[0]["sentiment"].scores) == {"negative", "positive"}
    assert set(both[1]["topic"].scores) == {"food", "sport", "weather"}
    one = predictor.predict(texts, "topic")
    assert [p.scores for p in one] == [p["topic"].scores for p in both]
    with pytest.raises(
        UnknownTaskError, match=r"no sub-task 'colour'.*use one of: sentiment, topic"
    ):
        predictor.predict(texts, "colour")


def test_compress_is_refused_with_the_reason(
    tmp_path: Path, toy_csv: Path, tiny_base: Path
) -> None:
    path = multitask_recipe(tmp_path, toy_csv, tiny_base, sampling="round_robin")
    data = yaml.safe_load(path.read_text())
    data["compress"] = {"enabled": True}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RecipeError, match="served by torch only"):
        TASKS["multitask"].check(load_recipe(path))


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"multitask": {"name": "sentiment"}}, "task multitask needs multitask.tasks"),
        (
            {"multitask": {"name": "topic", "tasks": [{"name": "topic", "builtin": "x"}]}},
            "sub-task name(s) topic used twice",
        ),
        ({"compress": {"enabled": True}}, "served by torch only"),
        ({"model": {"base": "smollm2-135m-instruct"}}, "multitask needs an encoder"),
    ],
)
def test_the_cli_answers_recipe_mistakes_in_one_line(
    home: Settings,
    tmp_path: Path,
    toy_csv: Path,
    tiny_base: Path,
    changes: dict[str, Any],
    needle: str,
) -> None:
    path = multitask_recipe(tmp_path, toy_csv, tiny_base)
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data))
    result = cli("run", str(path))
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr
