"""The recipe: validation errors a person can act on, file loading, dumping and the schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lmforge.errors import RecipeError
from lmforge.recipe import Recipe, dump_recipe, load_recipe, parse_recipe, recipe_json_schema

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _raw(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"name": "demo", "data": {"source": {"builtin": "rotten_tomatoes"}}}
    raw.update(overrides)
    return raw


def _error(raw: Any) -> str:
    with pytest.raises(RecipeError) as info:
        parse_recipe(raw)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_minimal_recipe_gets_defaults() -> None:
    recipe = parse_recipe(_raw())
    assert isinstance(recipe, Recipe)
    assert recipe.task == "classification"
    assert recipe.training.epochs == 3
    assert recipe.training.learning_rate == 5e-5
    assert recipe.data.split.seed == 42
    assert recipe.evaluation.baselines == ["majority", "tfidf_lr"]
    assert recipe.model_name == "demo"
    assert parse_recipe(_raw(registry={"name": "other"})).model_name == "other"


def test_unknown_top_level_key_suggests_nearest() -> None:
    message = _error(_raw(trainin={"epochs": 1}))
    assert "unknown key 'trainin'" in message
    assert "did you mean 'training'?" in message


def test_unknown_nested_key_names_dotted_path_and_suggests() -> None:
    message = _error(_raw(training={"epoch": 2}))
    assert "unknown key 'training.epoch'" in message
    assert "did you mean 'epochs'?" in message
    assert "batch_size" in message  # valid keys of that section are listed


def test_unknown_deeply_nested_key() -> None:
    message = _error(_raw(training={"early_stopping": {"patienc": 1}}))
    assert "training.early_stopping.patienc" in message
    assert "did you mean 'patience'?" in message
    message = _error(_raw(data={"source": {"builtin": "x", "text_col": "t"}}))
    assert "data.source.text_col" in message
    assert "did you mean 'text_column'?" in message


def test_unknown_key_without_close_match_says_remove() -> None:
    message = _error(_raw(adaptation={"lora": {"zzzzzz": 1}}))
    assert "adaptation.lora.zzzzzz" in message
    assert "remove it" in message
    assert "did you mean" not in message


def test_wrong_type_names_path_and_value() -> None:
    message = _error(_raw(training={"epochs": "lots"}))
    assert "training.epochs" in message
    assert "'lots'" in message
    message = _error(_raw(training={"batch_size": "big"}))
    assert "training.batch_size" in message
    assert "'big'" in message


def test_wrong_literal_value() -> None:
    message = _error(_raw(adaptation={"method": "qlora"}))
    assert "adaptation.method" in message
    assert "'qlora'" in message


def test_missing_required_key() -> None:
    message = _error({"name": "demo"})
    assert "required key 'data' is missing" in message
    message = _error({"data": {"source": {"builtin": "x"}}})
    assert "required key 'name' is missing" in message
    message = _error(_raw(data={}))
    assert "required key 'data.source' is missing" in message


@pytest.mark.parametrize(
    "source", [{}, {"builtin": "rotten_tomatoes", "path": "x.csv"}], ids=["neither", "both"]
)
def test_exactly_one_of_builtin_or_path(source: dict[str, Any]) -> None:
    message = _error(_raw(data={"source": source}))
    assert "data.source" in message
    assert "'builtin'" in message
    assert "'path'" in message


@pytest.mark.parametrize("name", ["Demo", "my model", "-demo", "", "a" * 65, "démo"])
def test_invalid_name(name: str) -> None:
    message = _error(_raw(name=name))
    assert "name" in message
    assert "lower-case" in message


def test_invalid_registry_name() -> None:
    message = _error(_raw(registry={"name": "Bad Name"}))
    assert "registry.name" in message
    assert "'Bad Name'" in message


def test_valid_names() -> None:
    for name in ["demo", "sentiment-en", "a.b_c-1", "0x", "a" * 64]:
        assert parse_recipe(_raw(name=name)).name == name


@pytest.mark.parametrize("lr", [-1e-4, 0])
def test_non_positive_learning_rate(lr: float) -> None:
    message = _error(_raw(training={"learning_rate": lr}))
    assert "training.learning_rate" in message
    assert "greater than 0" in message
    assert repr(lr) in message


def test_other_range_checks() -> None:
    assert "data.split.validation" in _error(
        _raw(data={"source": {"builtin": "x"}, "split": {"validation": 0.6}})
    )
    assert "data.source.limit" in _error(_raw(data={"source": {"builtin": "x", "limit": 0}}))
    assert "training.max_length" in _error(_raw(training={"max_length": 4}))


def test_non_mapping_is_rejected() -> None:
    for raw in (None, [1, 2], "name: x", 3):
        message = _error(raw)
        assert "must be a mapping" in message


def test_recipe_is_frozen() -> None:
    recipe = parse_recipe(_raw())
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError
        recipe.name = "other"  # type: ignore[misc]


# --- files -------------------------------------------------------------------------------------


def test_load_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(RecipeError) as info:
        load_recipe(missing)
    assert "not found" in str(info.value)
    assert str(missing) in str(info.value)


def test_load_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path)


def test_load_invalid_yaml_mentions_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: demo\ndata:\n  source: {builtin: x\ntraining: [\n", encoding="utf-8")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert "not valid YAML" in message
    assert "at line" in message
    assert "\n" not in message


def test_load_invalid_yaml_exact_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: demo\ndescription: ok\nfoo: : bar\n", encoding="utf-8")
    with pytest.raises(RecipeError, match="at line 3"):
        load_recipe(path)


def test_load_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"name: d\xe9mo\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(path)


@pytest.mark.parametrize(
    "text", ["- a\n- b\n", "just a string\n", ""], ids=["list", "str", "empty"]
)
def test_load_non_mapping(tmp_path: Path, text: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert "must be a mapping" in str(info.value)
    assert str(path) in str(info.value)


def test_load_reports_file_name_in_validation_errors(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_raw(training={"epoch": 1})), encoding="utf-8")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(path) in str(info.value)
    assert "did you mean 'epochs'?" in str(info.value)


def test_load_json_recipe(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text('{"name": "demo", "data": {"source": {"builtin": "x"}}}', encoding="utf-8")
    assert load_recipe(path).name == "demo"


def test_relative_data_path_resolves_against_recipe_folder(tmp_path: Path) -> None:
    folder = tmp_path / "recipes"
    folder.mkdir()
    path = folder / "r.yaml"
    path.write_text(yaml.safe_dump(_raw(data={"source": {"path": "data/rows.csv"}})), "utf-8")
    recipe = load_recipe(path)
    assert recipe.data.source.path == (folder / "data" / "rows.csv").resolve()
    assert recipe.data.source.path is not None and recipe.data.source.path.is_absolute()
    # the rest of the recipe is untouched
    assert recipe.data.cleaning == parse_recipe(_raw()).data.cleaning
    assert recipe.name == "demo"


def test_parent_relative_data_path(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b"
    folder.mkdir(parents=True)
    path = folder / "r.yaml"
    path.write_text(yaml.safe_dump(_raw(data={"source": {"path": "../rows.jsonl"}})), "utf-8")
    assert load_recipe(path).data.source.path == (tmp_path / "a" / "rows.jsonl").resolve()


def test_absolute_data_path_is_kept(tmp_path: Path) -> None:
    data_file = tmp_path / "elsewhere" / "rows.csv"
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_raw(data={"source": {"path": str(data_file)}})), "utf-8")
    assert load_recipe(path).data.source.path == data_file


def test_builtin_source_has_no_path(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_raw()), "utf-8")
    recipe = load_recipe(path)
    assert recipe.data.source.path is None
    assert recipe.data.source.builtin == "rotten_tomatoes"


# --- dump and schema ---------------------------------------------------------------------------


def test_dump_round_trips() -> None:
    recipe = parse_recipe(
        _raw(
            description="Ünïcode — 中文",
            adaptation={"method": "lora", "lora": {"r": 4, "target_modules": ["query"]}},
            training={"epochs": 1.5, "max_steps": 10, "learning_rate": 1e-4},
            evaluation={"baselines": ["majority"]},
            registry={"stage": "production"},
        )
    )
    text = dump_recipe(recipe)
    assert "中文" in text  # allow_unicode
    again = parse_recipe(yaml.safe_load(text))
    assert again == recipe


def test_dump_round_trips_with_path(tmp_path: Path) -> None:
    recipe = parse_recipe(_raw(data={"source": {"path": str(tmp_path / "x.csv"), "limit": 10}}))
    again = parse_recipe(yaml.safe_load(dump_recipe(recipe)))
    assert again == recipe
    assert again.data.source.path == tmp_path / "x.csv"


def test_dump_fills_every_default() -> None:
    dumped = yaml.safe_load(dump_recipe(parse_recipe(_raw())))
    assert dumped["training"]["epochs"] == 3
    assert dumped["training"]["early_stopping"]["patience"] == 2
    assert dumped["adaptation"]["lora"]["r"] == 16
    assert dumped["data"]["cleaning"]["max_chars"] == 5000
    assert list(dumped)[:3] == ["name", "description", "task"]  # field order, not sorted


def test_json_schema_covers_every_section() -> None:
    schema = recipe_json_schema()
    assert set(schema["required"]) == {"name", "data"}
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    for section in ("data", "model", "adaptation", "training", "evaluation", "registry"):
        assert section in props
    defs = schema["$defs"]
    for model in (
        "SourceConfig",
        "CleaningConfig",
        "SplitConfig",
        "DataConfig",
        "ModelConfig",
        "LoraConfig",
        "AdaptationConfig",
        "EarlyStoppingConfig",
        "TrainingConfig",
        "EvaluationConfig",
        "RegistryConfig",
    ):
        assert model in defs, model
        assert defs[model]["additionalProperties"] is False, model


def test_json_schema_descriptions_and_defaults() -> None:
    defs = recipe_json_schema()["$defs"]
    epochs = defs["TrainingConfig"]["properties"]["epochs"]
    assert epochs["default"] == 3
    assert epochs["description"]
    assert defs["TrainingConfig"]["properties"]["batch_size"]["default"] == 32
    assert defs["SplitConfig"]["properties"]["seed"]["default"] == 42
    assert defs["ModelConfig"]["properties"]["base"]["default"] == "minilm-l6"
    assert defs["SourceConfig"]["properties"]["format"]["enum"] == [
        "auto",
        "csv",
        "jsonl",
        "parquet",
    ]
    # every leaf field of every section is documented
    for model_name, model in defs.items():
        for field_name, field in model["properties"].items():
            if "$ref" in field:  # a nested section, documented in its own definition
                continue
            assert field.get("description"), f"{model_name}.{field_name} has no description"


def test_examples_load() -> None:
    found = [EXAMPLES / n for n in ("sentiment-en.yaml", "sentiment-zh.yaml")]
    found = [p for p in found if p.is_file()]
    assert found, "examples/sentiment-en.yaml is missing"
    for path in found:
        recipe = load_recipe(path)
        assert recipe.name == path.stem
        assert recipe.task == "classification"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_loads(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.name


def _assistant(**overrides: Any) -> dict[str, Any]:
    raw = _raw(task="assistant", data={"source": {"builtin": "debian_faq"}})
    return {**raw, **overrides}


def test_an_assistant_recipe_needs_only_its_faq() -> None:
    recipe = parse_recipe(_assistant(model={"base": "multilingual-e5-small"}))
    assert recipe.task == "assistant" and recipe.assistant.threshold is None
    assert recipe.assistant.top_k == 3
    assert parse_recipe(yaml.safe_load(dump_recipe(recipe))) == recipe  # round trip


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"training": {"epochs": 1}}, "training do not apply to task assistant"),
        ({"compress": {"enabled": True}}, "compress do not apply to task assistant"),
        ({"data": {"source": {"builtin": "rotten_tomatoes"}}}, "FAQ cannot be rotten_tomatoes"),
        ({"data": {"source": {"path": "faq.csv"}}}, "needs data.source.pair_column"),
        (
            {"data": {"source": {"builtin": "debian_faq", "limit": 10}}},
            "data.source.limit, data.cleaning and data.split do not apply",
        ),
        ({"assistant": {"threshold": 2}}, "assistant.threshold"),
    ],
)
def test_assistant_recipe_mistakes_are_named(overrides: dict[str, Any], needle: str) -> None:
    assert needle in _error(_assistant(**overrides))


def test_the_assistant_section_is_refused_for_other_tasks() -> None:
    assert "assistant do not apply to task classification" in _error(_raw(assistant={"top_k": 5}))


def test_a_key_the_task_does_not_read_is_refused() -> None:
    movielens = {"source": {"builtin": "movielens"}}
    message = _error(
        _raw(
            task="recommendation", data={**movielens, "split": {"seed": 3}}, feedback={"weight": 2}
        )
    )
    assert "key(s) data.split, feedback.weight do not apply to task recommendation" in message
    recipe = parse_recipe(_raw(task="recommendation", data=movielens, feedback={"seed": 7}))
    assert recipe.feedback.seed == 7  # the keys a recommender reads are accepted
